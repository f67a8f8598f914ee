"""APGD-CE, APGD-T, FAB-T, Square and the AutoAttack ensemble, through pyautoattack.

Each plugin holds AutoAttack's standard hyper-parameters as its defaults and builds the library
attack at call time around the model it is given. The library's seed comes from the run's
generator and its global-RNG seeding is isolated (see seeded.py). The runner re-checks every output.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Mapping

import torch
from torch import Tensor, nn

from harness.api import Access, Attack, AttackOutput, Passes, PluginError, ThreatModel, param
from harness_plugins.attacks.library_loops import KeepUnbroken, Unbroken, apgd_loop, fab_loop
from harness_plugins.attacks.seeded import isolated_rng, seed_from

UNBROKEN_HELP = ("an example the attack did not break: its own last (best-loss) point, or the clean x as the "
                 "library's perturb returns it (the paper preset)")


def check_targets(attack: Attack, n_target_classes: int, num_classes: int) -> None:
    """A targeted attack tries the 2nd … (k+1)-th most likely classes: the dataset must have k + 1 classes."""
    if n_target_classes > num_classes - 1:
        raise PluginError(f"{type(attack).__name__} targets n_target_classes = {n_target_classes} classes, but the "
                          f"dataset has {num_classes} classes, so at most {num_classes - 1} other ones. Set "
                          f"n_target_classes to at most {num_classes - 1}")


@dataclass(frozen=True)
class APGD(Attack, name="apgd-ce"):
    r"""APGD: step-size-free PGD with momentum and restarts (untargeted; loss "ce" or "dlr").

    Paper: Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks", ICML 2020. Norm: L∞ and L2. Library: pyautoattack's ``APGDAttack``.

    Arguments:
        n_iter (int): iterations per restart. Default: 100.
        n_restarts (int): restarts. Default: 1 (AutoAttack's standard version).
        loss ("ce" | "dlr"): Default: "ce".
        rho (float): step-size halving threshold. Default: 0.75.
        eot_iter (int): gradient averaging over draws, for randomised models. Default: 1.

    Shape: x (N, C, H, W) in [0,1], y (N,); returns x_adv of x's shape.

    Example grid entry::

        [[attacks]]
        plugin = "apgd-ce"
    """

    display_name: ClassVar[str] = "APGD-CE"
    # the released code built it as AutoAttack(version="custom", attacks_to_run=["apgd-ce"]), which keeps the
    # constructor's 5 restarts (the standard version sets 1)
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {"paper": {"n_restarts": 5, "unbroken": "clean"}}

    n_iter: int = param(100, "iterations per restart", minimum=1)
    n_restarts: int = param(1, "restarts (AutoAttack standard: 1)", minimum=1)
    loss: Literal["ce", "dlr"] = param("ce", "cross-entropy or the DLR loss")
    rho: float = param(0.75, "step-size halving threshold", minimum=0, maximum=1)
    eot_iter: int = param(1, "gradient averaging over draws of a randomised model", minimum=1)
    unbroken: Unbroken = param("last", UNBROKEN_HELP)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                 generator: torch.Generator) -> Tensor:
        from pyautoattack.autopgd_base import APGDAttack

        seed = seed_from(generator)
        attack = APGDAttack(model, n_iter=self.n_iter, norm=threat.norm.value, n_restarts=self.n_restarts,
                            eps=threat.eps, seed=seed, loss=self.loss, eot_iter=self.eot_iter, rho=self.rho,
                            device=x.device, logger=logging.getLogger("harness.apgd"))
        with isolated_rng(seed, x.device):
            return apgd_loop(attack, x, y, targeted=False, unbroken=self.unbroken).detach()

    def passes(self, threat: ThreatModel) -> Passes:
        per_restart = self.n_iter * self.eot_iter
        return Passes(self.n_restarts * per_restart + 1, self.n_restarts * per_restart)


@dataclass(frozen=True)
class APGDTargeted(Attack, name="apgd-t"):
    r"""APGD-T: APGD on the targeted DLR loss, once per target class (the 2nd … (k+1)-th most likely).

    Paper: Croce & Hein, ICML 2020. Norm: L∞ and L2. Library: pyautoattack's ``APGDAttack_targeted``.

    Arguments:
        n_iter (int): iterations per target. Default: 100.
        n_target_classes (int): target classes tried. Default: 9.
        n_restarts (int): restarts per target. Default: 1.

    Example grid entry::

        [[attacks]]
        plugin = "apgd-t"
    """

    display_name: ClassVar[str] = "APGD-T"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {"paper": {"unbroken": "clean"}}

    n_iter: int = param(100, "iterations per target class", minimum=1)
    n_target_classes: int = param(9, "number of target classes", minimum=1)
    n_restarts: int = param(1, "restarts per target class", minimum=1)
    rho: float = param(0.75, "step-size halving threshold", minimum=0, maximum=1)
    eot_iter: int = param(1, "gradient averaging over draws of a randomised model", minimum=1)
    unbroken: Unbroken = param("last", UNBROKEN_HELP)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                 generator: torch.Generator) -> Tensor:
        seed = seed_from(generator)
        attack = self.library_attack(model, threat, seed, x.device)
        with isolated_rng(seed, x.device):
            return apgd_loop(attack, x, y, targeted=True, unbroken=self.unbroken).detach()

    def check_data(self, num_classes: int) -> None:
        check_targets(self, self.n_target_classes, num_classes)

    def library_attack(self, model: nn.Module, threat: ThreatModel, seed: int, device: torch.device):
        """pyautoattack's ``APGDAttack_targeted`` with these hyper-parameters, around ``model``."""
        from pyautoattack.autopgd_base import APGDAttack_targeted

        return APGDAttack_targeted(model, n_iter=self.n_iter, norm=threat.norm.value, n_restarts=self.n_restarts,
                                   eps=threat.eps, seed=seed, eot_iter=self.eot_iter, rho=self.rho,
                                   n_target_classes=self.n_target_classes, device=device,
                                   logger=logging.getLogger("harness.apgd-t"))

    def passes(self, threat: ThreatModel) -> Passes:
        k = self.n_iter * self.n_target_classes * self.n_restarts * self.eot_iter
        return Passes(k + 1, k)


@dataclass(frozen=True)
class FABTargeted(Attack, name="fab-t"):
    r"""FAB-T: targeted minimum-norm FAB attack; an example counts only within ε.

    Paper: Croce & Hein, "Minimally distorted Adversarial Examples with a Fast Adaptive Boundary
    Attack", ICML 2020. Norm: L∞ and L2. Library: pyautoattack's ``FABAttack_PT(targeted=True)``.

    Arguments:
        n_iter (int): iterations. Default: 100.
        n_target_classes (int): Default: 9.
        n_restarts (int): Default: 1 (AutoAttack standard).

    Example grid entry::

        [[attacks]]
        plugin = "fab-t"
    """

    display_name: ClassVar[str] = "FAB-T"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {"paper": {"unbroken": "clean"}}

    n_iter: int = param(100, "iterations", minimum=1)
    n_target_classes: int = param(9, "number of target classes", minimum=1)
    n_restarts: int = param(1, "restarts", minimum=1)
    unbroken: Unbroken = param("last", UNBROKEN_HELP + "; its last point is projected into the threat model")

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                 generator: torch.Generator) -> Tensor:
        from pyautoattack.fab_pt import FABAttack_PT

        seed = seed_from(generator)
        attack = FABAttack_PT(model, norm=threat.norm.value, n_restarts=self.n_restarts, n_iter=self.n_iter,
                              eps=threat.eps, seed=seed, targeted=True, n_target_classes=self.n_target_classes,
                              device=x.device)
        with isolated_rng(seed, x.device):
            return fab_loop(attack, x, y, threat, unbroken=self.unbroken).detach()

    def check_data(self, num_classes: int) -> None:
        check_targets(self, self.n_target_classes, num_classes)

    def passes(self, threat: ThreatModel) -> Passes:
        k = self.n_iter * self.n_target_classes * self.n_restarts
        return Passes(2 * k + 1, k * 10)  # FAB takes the full Jacobian: one backward per class


