"""FGSM as a third-party harness plugin: a frozen dataclass of hyper-parameters and one hook."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.hookspecs import hookimpl
from harness.interfaces import Attack, Passes
from harness.specs import Kind, PluginSpec, param, spec_from_dataclass
from harness.threat import ThreatModel


@dataclass(frozen=True)
class FGSM(Attack):
    """FGSM: one signed-gradient step of size eps·scale on the cross-entropy (Goodfellow et al., 2015)."""

    display_name: ClassVar[str] = "FGSM"   # how tables name it; role and access: an ordinary white-box attack

    scale: float = param(1.0, "step length as a multiple of eps")

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                 generator: torch.Generator) -> Tensor:
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
        return threat.project(x.detach() + self.scale * threat.eps * grad.sign(), x.detach())

    def passes(self, threat: ThreatModel) -> Passes:
        return Passes(1, 1)


@hookimpl
def harness_attacks() -> list[PluginSpec]:
    return [spec_from_dataclass(FGSM, name="fgsm-example", kind=Kind.ATTACK)]
