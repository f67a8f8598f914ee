"""PGD and CW-L∞: one loop (harness.api.sign_gradient.ascend), two losses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Mapping

import torch
from torch import Tensor, nn

from harness.api import (
    Attack,
    Norm,
    Passes,
    PluginError,
    ThreatModel,
    ascend,
    cross_entropy,
    cw_margin,
    param,
    released_cw,
)

PAPER_LINF_STEP = 4 / 255     # the step the paper's text gives
RELEASED_LINF_STEP = 0.007    # the step its released code used


def default_step(threat: ThreatModel, step_size: float | None, linf: float = PAPER_LINF_STEP) -> float:
    """The step a sign-gradient attack takes unless given one: ``linf`` under L∞ (the paper's 4/255), ε/4 under L2."""
    if step_size is not None:
        return step_size
    return linf if threat.norm is Norm.LINF else threat.eps / 4


@dataclass(frozen=True)
class PGD(Attack, name="pgd"):
    r"""PGD on the cross-entropy loss, with a random start.

    Paper: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018.
    Norm: L∞ and L2.

    Arguments:
        steps (int): number of steps. Default: 20 (the Hedge paper's protocol, Algorithm 2).
        step_size (float | None): step length. Default: None, meaning 4/255 under L∞ and ε/4 under L2.
        random_start (bool): start from a uniform point of the ball. Default: True.
        clip_start (bool): clip that start to [0,1]. Default: True. The released code does not: its first
            gradient is taken at pixels outside the image box (the paper preset follows it).
        loss ("ce" | "cw"): cross-entropy, or the CW margin max_{i≠y} z_i − z_y. Default: "ce".
        confidence (float | None): for ``loss = "cw"``, the released ``cw_loss``'s κ. None: the plain margin,
            which keeps climbing past the decision boundary. A number κ: −max(z_y − max_i((1−1_y)·z)_i + κ, 0)
            as released, whose gradient vanishes once the margin passes κ, so the attack stops there (and,
            as released, the true class's slot counts as a 0 logit in the max). Default: None.
        restarts (int): independent runs from fresh random starts; an example counts as broken if any run
            breaks it (the run that did is kept; later runs attack only what is left). Default: 1.

    Presets: ``paper`` takes the released code's step 0.007 and unclipped start (CW: also κ = 0).

    Shape:
        x: (N, C, H, W) in [0, 1]; y: (N,) int64 labels; returns x_adv of x's shape.

    Example grid entry::

        [[attacks]]
        plugin = "pgd"
        steps = 20
    """

    display_name: ClassVar[str] = "PGD"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "paper": {"step_size": RELEASED_LINF_STEP, "clip_start": False}}

    steps: int = param(20, "number of steps", minimum=0)
    step_size: float | None = param(None, "step length; None: 4/255 (L∞), ε/4 (L2)", minimum=0)
    random_start: bool = param(True, "start from a uniform point of the ball")
    clip_start: bool = param(True, "clip the random start to [0,1] (the released code does not)")
    loss: Literal["ce", "cw"] = param("ce", "cross-entropy or the CW margin loss")
    confidence: float | None = param(None, "loss 'cw': None, the plain margin; κ, the released clamped cw_loss")
    restarts: int = param(1, "runs from fresh random starts; broken if any run breaks it", minimum=1)

    def check(self) -> None:
        if self.loss == "ce" and self.confidence is not None:
            raise PluginError(f"confidence = {self.confidence!r} is the CW loss's κ; with loss = 'ce' it would be "
                              "ignored. Remove confidence, or set loss = \"cw\"")

    def resolved_step(self, threat: ThreatModel) -> float:
        return default_step(threat, self.step_size)

    def _loss(self, y: Tensor):
        if self.loss == "ce":
            return lambda logits: cross_entropy(logits, y)
        if self.confidence is None:
            return lambda logits: cw_margin(logits, y)
        return lambda logits: released_cw(logits, y, self.confidence)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, generator: torch.Generator) -> Tensor:
        start = threat.random_start(x, generator, clip=self.clip_start) if self.random_start else x
        return ascend(model, x, start, self._loss(y), ball=threat, steps=self.steps, step_size=self.resolved_step(threat))

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                 generator: torch.Generator) -> Tensor:
        x_adv = self._run(model, x, y, threat, generator)
        if self.restarts == 1:
            return x_adv
        with torch.no_grad():
            todo = (model(x_adv).argmax(1) == y).nonzero().flatten()
        for _ in range(self.restarts - 1):
            if not len(todo):
                break
            candidate = self._run(model, x[todo], y[todo], threat, generator)
            x_adv[todo] = candidate
            with torch.no_grad():
                todo = todo[model(candidate).argmax(1) == y[todo]]
        return x_adv

    def passes(self, threat: ThreatModel) -> Passes:
        k = self.steps * self.restarts  # an upper bound: later restarts attack only what is left
        return Passes(k + self.restarts - 1, k)


@dataclass(frozen=True)
class CW(PGD, name="cw"):
    r"""CW-L∞: PGD on the margin loss max_{i≠y} z_i − z_y (not the L2 C&W optimisation).

    Paper: Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", S&P 2017,
    used as a PGD loss as in the Hedge paper. Norm: L∞ and L2.
    Arguments, shapes and presets as ``pgd``; ``loss`` defaults to "cw". Under the ``paper`` preset it
    takes the released ``cw_loss`` (κ = 0), which stops at the decision boundary; the honest default
    does not, so its examples sit deeper inside the wrong class and survive a defense's perturbation
    more often.

    Example grid entry::

        [[attacks]]
        plugin = "cw"
    """

    display_name: ClassVar[str] = "CW"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "paper": {"step_size": RELEASED_LINF_STEP, "clip_start": False, "confidence": 0.0}}

    loss: Literal["ce", "cw"] = param("cw", "cross-entropy or the CW margin loss")