@dataclass(frozen=True)
class Square(Attack, name="square"):
    r"""Square Attack: score-based random search with square-shaped updates; queries counted per example.

    Paper: Andriushchenko et al., "Square Attack: a query-efficient black-box adversarial attack via
    random search", ECCV 2020. Norm: L∞ and L2. Library: pyautoattack's ``SquareAttack``.

    Arguments:
        n_queries (int): query budget per example. Default: 5,000.
        p_init (float): initial fraction of pixels per square. Default: 0.8.
        unbroken ("last" | "clean"): what an example the attack did not break is returned as. "last": the
            last point of its search, the lowest-margin point it found; "clean": the clean input, as
            AutoAttack's ``perturb`` and the paper's released code return it. Default: "last": a defense is
            then scored on the strongest input the attack found rather than on an image never attacked,
            which would credit it for examples it did not have to defend.

    Presets: ``paper`` returns the clean input where the attack failed, as released.

    Returns an ``AttackOutput`` whose ``queries`` are the per-example query counts.

    Example grid entry::

        [[attacks]]
        plugin = "square"
        n_queries = 5000
    """

    display_name: ClassVar[str] = "Square"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {"paper": {"unbroken": "clean"}}
    access: ClassVar[Access] = Access.BLACK_BOX

    n_queries: int = param(5000, "query budget per example", minimum=1)
    p_init: float = param(0.8, "initial fraction of pixels per square", minimum=0, maximum=1)
    unbroken: Literal["last", "clean"] = param("last", "an unbroken example: the search's last point, or the clean x")

    def check(self) -> None:
        if self.p_init <= 0:
            raise PluginError(f"square p_init = {self.p_init!r}: the first squares would cover no pixel. Set p_init in "
                              "(0, 1], e.g. 0.8 (the paper's L∞ value)")

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                 generator: torch.Generator) -> AttackOutput:
        from pyautoattack.square import SquareAttack

        seed = seed_from(generator)
        attack = SquareAttack(model, norm=threat.norm.value, n_queries=self.n_queries, eps=threat.eps,
                              p_init=self.p_init, n_restarts=1, seed=seed, resc_schedule=False, device=x.device)
        x_adv, queries = x.clone(), torch.zeros(len(x), dtype=torch.long, device=x.device)
        with torch.no_grad(), isolated_rng(seed, x.device):
            attack.init_hyperparam(x)
            todo = (model(x).argmax(1) == y).nonzero().flatten()
            if len(todo):
                # attack_single_run (not perturb) reports the per-example query counts
                n_q, adv = attack.attack_single_run(x[todo], y[todo])
                if self.unbroken == "clean":
                    broken = model(adv).argmax(1) != y[todo]
                    adv = torch.where(broken.view(-1, *[1] * (x.dim() - 1)), adv, x[todo])
                x_adv[todo], queries[todo] = adv, n_q.long()
        return AttackOutput(x_adv.detach(), queries + 1)  # + the query that checked the clean input

    def passes(self, threat: ThreatModel) -> Passes:
        return Passes(self.n_queries, 0)


