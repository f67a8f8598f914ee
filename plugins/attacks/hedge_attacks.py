"""The Hedge paper's own attacks: label-free reverse Hedge, and three defense-aware attacks."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Mapping

import torch
from torch import Tensor, nn

from harness.api import (
    Access,
    Attack,
    DefendedModel,
    Defense,
    Norm,
    Passes,
    ThreatModel,
    ascend,
    cross_entropy,
    param,
    sum_ce,
)
from harness_plugins.attacks.autoattack_bridge import Square
from harness_plugins.attacks.pgd import default_step
from harness_plugins.defenses.hedge import Hedge


def ce_gradient(model: nn.Module, point: Tensor, y: Tensor) -> Tensor:
    """∇ CE(f(point), y) with respect to the point: the BPDA step the defense-aware attacks take at hedged points."""
    with torch.enable_grad():
        point = point.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(cross_entropy(model(point), y).sum(), point)
    return grad


@dataclass(frozen=True)
class ReverseHedge(Attack, name="reverse-hedge"):
    r"""Reverse Hedge: sign-gradient *descent* on Σ_c CE(f(x), c), pulling f(x) towards uniform. No labels.

    Paper: Wu et al., "Attacking Adversarial Attacks as A Defense" (Algorithm 5). Norm: L∞ and L2.
    It never reads ``y``: the loss depends on the logits alone.

    Arguments:
        steps (int): Default: 20.
        step_size (float | None): Default: None, 4/255 under L∞ and ε/4 under L2.
        random_start (bool): Default: True.
        clip_start (bool): clip the random start to [0,1]. Default: True (the released code does not).

    Presets: ``paper`` takes the released ``ReverseAttack``'s step 0.007 and unclipped start.

    Example grid entry::

        [[attacks]]
        plugin = "reverse-hedge"
    """

    display_name: ClassVar[str] = "Reverse Hedge"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {"paper": {"step_size": 0.007, "clip_start": False}}

    steps: int = param(20, "descent steps", minimum=0)
    step_size: float | None = param(None, "step; None: 4/255 (L∞) or ε/4 (L2)", minimum=0)
    random_start: bool = param(True, "start from a uniform point of the ball")
    clip_start: bool = param(True, "clip the random start to [0,1] (the released code does not)")

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                 generator: torch.Generator) -> Tensor:
        step = default_step(threat, self.step_size)
        start = threat.random_start(x, generator, clip=self.clip_start) if self.random_start else x
        return ascend(model, x, start, sum_ce, ball=threat, steps=self.steps, step_size=step, descend=True)

    def passes(self, threat: ThreatModel) -> Passes:
        return Passes(self.steps, self.steps)


@dataclass(frozen=True)
class HedgeAware(Attack, name="hedge-aware"):
    r"""Hedge-aware PGD (the paper's Algorithm 6): each attack step looks through a fresh run of Hedge.

    From x'_0 = x + ε·U(−1,1), for t = 1 … T: x'' = Hedge_K(x'_{t−1}) (K steps of size η in B(x', ε_d),
    no gradient through it); x'_t = Π_ε(x'_{t−1} + η·sign(∇_{x''} CE(f(x''), y))): the gradient is taken at
    the hedged point and applied to x' (a BPDA step). Norm: L∞.

    Against the bare model (target = "model", Table 8's "Attack Hedge Defense") it runs its own Hedge with
    the parameters below and the defenses then score its examples. Through a defense (target =
    "defended") it looks through the grid's defense instead, at its full strength.

    Arguments:
        steps (int): T, attack steps. Default: 20.
        step_size (float | None): the attack's step. Default: None, meaning η, as Algorithm 6 uses one η for
            both loops.
        hedge_steps (int): K, inner Hedge steps. Default: 20.
        hedge_step_size (float): Hedge's η. Default: 4/255.
        eps_d (float): Hedge's radius. Default: 8/255.

    Example grid entry::

        [[attacks]]
        plugin = "hedge-aware"
    """

    display_name: ClassVar[str] = "Hedge-aware"

    steps: int = param(20, "T, attack steps", minimum=0)
    step_size: float | None = param(None, "the attack's step; None: η, as in Algorithm 6", minimum=0)
    hedge_steps: int = param(20, "K, inner Hedge steps per attack step", minimum=0)
    hedge_step_size: float = param(4 / 255, "Hedge's step η", minimum=0)
    eps_d: float = param(8 / 255, "Hedge's radius ε_d", minimum=0)

    def _attack(self, gradient, x: Tensor, threat: ThreatModel, generator: torch.Generator) -> Tensor:
        step = self.hedge_step_size if self.step_size is None else self.step_size
        x_adv = threat.random_start(x, generator)
        for _ in range(self.steps):
            x_adv = threat.project(x_adv + step * gradient(x_adv).sign(), x)
        return x_adv.detach()

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                 generator: torch.Generator) -> Tensor:
        hedge = Hedge(eps_d=self.eps_d, steps=self.hedge_steps, step_size=self.hedge_step_size)
        return self._attack(lambda point: ce_gradient(model, hedge.purify(model, point, generator=generator), y),
                            x, threat, generator)

    def attack_defended(self, defended: DefendedModel, x: Tensor, y: Tensor, threat: ThreatModel, *,
                        generator: torch.Generator) -> Tensor:
        through = defended.with_defense(defended.defense, "bpda")  # f's gradient at the defended point
        return self._attack(lambda point: ce_gradient(through, point, y), x, threat, generator)

    def passes(self, threat: ThreatModel) -> Passes:
        k = self.steps * (self.hedge_steps + 1)
        return Passes(k, k)

    def defended_cost(self, threat: ThreatModel, defense: Defense, votes: int) -> Passes:
        return defense.attacked(Passes(self.steps, self.steps))

    def scaled(self, factor: int) -> HedgeAware:
        return dataclasses.replace(self, steps=self.steps * factor)


@dataclass(frozen=True)
class DAAWhite(Attack, name="daa-white"):
    r"""Defense-aware white-box attack of the released code: sign-gradients accumulated at hedged points.

    For each of ``steps`` outer steps, ``inner`` Hedge steps (radius ``noise_radius`` around the current
    point) are taken; after each, the sign of ∇ CE at the hedged point, times ``inner_step``, is added
    to an accumulator, which is then applied to x' and projected into the attack ball. Norm: L∞.
    Defaults are the released code's.

    Example grid entry::

        [[attacks]]
        plugin = "daa-white"
    """

    display_name: ClassVar[str] = "DAA (white)"

    steps: int = param(10, "outer steps", minimum=0)
    inner: int = param(10, "Hedge steps per outer step", minimum=0)
    hedge_step_size: float = param(0.007, "Hedge's step", minimum=0)
    inner_step: float = param(0.007, "weight of each accumulated CE sign-gradient", minimum=0)
    noise_radius: float = param(0.093, "Hedge's radius around the current point", minimum=0)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                 generator: torch.Generator) -> Tensor:
        x_adv = threat.random_start(x, generator, clip=False)  # as released: x + U(−ε, ε), not clipped
        inner_ball = ThreatModel(Norm.LINF, self.noise_radius)
        for _ in range(self.steps):
            accumulated = torch.zeros_like(x)
            hedged = x_adv
            for _ in range(self.inner):
                hedged = ascend(model, x_adv, hedged, sum_ce, ball=inner_ball, steps=1, step_size=self.hedge_step_size)
                accumulated += self.inner_step * ce_gradient(model, hedged, y).sign()
            x_adv = threat.project(x_adv + accumulated, x)
        return x_adv.detach()

    def passes(self, threat: ThreatModel) -> Passes:
        k = self.steps * self.inner * 2
        return Passes(k, k)


class _OneStepHedge(nn.Module):
    """The released code's InternalDefense: one Hedge step from x + U(−ε, ε) before the model."""

    def __init__(self, model: nn.Module, step: float, eps: float, generator: torch.Generator):
        super().__init__()
        self.model, self.hedge, self.generator = model, Hedge(eps_d=eps, steps=1, step_size=step,
                                                              predict="released"), generator

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.hedge.purify(self.model, x, generator=self.generator))


