"""Anti-adversary layer (Alfarra et al., "Combating Adversaries with Anti-Adversaries", AAAI 2022)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api import Defense, Passes, param


@dataclass(frozen=True)
class AntiAdversary(Defense, name="anti-adversary"):
    r"""Anti-adversary: k sign-gradient steps that *lower* the loss of the model's own prediction, then predict.

    Paper: Alfarra et al., "Combating Adversaries with Anti-Adversaries", AAAI 2022 (Algorithm 1); released code
    MotasemAlfarra/Combating-Adversaries-with-Anti-Adversaries, ``anti_adversary_wrapper.get_anti_adversary``.
    Norm: none (the steps are not projected into any ball).

    With ŷ = argmax f(x) and δ_0 = 0, each step is δ_{j+1} = δ_j − α·sign(∇_δ CE(f(x + δ_j), ŷ)); the prediction is
    f(x + δ_k). As in the released code, x + δ is neither projected nor clipped to [0,1] (so a step may leave the
    image domain; the model normalises whatever it gets). Deterministic. The step direction is a sign, whose
    derivative is zero almost everywhere, so the gradient through the layer is the identity: BPDA is exact here.

    Arguments:
        steps (int): k, the number of steps. Default: 2 (Croce et al.'s evaluation, ICML 2022).
        step_size (float): α, in the units of the [0,1] image. Default: 0.15 (likewise).

    Shape: x (N, C, H, W) in [0,1]; returns x + δ_k of the same shape.

    Example grid entry::

        [[defenses]]
        plugin = "anti-adversary"
        steps = 2
    """

    display_name: ClassVar[str] = "Anti-adversary"

    steps: int = param(2, "k, the number of steps away from the attack", minimum=0)
    step_size: float = param(0.15, "α, the step on the [0,1] image", minimum=0)

    def purify(self, model: nn.Module, x: Tensor, *, generator: torch.Generator,
               differentiable: bool = False) -> Tensor:
        """x + δ_k. With ``differentiable``, x + δ_k stays in x's graph, δ_k as a constant (exact: see above)."""
        with torch.no_grad():
            pseudo_label = model(x).argmax(dim=1)
        delta = torch.zeros_like(x)
        for _ in range(self.steps):
            with torch.enable_grad():
                delta.requires_grad_(True)
                loss = F.cross_entropy(model(x.detach() + delta), pseudo_label, reduction="sum")
                (grad,) = torch.autograd.grad(loss, delta)
            delta = (delta - self.step_size * grad.sign()).detach()
        return x + delta if differentiable else (x + delta).detach()

    def passes(self) -> Passes:
        return Passes(self.steps + 1, self.steps)   # the pseudo label, then one forward and backward per step

    def for_attack(self, steps: int | None) -> AntiAdversary:
        return self if steps is None else dataclasses.replace(self, steps=min(steps, self.steps))
