"""The "no attack" entry: clean accuracy is evaluated like every other attack."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from harness.api import Access, Attack, Passes, Role, ThreatModel


@dataclass(frozen=True)
class Clean(Attack, name="clean"):
    """No attack: returns the input unchanged (the Nat-Acc. column)."""

    display_name: ClassVar[str] = "Nat-Acc."
    role: ClassVar[Role] = Role.BASELINE
    access: ClassVar[Access] = Access.NONE

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                 generator: torch.Generator) -> Tensor:
        return x.clone()

    def passes(self, threat: ThreatModel) -> Passes:
        return Passes(0, 0)