@dataclass(frozen=True)
class DAABlack(Attack, name="daa-black"):
    r"""Defense-aware black-box attack of the released code: Square against the model behind a one-step Hedge.

    Library: pyautoattack's Square (queries counted per example). Norm: L∞ and L2.

    Arguments:
        n_queries (int): Square's query budget per example. Default: 5,000.
        hedge_step_size (float): the one Hedge step's size. Default: 0.045 (released).
        hedge_eps (float): the one Hedge step's radius. Default: 0.09 (released).
        unbroken ("last" | "clean"): an example Square did not break: its last point, or the clean x, as the
            released code's path through AutoAttack returns it (the paper preset). Default: "last".

    Example grid entry::

        [[attacks]]
        plugin = "daa-black"
    """

    display_name: ClassVar[str] = "DAA (black)"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {"paper": {"unbroken": "clean"}}

    access: ClassVar[Access] = Access.BLACK_BOX

    n_queries: int = param(5000, "Square's query budget per example", minimum=1)
    hedge_step_size: float = param(0.045, "the one Hedge step's size", minimum=0)
    hedge_eps: float = param(0.09, "the one Hedge step's radius", minimum=0)
    unbroken: Literal["last", "clean"] = param("last", "an example Square did not break: its last point, or the "
                                                       "clean x (the released path through AutoAttack)")

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                 generator: torch.Generator):
        wrapped = _OneStepHedge(model, self.hedge_step_size, self.hedge_eps, generator)
        return Square(n_queries=self.n_queries, unbroken=self.unbroken)(wrapped, x, y, threat, generator=generator)

    def passes(self, threat: ThreatModel) -> Passes:
        return Passes(2 * self.n_queries, self.n_queries)
