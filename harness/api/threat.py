"""Threat models: the ε-ball an attack must stay in, and the checks the runner applies."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch
from torch import Tensor


class Norm(str, Enum):
    LINF = "Linf"
    L2 = "L2"


def distance(x_adv: Tensor, x: Tensor, norm: Norm) -> Tensor:
    """Per-example distance ‖x_adv − x‖ in the given norm, shape (N,)."""
    delta = (x_adv - x).flatten(1)
    if norm is Norm.LINF:
        return delta.abs().amax(dim=1)
    return delta.norm(p=2, dim=1)


@dataclass(frozen=True)
class ThreatModel:
    """An L∞ or L2 ball of radius ``eps`` around each input, intersected with the box [0,1]."""

    norm: Norm
    eps: float

    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Nearest point (per example) of the ball around ``x``, then clipped to [0,1]."""
        delta = x_adv - x
        if self.norm is Norm.LINF:
            delta = delta.clamp(-self.eps, self.eps)
        else:
            norms = delta.flatten(1).norm(p=2, dim=1).clamp_min(1e-12)
            factor = (self.eps / norms).clamp(max=1.0)
            delta = delta * factor.view(-1, *([1] * (x.dim() - 1)))
        return (x + delta).clamp(0.0, 1.0)

    def distance(self, x_adv: Tensor, x: Tensor) -> Tensor:
        return distance(x_adv, x, self.norm)

    def excess(self, x_adv: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per example, how far x_adv lies outside the ball (distance − ε) and outside [0,1] (≤ 0 inside)."""
        flat = x_adv.flatten(1)
        outside_box = torch.maximum(-flat.amin(dim=1), flat.amax(dim=1) - 1)
        return self.distance(x_adv, x) - self.eps, outside_box

    def contains(self, x_adv: Tensor, x: Tensor, tol: float = 1e-5) -> Tensor:
        """Boolean (N,): inside the ball and inside [0,1], each up to ``tol``."""
        ball, box = self.excess(x_adv, x)
        return (ball <= tol) & (box <= tol)

    def random_start(self, x: Tensor, generator: torch.Generator, clip: bool = True) -> Tensor:
        """A uniform point of the L∞ ball, or a random direction with uniform radius in L2; clipped to [0,1]
        unless ``clip`` is False (the released Hedge code's starts are not)."""
        if self.norm is Norm.LINF:
            start = x + torch.empty_like(x).uniform_(-self.eps, self.eps, generator=generator)
            return self.project(start, x) if clip else start
        direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
        radius = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype) * self.eps
        start = x + direction * radius.view(-1, *([1] * (x.dim() - 1)))
        return self.project(start, x) if clip else start
