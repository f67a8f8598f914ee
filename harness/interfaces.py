"""The small typed interfaces every plugin implements.

An attack or defense object holds only hyper-parameters (foolbox style); the model, inputs,
threat model and random generator arrive at call time. The runner, not the plugin, decides
success: it checks the output against the threat model and predicts on it itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from harness.specs import param
from harness.threat import ThreatModel


@dataclass(frozen=True)
class Passes:
    """Cost per example, in forward and backward passes of the model (for --dry-run and estimates)."""

    forward: float
    backward: float

    def __add__(self, other: Passes) -> Passes:
        return Passes(self.forward + other.forward, self.backward + other.backward)

    def __mul__(self, k: float) -> Passes:
        return Passes(self.forward * k, self.backward * k)


@dataclass(frozen=True)
class AttackOutput:
    """An attack may return this instead of a bare tensor, to report its per-example query count."""

    x_adv: Tensor
    queries: Tensor | None = None


@dataclass(frozen=True)
class Attack:
    """Base of attack plugins. Subclasses are frozen dataclasses of hyper-parameters."""

    target: Literal["model", "defended"] = param(
        "model", "attack the bare model (transfer, the paper's protocol) or the model wrapped in each defense (adaptive)")
    # what the attack may use of the model; reports warn when a black-box attack beats every white-box one
    access: ClassVar[Literal["white-box", "black-box", "none"]] = "white-box"

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                 generator: torch.Generator) -> Tensor | AttackOutput:
        raise NotImplementedError

    def passes(self, threat: ThreatModel) -> Passes:
        """Forward/backward passes per example; override for an accurate --dry-run."""
        return Passes(1, 0)

    def defense_in_attack(self, defense: "Defense") -> "Defense":
        """The defense as an adaptive attack runs it internally (e.g. with fewer steps, for cost)."""
        return defense

    def scored_predictions(self, randomized_defense: bool) -> int:
        """How often, per example, an adaptive attack asks for the runner-style (voted) prediction."""
        return 0


@dataclass(frozen=True)
class Defense:
    """Base of defense plugins: a transformation of the input applied before the model predicts."""

    randomized: ClassVar[bool] = False

    def purify(self, model: nn.Module, x: Tensor, *, generator: torch.Generator,
               differentiable: bool = False) -> Tensor:
        """The input the model will see. ``differentiable``: keep it in x's autograd graph (full-gradient attacks)."""
        raise NotImplementedError

    def logits(self, model: nn.Module, x: Tensor, *, generator: torch.Generator,
               differentiable: bool = False) -> Tensor:
        """The defended prediction. Override only where it is not ``model(purify(x))``."""
        return model(self.purify(model, x, generator=generator, differentiable=differentiable))

    def draws(self, votes: int) -> int:
        """Predictions per example when scored: a majority over ``votes`` draws if random, else one."""
        return votes if self.randomized else 1

    def passes(self) -> Passes:
        """Forward/backward passes per example, the final prediction excluded."""
        return Passes(0, 0)


@dataclass(frozen=True)
class LoadedModel:
    """A classifier in eval mode that takes images in [0,1] and normalises them itself."""

    module: nn.Module
    dataset: str          # the data domain it was trained for, e.g. "cifar10" (matches LabelledData.domain)
    num_classes: int


@dataclass(frozen=True)
class LabelledData:
    """The first n test examples of a dataset, in a fixed order."""

    x: Tensor             # (n, C, H, W), float32 in [0,1]
    y: Tensor             # (n,), int64
    classes: tuple[str, ...]
    domain: str           # what models must have been trained for, e.g. "cifar10" for the JPEG copy too
    display_name: str     # how reports name it, e.g. "CIFAR-10 (JPEG)"

    @property
    def num_classes(self) -> int:
        return len(self.classes)
