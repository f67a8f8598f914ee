"""The two reference settings of the paper: no defense, and uniform noise in the ε_d ball."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor, nn

from harness.api import Defense, Norm, Role, ThreatModel, param


@dataclass(frozen=True)
class NoDefense(Defense, name="none"):
    """No defense: the model predicts on the input as given."""

    display_name: ClassVar[str] = "−"
    role: ClassVar[Role] = Role.REFERENCE

    def purify(self, model: nn.Module, x: Tensor, *, generator: torch.Generator,
               differentiable: bool = False) -> Tensor:
        return x


@dataclass(frozen=True)
class RandomNoise(Defense, name="random"):
    """Uniform noise U(−ε_d, ε_d) added to the input, then clipped to [0,1].

    Presets: ``paper`` takes the released code's noise, ε_d = 0.031 and not clipped to [0,1]."""

    display_name: ClassVar[str] = "Random"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {"paper": {"eps_d": 0.031, "clip": False}}

    randomized: ClassVar[bool] = True
    eps_d: float = param(8 / 255, "half-width of the uniform noise", minimum=0, maximum=1)
    clip: bool = param(True, "clip the noisy input to [0,1] (the released code does not)")

    def purify(self, model: nn.Module, x: Tensor, *, generator: torch.Generator,
               differentiable: bool = False) -> Tensor:
        return ThreatModel(Norm.LINF, self.eps_d).random_start(x, generator, clip=self.clip)
