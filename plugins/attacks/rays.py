"""RayS, the hard-label ray-search attack, batched; written here because no library has it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from harness.interfaces import Access, Attack, AttackOutput, Passes
from harness.specs import param
from harness.threat import Norm, ThreatModel


@dataclass(frozen=True)
class RayS(Attack):
    r"""RayS: search over sign directions (rays) for the nearest L∞ decision boundary, labels only.

    Paper: Chen & Gu, "RayS: A Ray Searching Method for Hard-label Adversarial Attack", KDD 2020.
    Norm: L∞ only. Hard-label: it sees only the predicted class, never logits or gradients.

    The search flips the sign of ever smaller blocks of the direction (hierarchical, as in the
    paper) and keeps a flip when the boundary along the new ray is closer, found by binary search
    (tolerance 1e-3 in the paper's L2-normalised units). Every example of the batch advances in
    lock-step, one model query per forward pass; queries are counted exactly per example and no
    example exceeds ``n_queries``. An example stops once its boundary is within ε (success); an
    example that never gets there is returned unchanged.

    Arguments:
        n_queries (int): query budget per example. Default: 10,000.

    Returns an ``AttackOutput`` with per-example query counts.

    Example grid entry::

        [[attacks]]
        plugin = "rays"
        n_queries = 10000
    """

    display_name: ClassVar[str] = "RayS"

    access: ClassVar[Access] = Access.BLACK_BOX

    n_queries: int = param(10000, "query budget per example", minimum=1)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                 generator: torch.Generator) -> AttackOutput:
        if threat.norm is not Norm.LINF:
            raise ValueError("rays is an L∞ attack; use it in a grid with norm = \"Linf\"")
        n, dim = len(x), x[0].numel()
        tol = 1e-3 / math.sqrt(dim)            # the paper's tolerance, in L∞ units
        flat = x.flatten(1)
        sign = torch.ones_like(flat)
        best = torch.full((n,), float("inf"), device=x.device)   # d_t: boundary distance along the best ray
        queries = torch.zeros(n, dtype=torch.long, device=x.device)

        def is_adv(idx: Tensor, directions: Tensor, d: Tensor) -> Tensor:
            """One query for each example in idx: is x + d·direction (clipped) misclassified?"""
            queries[idx] += 1
            point = (flat[idx] + d[:, None] * directions).clamp(0, 1).view(-1, *x.shape[1:])
            with torch.no_grad():
                return model(point).argmax(1) != y[idx]

        everyone = torch.arange(n, device=x.device)
        done = is_adv(everyone, torch.zeros_like(flat), torch.zeros(n, device=x.device))  # already wrong
        best[done] = 0.0
        level, block = 0, 0
        while True:
            active = (~done & (queries < self.n_queries)).nonzero().flatten()
            if len(active) == 0:
                break
            size = math.ceil(dim / 2**level)
            start, end = block * size, min(dim, (block + 1) * size)
            attempt = sign[active].clone()
            attempt[:, start:end] *= -1
            # the ray must beat the current best: first check at d_t (the corner when d_t is inf)
            d_hi = best[active].clamp(max=1.0)
            ok = is_adv(active, attempt, d_hi)
            idx, attempt, d_hi = active[ok], attempt[ok], d_hi[ok]
            d_lo = torch.zeros_like(d_hi)
            searching = (d_hi - d_lo > tol) & (queries[idx] < self.n_queries)
            while searching.any():
                s = searching.nonzero().flatten()
                mid = (d_lo[s] + d_hi[s]) / 2
                adv = is_adv(idx[s], attempt[s], mid)
                d_hi[s[adv]], d_lo[s[~adv]] = mid[adv], mid[~adv]
                searching = (d_hi - d_lo > tol) & (queries[idx] < self.n_queries)
            better = d_hi < best[idx]
            best[idx[better]], sign[idx[better]] = d_hi[better], attempt[better]
            done |= best <= threat.eps
            block += 1
            if block == 2**level or end == dim:
                level, block = level + 1, 0
        x_adv = (flat + best.clamp(max=1.0)[:, None] * sign).clamp(0, 1).view_as(x)
        success = best <= threat.eps
        x_adv = torch.where(success.view(-1, *[1] * (x.dim() - 1)), x_adv, x)
        return AttackOutput(threat.project(x_adv, x), queries)

    def passes(self, threat: ThreatModel) -> Passes:
        return Passes(self.n_queries, 0)
