"""PGD and CW-L∞: one loop (harness.sign_gradient.ascend), two losses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from harness.interfaces import Attack, Passes
from harness.losses import cross_entropy, cw_margin
from harness.sign_gradient import ascend
from harness.specs import param
from harness.threat import Norm, ThreatModel

PAPER_LINF_STEP = 4 / 255     # the step the paper's text gives
RELEASED_LINF_STEP = 0.007    # the step its released code used

_LOSSES = {"ce": cross_entropy, "cw": cw_margin}


def default_step(threat: ThreatModel, step_size: float | None, linf: float = PAPER_LINF_STEP) -> float:
    """The step a sign-gradient attack takes unless given one: ``linf`` under L∞ (the paper's 4/255), ε/4 under L2."""
    if step_size is not None:
        return step_size
    return linf if threat.norm is Norm.LINF else threat.eps / 4


@dataclass(frozen=True)
class PGD(Attack):
    r"""PGD on the cross-entropy loss, with a random start.

    Paper: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018.
    Norm: L∞ and L2.

    Arguments:
        steps (int): number of steps. Default: 20 (the Hedge paper's protocol).
        step_size (float | None): step length. Default: None, meaning 4/255 under L∞
            (or 0.007 with ``preset="released"``) and ε/4 under L2.
        random_start (bool): start from a uniform point of the ball. Default: True.
        preset ("paper" | "released"): which L∞ step the default takes. Default: "paper".
        loss ("ce" | "cw"): cross-entropy, or the CW margin max_{i≠y} z_i − z_y. Default: "ce".

    Shape:
        x: (N, C, H, W) in [0, 1]; y: (N,) int64 labels; returns x_adv of x's shape.

    Example grid entry::

        [[attacks]]
        plugin = "pgd"
        steps = 20
    """

    display_name: ClassVar[str] = "PGD"

    steps: int = param(20, "number of steps", minimum=0)
    step_size: float | None = param(None, "step length; None: 4/255 (L∞, or 0.007 with preset='released'), ε/4 (L2)", minimum=0)
    random_start: bool = param(True, "start from a uniform point of the ball")
    preset: Literal["paper", "released"] = param("paper", "which L∞ default step: the paper's text or its released code")
    loss: Literal["ce", "cw"] = param("ce", "cross-entropy or the CW margin loss")

    def resolved_step(self, threat: ThreatModel) -> float:
        linf = RELEASED_LINF_STEP if self.preset == "released" else PAPER_LINF_STEP
        return default_step(threat, self.step_size, linf)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                 generator: torch.Generator) -> Tensor:
        start = threat.random_start(x, generator) if self.random_start else x
        loss = _LOSSES[self.loss]
        return ascend(model, x, start, lambda logits: loss(logits, y), ball=threat,
                      steps=self.steps, step_size=self.resolved_step(threat))

    def passes(self, threat: ThreatModel) -> Passes:
        return Passes(self.steps, self.steps)


@dataclass(frozen=True)
class CW(PGD):
    r"""CW-L∞: PGD on the margin loss max_{i≠y} z_i − z_y (not the L2 C&W optimisation).

    Paper: Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", S&P 2017,
    used as a PGD loss as in the Hedge paper. Norm: L∞ and L2.
    Arguments, shapes and presets as ``pgd``; ``loss`` defaults to "cw".

    Example grid entry::

        [[attacks]]
        plugin = "cw"
    """

    display_name: ClassVar[str] = "CW"

    loss: Literal["ce", "cw"] = param("cw", "cross-entropy or the CW margin loss")
