"""Batched DeepFool (L∞ and L2), written here because torchattacks' DeepFool is L2-only and loops
over single examples; this one takes every example of the batch through each step together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from harness.api import Attack, Norm, Passes, ThreatModel, param


def _dual_norm(grad: Tensor, norm: Norm) -> Tensor:
    flat = grad.flatten(2)  # (N, K, D)
    return flat.abs().sum(-1) if norm is Norm.LINF else flat.norm(dim=-1)


def _step(distance: Tensor, grad: Tensor, norm: Norm) -> Tensor:
    """The smallest step that reaches the linearised boundary: ε·sign(w) in L∞, ε·w/‖w‖ in L2."""
    shape = (-1,) + (1,) * (grad.dim() - 1)
    if norm is Norm.LINF:
        return distance.view(shape) * grad.sign()
    return distance.view(shape) * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)


@dataclass(frozen=True)
class DeepFool(Attack, name="deepfool"):
    r"""DeepFool: iterate to the nearest linearised decision boundary, then overshoot.

    Paper: Moosavi-Dezfooli et al., "DeepFool: a simple and accurate method to fool deep neural
    networks", CVPR 2016; the L∞ variant as in foolbox's ``LinfDeepFoolAttack``.
    Norm: L∞ and L2. A minimum-norm attack: the result is projected into the ε-ball, as foolbox
    does with ``epsilons=ε``, and counts only if it still fools the model there.

    Arguments:
        steps (int): maximum iterations. Default: 50.
        overshoot (float): x_adv = x + (1 + overshoot)·Σ r_i. Default: 0.02.
        candidates (int): classes considered, the most likely first. Default: 10.

    Shape: x (N, C, H, W) in [0,1], y (N,); returns x_adv of x's shape.

    Example grid entry::

        [[attacks]]
        plugin = "deepfool"
    """

    display_name: ClassVar[str] = "DeepFool"
    full_precision: ClassVar[bool] = True    # a minimum-norm point, on the boundary: fp32 under a bf16 grid

    steps: int = param(50, "maximum iterations", minimum=0)
    overshoot: float = param(0.02, "overshoot factor", minimum=0)
    candidates: int = param(10, "classes considered, most likely first", minimum=2)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                 generator: torch.Generator) -> Tensor:
        return threat.project(self.minimal(model, x, y, threat.norm), x)

    def minimal(self, model: nn.Module, x: Tensor, y: Tensor, norm: Norm) -> Tensor:
        """The unclipped DeepFool point of every example (the batch goes through each step together)."""
        with torch.no_grad():
            logits = model(x)
        k = min(self.candidates, logits.shape[1])
        # reference class: the label; candidates: the k−1 most likely other classes at the start
        others = logits.scatter(1, y[:, None], float("-inf")).argsort(dim=1, descending=True)[:, : k - 1]
        total = torch.zeros_like(x)
        x_adv = x.clone()
        active = logits.argmax(1) == y
        for _ in range(self.steps):
            idx = active.nonzero().flatten()
            if len(idx) == 0:
                break
            xi = x_adv[idx].detach().requires_grad_(True)
            out = model(xi)
            fooled = out.argmax(1) != y[idx]          # this step's forward pass doubles as the stopping test
            active[idx[fooled]] = False
            keep = (~fooled).nonzero().flatten()
            if len(keep) == 0:
                break
            idx, rows = idx[keep], torch.arange(len(keep), device=x.device)
            out = out[keep]
            diffs = out.gather(1, others[idx]) - out[rows, y[idx]][:, None]   # (n, K−1): f_k − f_y
            grads = torch.stack([torch.autograd.grad(diffs[:, j].sum(), xi, retain_graph=j < diffs.shape[1] - 1)[0][keep]
                                 for j in range(diffs.shape[1])], dim=1)       # (n, K−1, C, H, W)
            distances = diffs.detach().abs() / (_dual_norm(grads, norm) + 1e-8)
            best = distances.argmin(1)
            total[idx] += _step(distances[rows, best] + 1e-4, grads[rows, best], norm)
            x_adv[idx] = (x[idx] + (1 + self.overshoot) * total[idx]).clamp(0, 1)
        return x_adv.detach()

    def passes(self, threat: ThreatModel) -> Passes:
        return Passes(self.steps + 1, self.steps * (self.candidates - 1))
