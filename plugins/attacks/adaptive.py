"""The adaptive evaluation of test-time defenses (Croce et al., ICML 2022): APGD through model + defense."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from harness.api import Attack, DefendedModel, Defense, Passes, ThreatModel, param
from harness_plugins.attacks.autoattack_bridge import APGDTargeted, check_targets
from harness_plugins.attacks.library_loops import apgd_loop
from harness_plugins.attacks.seeded import isolated_rng, seed_from


def double_in_turn(plugin: Attack, factor: int, axes: tuple[str, ...]) -> Attack:
    """The plugin with its budget multiplied by ``factor`` (a power of 2): each doubling goes to the next of
    ``axes`` in turn (e.g. iterations, then EOT draws, then the defense's steps inside the attack)."""
    changes = {a: getattr(plugin, a) for a in axes}
    for i in range(max(factor, 1).bit_length() - 1):
        axis = axes[i % len(axes)]
        if changes[axis] is not None:
            changes[axis] *= 2
    return dataclasses.replace(plugin, **changes)


@dataclass(frozen=True)
class Adaptive(Attack, name="adaptive"):
    r"""APGD through model + defense: BPDA (or the full gradient) and EOT; the targeted DLR loss or cross-entropy.

    Paper: Croce et al., "Evaluating the Adversarial Robustness of Adaptive Test-time Defenses",
    ICML 2022. Norm: L∞ and L2. Library: pyautoattack's ``APGDAttack_targeted`` / ``APGDAttack``.

    It attacks the defended model end to end (``target = "defended"``): the runner hands it the
    model wrapped in each defense of the grid, one unit per defense. Against the bare model
    (target = "model") it is plain APGD with these settings.

    Arguments:
        loss ("dlr-targeted" | "ce"): APGD-T on the targeted DLR loss, the 2nd … (k+1)-th most likely
            classes in turn (Croce et al.'s attack on Hedge); or untargeted APGD on cross-entropy.
            Default: "dlr-targeted".
        n_iter (int): APGD iterations per target class (per restart for "ce"). Default: 50.
        n_target_classes (int): for "dlr-targeted". Default: 5.
        n_restarts (int): Default: 1.
        eot (int): gradients averaged over this many draws of the defense's randomness. Default: 3, as
            Croce et al. (a deterministic defense is attacked with one).
        gradient ("bpda" | "full"): BPDA runs the defense without gradient and takes f's gradient at
            the defended point (identity backward); "full" differentiates through the unrolled defense.
            Default: "bpda".
        defense_steps_in_attack (int | None): an iterative defense (Hedge) runs at most this many steps
            inside the attack, for cost, as Croce et al. cut Hedge to 5; the candidates are scored, and the
            final evaluation made, with the grid's defense. None: all of its steps. Default: 5.
        success ("vote" | "single-draw"): how the attack decides, against a random defense, that an
            example is broken and may be dropped from the remaining runs. "vote": the majority over the
            grid's ``votes`` draws of the grid's defense, as the runner scores it, and target classes
            ranked by the draws' mean softmax. "single-draw": pyautoattack's own loop, which drops an
            example after one lucky draw (kept to show the difference). Default: "vote".
        checks ("sequential" | "full"): how a "vote" check is paid for. "sequential": the runner's exact
            sequential vote, which stops drawing once the majority is certain; "full": every check pays all
            ``votes`` draws. Both decide every check alike, and rank targets and unbroken candidates by the
            first ⌈votes/2⌉ draws, which both make, so they return the same points; "full" is kept to show
            that the cheaper checks lose nothing. Default: "sequential".

    A ladder (``ladder = k`` in its grid entry) doubles, in turn, the iterations, the EOT draws and the
    defense's steps inside the attack.

    Example grid entry::

        [[attacks]]
        plugin = "adaptive"
        eot = 3
    """

    display_name: ClassVar[str] = "Adaptive"

    target: Literal["model", "defended"] = param("defended", "attack model + defense end to end")
    loss: Literal["dlr-targeted", "ce"] = param("dlr-targeted", "APGD-T on the targeted DLR loss, or APGD on CE")
    n_iter: int = param(50, "APGD iterations per target class (per restart for 'ce')", minimum=1)
    n_target_classes: int = param(5, "target classes: the 2nd to (k+1)-th most likely ('dlr-targeted')", minimum=1)
    n_restarts: int = param(1, "restarts", minimum=1)
    eot: int = param(3, "gradients averaged over draws of the defense's randomness (Croce et al.: 3)", minimum=1)
    gradient: Literal["bpda", "full"] = param("bpda", "BPDA (identity backward) or the full unrolled gradient")
    defense_steps_in_attack: int | None = param(5, "an iterative defense's steps inside the attack (Croce et al.: 5); "
                                                 "None: all of them", minimum=0)
    success: Literal["vote", "single-draw"] = param("vote", "success check on random defenses: majority vote or one draw")
    checks: Literal["sequential", "full"] = param("sequential", "a vote check stops once its majority is certain, "
                                                  "or pays every draw (the same decisions)")

    def check_data(self, num_classes: int) -> None:
        if self.loss == "dlr-targeted":
            check_targets(self, self.n_target_classes, num_classes)

    def _library(self, model: nn.Module, threat: ThreatModel, seed: int, device: torch.device, randomized: bool):
        eot = self.eot if randomized else 1
        if self.loss == "dlr-targeted":
            return APGDTargeted(n_iter=self.n_iter, n_target_classes=self.n_target_classes, n_restarts=self.n_restarts,
                                eot_iter=eot).library_attack(model, threat, seed, device)
        from pyautoattack.autopgd_base import APGDAttack

        return APGDAttack(model, n_iter=self.n_iter, norm=threat.norm.value, n_restarts=self.n_restarts, eps=threat.eps,
                          seed=seed, loss="ce", eot_iter=eot, rho=0.75, device=device,
                          logger=logging.getLogger("harness.apgd"))

    def _perturb(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, generator: torch.Generator,
                 randomized: bool) -> Tensor:
        seed = seed_from(generator)
        attack = self._library(model, threat, seed, x.device, randomized)
        with isolated_rng(seed, x.device):   # an unbroken example keeps its best-loss point, never the clean x
            return apgd_loop(attack, x, y, targeted=self.loss == "dlr-targeted", unbroken="last").detach()

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                 generator: torch.Generator) -> Tensor:
        """Against the bare model (target = "model"): plain APGD with these settings."""
        return self._perturb(model, x, y, threat, generator, randomized=False)

    def attack_defended(self, defended: DefendedModel, x: Tensor, y: Tensor, threat: ThreatModel, *,
                        generator: torch.Generator) -> Tensor:
        attacked = defended.with_defense(defended.defense.for_attack(self.defense_steps_in_attack), self.gradient)
        randomized = defended.defense.randomized
        if randomized and self.success == "vote":
            return self._vote_checked(attacked, defended, x, y, threat, generator)
        return self._perturb(attacked, x, y, threat, generator, randomized)

    def _vote_checked(self, attacked: nn.Module, scorer: DefendedModel, x: Tensor, y: Tensor, threat: ThreatModel,
                      generator: torch.Generator) -> Tensor:
        """pyautoattack's loop over targets and restarts, with success decided by the scorer's majority vote.

        The library marks an example broken, and stops attacking it, as soon as one random draw of the
        defense misclassifies it; the runner's majority vote may then still call it correct, so the
        attack gave up on an example it had not broken. Here each run's two candidates (the last point a
        draw misclassified, and the highest-loss point) are scored as the runner scores them, and only a
        majority-vote success removes an example. An example never broken gets the candidate that most
        draws got wrong, a better bet for the final scoring than the clean input."""
        seed = seed_from(generator)
        attack = self._library(attacked, threat, seed, x.device, randomized=True)  # our loop runs its restarts
        targets = range(2, self.n_target_classes + 2) if self.loss == "dlr-targeted" else [None]
        adv = x.clone()
        with isolated_rng(seed, x.device):
            attack.init_hyperparam(x)
            sequential = self.checks == "sequential"
            clean = scorer.predict(x, sequential=sequential)
            robust = clean.pred == y
            wrong_share = clean.first_wrong(y)
            ranking = clean.probabilities.sort(dim=1).indices  # targets: the 2nd … most likely, over the first draws
            for target in targets:
                for _ in range(self.n_restarts):
                    todo = robust.nonzero().flatten()
                    if not len(todo):
                        break
                    if target is not None:
                        attack.y_target = ranking[todo, -target]
                    best, single_draw_correct, _, last_fooling = attack.attack_single_run(x[todo], y[todo])
                    everything = torch.ones_like(single_draw_correct, dtype=torch.bool)
                    for candidate, worth_scoring in ((last_fooling, single_draw_correct == 0), (best, everything)):
                        mask = worth_scoring & robust[todo]
                        if not mask.any():
                            continue
                        chosen, index = candidate[mask].detach(), todo[mask]
                        scored = scorer.predict(chosen, sequential=sequential)
                        broken, share = scored.pred != y[index], scored.first_wrong(y[index])
                        # else the point most draws got wrong so far; on a tie the newer one (never the clean x)
                        keep = broken | (share >= wrong_share[index])
                        adv[index[keep]], wrong_share[index[keep]] = chosen[keep], share[keep]
                        robust[index[broken]] = False
        return adv

    def _runs(self) -> int:
        return self.n_restarts * (self.n_target_classes if self.loss == "dlr-targeted" else 1)

    def passes(self, threat: ThreatModel) -> Passes:
        k = self.n_iter * self._runs()
        return Passes(k + 1, k)

    def defended_cost(self, threat: ThreatModel, defense: Defense, votes: int) -> Passes:
        """APGD through the in-attack copy of the defense, EOT draws included, plus (random defenses, vote
        mode) the scored checks of its candidates: the clean check, then two candidates per run."""
        randomized = defense.randomized
        k = self.n_iter * self._runs() * (self.eot if randomized else 1)
        attack = defense.for_attack(self.defense_steps_in_attack).attacked(Passes(k + 1, k))
        if not randomized or self.success != "vote":
            return attack
        checks = 1 + 2 * self._runs()
        return attack + (defense.passes() + Passes(1, 0)) * (defense.draws(votes) * checks)

    def defended_floor(self, threat: ThreatModel, defense: Defense) -> Passes:
        """Iterations × runs (targets × restarts) × EOT draws, each through the in-attack defense and the model:
        the loop itself, without the library's extra evaluations or the scored checks of candidates."""
        k = self.n_iter * self._runs() * (self.eot if defense.randomized else 1)
        return defense.for_attack(self.defense_steps_in_attack).attacked(Passes(k, k))

    def floor(self, threat: ThreatModel) -> Passes:
        k = self.n_iter * self._runs()
        return Passes(k, k)

    def scaled(self, factor: int) -> Adaptive:
        return double_in_turn(self, factor, ("n_iter", "eot", "defense_steps_in_attack"))
