"""More than one way through a test-time defense: BPDA-PGD, and the suite that runs every adaptive attack at once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from harness.api import Attack, AttackSuite, DefendedModel, Defense, Passes, ThreatModel, param
from harness_plugins.attacks.adaptive import Adaptive, double_in_turn
from harness_plugins.attacks.hedge_attacks import HedgeAware, ce_gradient
from harness_plugins.attacks.rays import RayS


@dataclass(frozen=True)
class BPDAPGD(Attack, name="bpda-pgd"):
    r"""PGD on the cross-entropy through a defense: BPDA gradients, averaged over EOT draws of the defense.

    Paper: Athalye et al., "Obfuscated Gradients Give a False Sense of Security", ICML 2018 (BPDA, EOT),
    as Croce et al. (ICML 2022) apply it to test-time defenses. Norm: L∞ and L2.

    Each step draws the defense ``eot`` times (its in-attack copy, cut to ``defense_steps_in_attack``
    steps), takes the cross-entropy gradient of the model at each defended point, averages them, and
    applies the sign (L∞) or the normalised direction (L2) to x'. Against the bare model it is PGD.

    Arguments:
        steps (int): Default: 50.
        step_size (float | None): Default: None, ε/4.
        eot (int): draws of the defense per step (deterministic defenses take one). Default: 3.
        defense_steps_in_attack (int | None): Default: 5.

    Example grid entry::

        [[attacks]]
        plugin = "bpda-pgd"
    """

    display_name: ClassVar[str] = "BPDA-PGD"

    target: Literal["model", "defended"] = param("defended", "attack model + defense end to end")
    steps: int = param(50, "PGD steps", minimum=1)
    step_size: float | None = param(None, "step; None: ε/4", minimum=0)
    eot: int = param(3, "draws of the defense per step", minimum=1)
    defense_steps_in_attack: int | None = param(5, "an iterative defense's steps inside the attack; None: all",
                                                 minimum=0)

    def _attack(self, gradient, x: Tensor, threat: ThreatModel, generator: torch.Generator) -> Tensor:
        step = self.step_size if self.step_size is not None else threat.eps / 4
        x_adv = threat.random_start(x, generator)
        for _ in range(self.steps):
            grad = gradient(x_adv)
            if threat.norm.value == "Linf":
                direction = grad.sign()
            else:
                direction = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
            x_adv = threat.project(x_adv + step * direction, x)
        return x_adv.detach()

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                 generator: torch.Generator) -> Tensor:
        return self._attack(lambda point: ce_gradient(model, point, y), x, threat, generator)

    def attack_defended(self, defended: DefendedModel, x: Tensor, y: Tensor, threat: ThreatModel, *,
                        generator: torch.Generator) -> Tensor:
        inside = defended.with_defense(defended.defense.for_attack(self.defense_steps_in_attack), "bpda")
        draws = self.eot if defended.defense.randomized else 1
        return self._attack(lambda point: sum(ce_gradient(inside, point, y) for _ in range(draws)) / draws,
                            x, threat, generator)

    def passes(self, threat: ThreatModel) -> Passes:
        return Passes(self.steps, self.steps)

    def defended_cost(self, threat: ThreatModel, defense: Defense, votes: int) -> Passes:
        k = self.steps * (self.eot if defense.randomized else 1)
        return defense.for_attack(self.defense_steps_in_attack).attacked(Passes(k, k))

    def scaled(self, factor: int) -> BPDAPGD:
        return double_in_turn(self, factor, ("steps", "eot", "defense_steps_in_attack"))


@dataclass(frozen=True)
class AdaptiveSuite(AttackSuite, name="adaptive-suite"):
    r"""Every adaptive attack on a test-time defense in one grid line; the worst case takes them all.

    Members, each a grid attack of its own (``<label>: <member>``), each through every defense of the grid:

    - **APGD-DLR-T**: APGD on the targeted DLR loss, BPDA, EOT (Croce et al.'s attack on Hedge);
    - **BPDA-PGD**: PGD on the cross-entropy with BPDA gradients averaged over EOT draws;
    - **APGD-CE full**: APGD on the cross-entropy, differentiating through the unrolled defense, cut to
      ``full_gradient_steps`` steps (where BPDA's identity backward is a poor approximation);
    - **Algorithm 6**: the Hedge paper's own defense-aware attack, looking through the grid's defense;
    - **RayS** (where ``rays_queries`` > 0): the hard-label attack through the defense, one defended draw per query,
      as Croce et al. ran it against the anti-adversary. It uses no gradient, so where it beats every gradient
      member, the defense masks its gradients (the report says so).

    Arguments:
        n_iter (int): iterations of the two APGD members. Default: 50.
        n_target_classes (int): APGD-DLR-T's target classes. Default: 5.
        pgd_steps (int): BPDA-PGD's steps. Default: 50.
        eot (int): EOT draws of a random defense, every member but Algorithm 6. Default: 3.
        defense_steps_in_attack (int | None): an iterative defense's steps inside APGD-DLR-T and
            BPDA-PGD. Default: 5.
        full_gradient_steps (int): the defense's steps inside APGD-CE full. Default: 2.
        algorithm6_steps (int): Algorithm 6's attack steps T, each through the grid's full defense. Default: 20,
            the paper's.
        rays_queries (int): RayS's query budget per example (Croce et al.: 10,000); 0 leaves RayS out, since each
            query pays the whole defense. Default: 0.

    Example grid entry::

        [[attacks]]
        plugin = "adaptive-suite"
    """

    display_name: ClassVar[str] = "Adaptive suite"

    target: Literal["model", "defended"] = param("defended", "attack model + defense end to end")
    n_iter: int = param(50, "iterations of the two APGD members", minimum=1)
    n_target_classes: int = param(5, "APGD-DLR-T's target classes", minimum=1)
    pgd_steps: int = param(50, "BPDA-PGD's steps", minimum=1)
    eot: int = param(3, "EOT draws of a random defense", minimum=1)
    defense_steps_in_attack: int | None = param(5, "an iterative defense's steps inside the BPDA members", minimum=0)
    full_gradient_steps: int = param(2, "the defense's steps inside APGD-CE full", minimum=1)
    algorithm6_steps: int = param(20, "Algorithm 6's attack steps, each through the grid's full defense", minimum=1)
    rays_queries: int = param(0, "RayS's queries per example through the defense (the gradient-free member); "
                                 "0: no RayS member", minimum=0)

    def members(self) -> list[tuple[str, Attack]]:
        return [
            ("APGD-DLR-T", Adaptive(n_iter=self.n_iter, n_target_classes=self.n_target_classes, eot=self.eot,
                                    defense_steps_in_attack=self.defense_steps_in_attack)),
            ("BPDA-PGD", BPDAPGD(steps=self.pgd_steps, eot=self.eot, defense_steps_in_attack=self.defense_steps_in_attack)),
            ("APGD-CE full", Adaptive(loss="ce", gradient="full", n_iter=self.n_iter, eot=self.eot,
                                      defense_steps_in_attack=self.full_gradient_steps)),
            ("Algorithm 6", HedgeAware(target="defended", steps=self.algorithm6_steps)),
        ] + ([("RayS", RayS(target="defended", n_queries=self.rays_queries))] if self.rays_queries else [])

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                 generator: torch.Generator) -> Tensor:
        raise NotImplementedError("a suite runs as its members; the grid expands it into one entry per member")
