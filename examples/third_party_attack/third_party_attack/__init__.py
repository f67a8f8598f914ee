"""An attack and a defense as a third party ships them: frozen dataclasses of hyper-parameters, each naming
itself in its class statement, found through the package's entry point exactly as the built-ins are. Everything
comes from harness.api, the one module a plugin imports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api import Attack, Defense, Passes, PluginError, ThreatModel, param


@dataclass(frozen=True)
class FGSM(Attack, name="fgsm-example"):
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


@dataclass(frozen=True)
class MedianFilter(Defense, name="median-example"):
    """Median filtering (Xu et al., NDSS 2018, "feature squeezing"): each pixel of each channel becomes the median
    of the size × size window around it, the border reflected. Deterministic, so no vote; differentiable almost
    everywhere (the median's gradient goes to the pixel it selects), so adaptive attacks can run through it."""

    display_name: ClassVar[str] = "Median"

    size: int = param(3, "side of the square window (odd)", minimum=1)

    def check(self) -> None:
        super().check()
        if self.size % 2 == 0:
            raise PluginError(f"median-example needs an odd window, centred on its pixel (got size = {self.size}); "
                              f"use {self.size - 1} or {self.size + 1}")

    def purify(self, model: nn.Module, x: Tensor, *, generator: torch.Generator,
               differentiable: bool = False) -> Tensor:
        half = self.size // 2
        padded = F.pad(x, (half, half, half, half), mode="reflect") if half else x
        windows = padded.unfold(2, self.size, 1).unfold(3, self.size, 1)   # (N, C, H, W, size, size)
        filtered = windows.reshape(*x.shape, -1).median(dim=-1).values
        return filtered if differentiable else filtered.detach()