@dataclass(frozen=True)
class AutoAttackEnsemble(Attack, name="autoattack"):
    r"""AutoAttack: APGD-CE, APGD-T, FAB-T and Square, each on the examples the previous left.

    Paper: Croce & Hein, ICML 2020. Norm: L∞ and L2. Library: pyautoattack's ``AutoAttack``.

    Arguments:
        version ("standard" | "plus" | "rand"): the library's preset. Default: "standard".

    Example grid entry::

        [[attacks]]
        plugin = "autoattack"
        version = "standard"
    """

    display_name: ClassVar[str] = "AutoAttack"
    benchmark: ClassVar[bool] = True
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {"paper": {"unbroken": "clean"}}

    version: Literal["standard", "plus", "rand"] = param("standard", "AutoAttack's preset")
    unbroken: Unbroken = param("last", "an example no attack of the ensemble broke: the point of the last one that "
                                       "tried it, or the clean x as the library returns it (the paper preset)")

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                 generator: torch.Generator) -> Tensor:
        from pyautoattack import AutoAttack

        seed = seed_from(generator)
        adversary = AutoAttack(model, norm=threat.norm.value, eps=threat.eps, version=self.version, seed=seed,
                               device=x.device)
        adversary.verbose = False
        with isolated_rng(seed, x.device):
            kept = KeepUnbroken(adversary, x, y, threat) if self.unbroken == "last" else None
            x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=len(x))
        return (kept.fill(x_adv) if kept is not None else x_adv).detach()

    def passes(self, threat: ThreatModel) -> Passes:
        return Passes(100 + 900 + 900 + 5000, 100 + 900 + 9000)  # upper bounds of the standard version
