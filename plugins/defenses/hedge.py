"""Hedge Defense (Wu et al., "Attacking Adversarial Attacks as A Defense", Algorithm 1)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Mapping

import torch
from torch import Tensor, nn

from harness.api import Defense, Norm, Passes, PluginError, ThreatModel, ascend, kl_uniform, param, sum_ce

RELEASED_STEP = 0.007
RELEASED_EPS_D = 0.031


@dataclass(frozen=True)
class Hedge(Defense, name="hedge"):
    r"""Hedge Defense: sign-gradient *ascent* on Σ_c CE(f(x), c) inside the L∞ ball B(x', ε_d).

    Paper: Wu et al., "Attacking Adversarial Attacks as A Defense", arXiv:2106.04938 (Algorithm 1).
    Norm: L∞ (the defense's own ball).

    Arguments:
        eps_d (float): radius of the defense's ball. Default: 8/255.
        steps (int): K, the number of ascent steps. Default: 20.
        step_size (float): η. Default: 4/255.
        random_init (bool): start at x' + ε_d·U(−1,1), clipped to [0,1]. Default: True.
        loss ("sum-ce" | "kl-uniform"): Σ_c CE, or KL(uniform ‖ f(x)); the same sign-gradient. Default: "sum-ce".
        predict ("final" | "released"): predict f(x_K), as the paper's text says; or, as the released
            code does, the argmax of the summed logits of x_1 … x_{K−1} (step 0.007 and ε_d 0.031
            unless given). Default: "final".

    Shape: x (N, C, H, W) in [0,1]; returns the hedged input of the same shape.

    Example grid entry::

        [[defenses]]
        plugin = "hedge"
        steps = 20
    """

    display_name: ClassVar[str] = "Hedge"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {"paper": {"predict": "released"}}

    randomized: ClassVar[bool] = True
    eps_d: float | None = param(None, "radius of the defense's L∞ ball; None: 8/255 (0.031 with predict='released')",
                                minimum=0, maximum=1)
    steps: int = param(20, "K, the number of ascent steps", minimum=0)
    step_size: float | None = param(None, "η; None: 4/255 (0.007 with predict='released')", minimum=0)
    random_init: bool = param(True, "start from x' + ε_d·U(−1,1)")
    loss: Literal["sum-ce", "kl-uniform"] = param("sum-ce", "Σ_c CE or KL(uniform ‖ f(x)); same sign-gradient")
    predict: Literal["final", "released"] = param("final", "predict on x_K, or as the released code did")

    @property
    def ball(self) -> ThreatModel:
        eps = self.eps_d if self.eps_d is not None else (RELEASED_EPS_D if self.predict == "released" else 8 / 255)
        return ThreatModel(Norm.LINF, eps)

    @property
    def eta(self) -> float:
        if self.step_size is not None:
            return self.step_size
        return RELEASED_STEP if self.predict == "released" else 4 / 255

    def check(self) -> None:
        if self.predict == "released" and self.steps < 2:
            raise PluginError("hedge predict = 'released' needs steps >= 2: it sums the logits of x_1 … x_{K−1}")

    def _start(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if not self.random_init:
            return x
        # the released loop starts at x' + U(−ε_d, ε_d), not clipped to [0,1]
        return self.ball.random_start(x, generator, clip=self.predict != "released")

    def _run(self, model: nn.Module, x: Tensor, generator: torch.Generator, observe=None,
             differentiable: bool = False) -> Tensor:
        loss = sum_ce if self.loss == "sum-ce" else kl_uniform
        return ascend(model, x, self._start(x, generator), loss, ball=self.ball, steps=self.steps, step_size=self.eta,
                      observe=observe, differentiable=differentiable)

    def purify(self, model: nn.Module, x: Tensor, *, generator: torch.Generator,
               differentiable: bool = False) -> Tensor:
        """x_K, the final point of the ascent."""
        return self._run(model, x, generator, differentiable=differentiable)

    def logits(self, model: nn.Module, x: Tensor, *, generator: torch.Generator,
               differentiable: bool = False) -> Tensor:
        if self.predict == "final":
            return model(self.purify(model, x, generator=generator, differentiable=differentiable))
        # The released code sums the logits of the iterates x_1 … x_{K−1} (not x_0, not x_K).
        summed: list[Tensor] = []
        self._run(model, x, generator, observe=lambda k, xk, logits: summed.append(logits) if k >= 1 else None,
                  differentiable=differentiable)
        return torch.stack(summed).sum(0)

    def prediction_points(self, model: nn.Module, x: Tensor, *, generator: torch.Generator) -> list[Tensor]:
        """x_K; under ``predict = "released"`` the iterates x_1 … x_{K−1} whose logits the released code sums."""
        if self.predict == "final":
            return super().prediction_points(model, x, generator=generator)
        points: list[Tensor] = []
        self._run(model, x, generator, observe=lambda k, xk, logits: points.append(xk) if k >= 1 else None)
        return points

    def passes(self) -> Passes:
        return Passes(self.steps, self.steps)

    def attacked(self, attack: Passes) -> Passes:
        """Under ``predict = "released"`` BPDA's surrogate is the model at each of the K − 1 iterates, after the
        K steps of the ascent that find them: K − 1 more forward passes, and K − 1 backward passes, not one."""
        if self.predict == "final":
            return super().attacked(attack)
        points = self.steps - 1
        return Passes(attack.forward * (self.steps + points), attack.forward * self.steps + attack.backward * points)

    def for_attack(self, steps: int | None) -> Hedge:
        return self if steps is None else dataclasses.replace(self, steps=min(steps, self.steps))


@dataclass(frozen=True)
class HedgeRandomClass(Hedge, name="hedge-random-class"):
    r"""Hedge with one random class per step (the paper's Algorithm 4).

    Each step ascends CE(f(x), c) for a class c drawn uniformly at random for each example,
    instead of the sum over all classes. Other arguments as ``hedge``.

    Example grid entry::

        [[defenses]]
        plugin = "hedge-random-class"
    """

    display_name: ClassVar[str] = "Hedge (random class)"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}   # the released code has no such variant

    def check(self) -> None:
        super().check()
        if self.loss != "sum-ce":
            raise PluginError(f"hedge-random-class ascends the cross-entropy of one random class per step; its "
                              f"loss cannot be set (got loss = {self.loss!r}). Remove the loss key")

    def _run(self, model: nn.Module, x: Tensor, generator: torch.Generator, observe=None,
             differentiable: bool = False) -> Tensor:
        ball, start = self.ball, self._start(x, generator)

        def random_class_ce(logits: Tensor) -> Tensor:
            c = torch.randint(0, logits.shape[1], (logits.shape[0],), generator=generator, device=logits.device)
            return torch.nn.functional.cross_entropy(logits, c, reduction="none")

        return ascend(model, x, start, random_class_ce, ball=ball, steps=self.steps, step_size=self.eta,
                      observe=observe, differentiable=differentiable)
