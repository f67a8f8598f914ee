"""The adaptive evaluation of test-time defenses (Croce et al., ICML 2022)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from harness.defended import Defended
from harness.interfaces import Attack, Defense, Passes
from harness.specs import param
from harness.threat import ThreatModel
from plugins.attacks.autoattack_bridge import APGDTargeted


@dataclass(frozen=True)
class Adaptive(Attack):
    r"""APGD on the targeted DLR loss through model + defense: BPDA (or the full gradient) and EOT.

    Paper: Croce et al., "Evaluating the Adversarial Robustness of Adaptive Test-time Defenses",
    ICML 2022. Norm: L∞ and L2. Library: pyautoattack's ``APGDAttack_targeted``.

    It attacks the defended model end to end (``target = "defended"``): the runner hands it the
    model wrapped in each defense of the grid, one unit per defense.

    Arguments:
        n_iter (int): APGD iterations per target class. Default: 50.
        n_target_classes (int): the 2nd … (k+1)-th most likely classes. Default: 5.
        n_restarts (int): Default: 1.
        eot (int): gradients averaged over this many draws of the defense's randomness. Default: 1.
        gradient ("bpda" | "full"): BPDA runs the defense without gradient and takes f's gradient at
            the defended point (identity backward); "full" differentiates through the unrolled defense.
            Default: "bpda".
        defense_steps_in_attack (int | None): run the defense with fewer steps inside the attack, for
            cost; the final evaluation always uses the grid's defense. Default: None (the same).

    Example grid entry::

        [[attacks]]
        plugin = "adaptive"
        eot = 4
    """

    target: Literal["model", "defended"] = param("defended", "attack model + defense end to end")
    n_iter: int = param(50, "APGD iterations per target class")
    n_target_classes: int = param(5, "target classes: the 2nd to (k+1)-th most likely")
    n_restarts: int = param(1, "restarts")
    eot: int = param(1, "gradients averaged over draws of the defense's randomness")
    gradient: Literal["bpda", "full"] = param("bpda", "BPDA (identity backward) or the full unrolled gradient")
    defense_steps_in_attack: int | None = param(None, "defense steps inside the attack (fewer, for cost)")

    def defense_in_attack(self, defense: Defense) -> Defense:
        if self.defense_steps_in_attack is not None and hasattr(defense, "steps"):
            return dataclasses.replace(defense, steps=self.defense_steps_in_attack)
        return defense

    def attacked_model(self, model: nn.Module) -> nn.Module:
        if not isinstance(model, Defended):
            return model
        return Defended(model.model, self.defense_in_attack(model.defense), model.generator, gradient=self.gradient)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                 generator: torch.Generator) -> Tensor:
        attacked = self.attacked_model(model)
        randomized = isinstance(attacked, Defended) and attacked.defense.randomized
        apgd = APGDTargeted(n_iter=self.n_iter, n_target_classes=self.n_target_classes, n_restarts=self.n_restarts,
                            eot_iter=self.eot if randomized else 1)
        return apgd(attacked, x, y, threat, generator=generator)

    def passes(self, threat: ThreatModel) -> Passes:
        k = self.n_iter * self.n_target_classes * self.n_restarts * self.eot
        return Passes(k + 1, k)
