"""A model wrapped in a defense, as an nn.Module, so that any attack can target "model + defense"."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from harness.interfaces import Defense


class Defended(nn.Module):
    """forward(x) = the defense's prediction on x.

    gradient = "bpda": the defense runs without gradient and the backward pass is the identity, so the
    gradient is that of the model at the defended point (Athalye et al.'s BPDA, as Croce et al. use it).
    gradient = "full": differentiate through the defense itself (feasible for few Hedge steps).
    Randomness is drawn from ``generator``; each forward call is one fresh draw (EOT averages them).
    """

    def __init__(self, model: nn.Module, defense: Defense, generator: torch.Generator,
                 gradient: Literal["bpda", "full"] = "bpda"):
        super().__init__()
        self.model, self.defense, self.generator, self.gradient = model, defense, generator, gradient

    def forward(self, x: Tensor) -> Tensor:
        if self.gradient == "full":
            return self.defense.logits(self.model, x, generator=self.generator, differentiable=True)
        purified = self.defense.purify(self.model, x.detach(), generator=self.generator).detach()
        return self.model(x + (purified - x).detach())  # value at the defended point, identity backward
