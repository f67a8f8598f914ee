"""pyautoattack's restart and target loops, run here so that an example the attack did not break keeps a point of
the attack's own instead of the clean input.

The library's ``perturb`` returns the clean input for every example it did not break. Scored that way, a
test-time defense is credited for images it never had to defend (and a randomised one gets a fresh chance on
an image no attack touched). Under the honest preset the attacks return their own point for those examples:
APGD the highest-loss point of the last run that attacked it, FAB its last point projected into the threat
model, AutoAttack the point of the last of its attacks that tried it. With ``unbroken = "clean"`` (the paper
preset) every loop below gives exactly what ``perturb`` gives (tests/test_attack_parity.py).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from harness.api import ThreatModel

Unbroken = Literal["last", "clean"]


def apgd_loop(attack, x: Tensor, y: Tensor, *, targeted: bool, unbroken: Unbroken) -> Tensor:
    """``APGDAttack.perturb`` / ``APGDAttack_targeted.perturb``, keeping the highest-loss point of the last run for
    an example no run broke (``unbroken = "last"``)."""
    attack.init_hyperparam(x)
    x, y = x.detach().clone().float(), y.detach().clone().long()
    adv = x.clone()
    robust = attack.model(x).max(1)[1] == y
    torch.random.manual_seed(attack.seed)
    torch.cuda.random.manual_seed(attack.seed)
    for target in range(2, attack.n_target_classes + 2) if targeted else [None]:
        for _ in range(attack.n_restarts):
            todo = robust.nonzero().flatten()
            if not todo.numel():
                continue
            x_todo, y_todo = x[todo].clone(), y[todo].clone()
            if target is not None:
                attack.y_target = attack.model(x_todo).sort(dim=1)[1][:, -target]
            best, still, _, fooling = attack.attack_single_run(x_todo, y_todo)
            broken = still == 0
            robust[todo[broken]] = False
            adv[todo[broken]] = fooling[broken].clone()
            if unbroken == "last":
                adv[todo[~broken]] = best[~broken].clone()
    return adv


def fab_loop(attack, x: Tensor, y: Tensor, threat: ThreatModel, *, unbroken: Unbroken) -> Tensor:
    """``FABAttack.perturb`` (targeted), keeping for an example no run broke within ε its last point, projected
    into the threat model (FAB searches for the smallest perturbation, which may lie beyond ε)."""
    attack.device = attack.device or x.device
    adv = x.clone()
    with torch.no_grad():
        robust = attack._predict_fn(x).max(1)[1] == y
        torch.random.manual_seed(attack.seed)
        torch.cuda.random.manual_seed(attack.seed)
        for target in range(2, attack.n_target_classes + 2):
            attack.target_class = target
            for restart in range(attack.n_restarts):
                todo = robust.nonzero().flatten()
                if not todo.numel():
                    continue
                x_todo, y_todo = x[todo].clone(), y[todo].clone()
                point = attack.attack_single_run(x_todo, y_todo, use_rand_start=restart > 0, is_targeted=True)
                still = attack._predict_fn(point).max(1)[1] == y_todo
                still = torch.max(still, threat.distance(point, x_todo) > threat.eps)
                broken = still == 0
                robust[todo[broken]] = False
                adv[todo[broken]] = point[broken].clone()
                if unbroken == "last":
                    adv[todo[~broken]] = threat.project(point[~broken], x_todo[~broken])
    return adv


class KeepUnbroken:
    """Wraps the attacks of a pyautoattack ``AutoAttack`` so that each remembers, for the examples it leaves
    unbroken, a point of its own; :meth:`fill` puts the last one into the ensemble's output. AutoAttack's own
    loop is left as it is: it runs every attack once, on all examples still robust, in index order (one batch),
    and keeps what the model misclassifies."""

    def __init__(self, adversary, x: Tensor, y: Tensor, threat: ThreatModel):
        self.adversary, self.x, self.y, self.threat = adversary, x, y, threat
        with torch.no_grad():
            self.robust = adversary.get_logits(x).max(1)[1] == y
        self.last = x.clone()
        for name, run in (("apgd", self._apgd(False)), ("apgd_targeted", self._apgd(True)), ("fab", self._fab),
                          ("square", lambda x, y: square_loop(adversary.square, x, y, unbroken="last"))):
            if getattr(adversary, name, None) is not None:
                getattr(adversary, name).perturb = self._recorded(run)

    def _apgd(self, targeted: bool):
        attack = self.adversary.apgd_targeted if targeted else self.adversary.apgd
        return lambda x, y: apgd_loop(attack, x, y, targeted=targeted, unbroken="last")

    def _fab(self, x: Tensor, y: Tensor) -> Tensor:
        if not self.adversary.fab.targeted:
            raise NotImplementedError("only AutoAttack's targeted FAB keeps its unbroken points")
        return fab_loop(self.adversary.fab, x, y, self.threat, unbroken="last")

    def _recorded(self, run):
        def perturb(x: Tensor, y: Tensor) -> Tensor:
            todo = self.robust.nonzero().flatten()
            points = run(x, y)
            with torch.no_grad():
                broken = self.adversary.get_logits(points).max(1)[1] != y
            self.robust[todo[broken]] = False
            self.last[todo[~broken]] = points[~broken]
            return torch.where(broken.view(-1, *[1] * (x.dim() - 1)), points, x)   # what perturb would return
        return perturb

    def fill(self, x_adv: Tensor) -> Tensor:
        return torch.where(self.robust.view(-1, *[1] * (x_adv.dim() - 1)), self.last, x_adv)


def square_loop(attack, x: Tensor, y: Tensor, *, unbroken: Unbroken) -> Tensor:
    """``SquareAttack.perturb`` (untargeted), keeping for an example no restart broke the lowest-margin point of the
    last restart."""
    attack.init_hyperparam(x)
    adv, y = x.clone(), y.detach().clone().long()
    with torch.no_grad():
        robust = attack.predict(x).max(1)[1] == y
    torch.random.manual_seed(attack.seed)
    torch.cuda.random.manual_seed(attack.seed)
    for _ in range(attack.n_restarts):
        todo = robust.nonzero().flatten()
        if not todo.numel():
            continue
        _, point = attack.attack_single_run(x[todo].clone(), y[todo].clone())
        with torch.no_grad():
            broken = attack.predict(point).max(1)[1] != y[todo]
        robust[todo[broken]] = False
        adv[todo[broken]] = point[broken].clone()
        if unbroken == "last":
            adv[todo[~broken]] = point[~broken].clone()
    return adv
