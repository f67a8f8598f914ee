"""The one steepest-ascent loop behind PGD, CW-L∞, Hedge and reverse Hedge.

Each user supplies only its loss, start point and ball; the loop does the step and projection.
Gradients are taken with ``torch.autograd.grad`` with respect to the input only, so the model's
parameters never receive ``.grad`` and their ``requires_grad`` flags are left alone.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from harness.api.threat import Norm, ThreatModel

LossFn = Callable[[Tensor], Tensor]          # logits (N, C) -> per-example loss (N,)
IterateCallback = Callable[[int, Tensor, Tensor], None]  # (step k, x_k, logits at x_k)


def _direction(grad: Tensor, norm: Norm) -> Tensor:
    if norm is Norm.LINF:
        return grad.sign()
    norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
    return grad / norms.view(-1, *([1] * (grad.dim() - 1)))


def ascend(model: nn.Module, x_center: Tensor, x_start: Tensor, loss_fn: LossFn, *, ball: ThreatModel,
           steps: int, step_size: float, descend: bool = False, observe: IterateCallback | None = None,
           differentiable: bool = False) -> Tensor:
    """Run ``steps`` normalised-gradient steps on ``loss_fn(model(x))`` from ``x_start``.

    Every iterate is projected into ``ball`` around ``x_center`` and into [0,1]. ``observe`` sees
    the logits of each iterate x_0 … x_{K−1}, which the loop computes anyway (the released Hedge
    code predicts from them). Returns x_K, detached.

    ``differentiable=True`` keeps the iterates in the autograd graph of ``x_center`` so that a caller
    can differentiate through the unrolled loop. The step direction is treated as a constant, which
    is exact for L∞ (the derivative of sign is zero almost everywhere).
    """
    sign = -1.0 if descend else 1.0
    x = x_start if differentiable else x_start.detach()
    for k in range(steps):
        with torch.enable_grad():
            if not differentiable:
                x.requires_grad_(True)
            elif not x.requires_grad:
                x = x.clone().requires_grad_(True)
            logits = model(x)
            loss = loss_fn(logits).sum()  # per-example losses summed: gradients stay per example
            (grad,) = torch.autograd.grad(loss, x, retain_graph=differentiable)
        if observe is not None:  # with differentiable=True the logits stay in the graph (released Hedge's sum)
            observe(k, x if differentiable else x.detach(), logits if differentiable else logits.detach())
        base = x if differentiable else x.detach()
        x = ball.project(base + sign * step_size * _direction(grad.detach(), ball.norm), x_center)
    return x if differentiable else x.detach()
