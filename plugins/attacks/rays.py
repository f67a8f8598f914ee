"""RayS, the hard-label ray-search attack, batched; written here because no library has it."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from harness.api import Access, Attack, AttackOutput, Norm, Passes, ThreatModel, param


@dataclass(frozen=True)
class RayS(Attack, name="rays"):
    r"""RayS: search over sign directions (rays) for the nearest L∞ decision boundary, labels only.

    Paper: Chen & Gu, "RayS: A Ray Searching Method for Hard-label Adversarial Attack", KDD 2020.
    Norm: L∞ only. Hard-label: it sees only the predicted class, never logits or gradients.

    The search flips the sign of ever smaller blocks of the direction (hierarchical, as in the
    paper) and keeps a flip when the boundary along the new ray is closer, found by binary search
    (tolerance 1e-3 in the paper's L2-normalised units). Every example of the batch advances in
    lock-step, one model query per forward pass; queries are counted exactly per example.

    As the official batch code (uclaml/RayS) and the Hedge paper's copy of it, every example spends
    its whole budget: after a first boundary within ε it keeps shrinking the distance, so the point
    it returns sits just across the decision boundary. The returned point is that nearest boundary
    point, projected into the ε-ball (as the Hedge paper's copy does), whether or not it is within ε.
    Differences, on purpose: a binary search never takes an example past ``n_queries`` (the official
    one can overshoot by a few queries), and the clean input is not queried first.

    Arguments:
        n_queries (int): query budget per example. Default: 10,000.
        early_stop (bool): stop an example at its first boundary within ε (fewer queries; the point is
            then farther from the boundary than the official code's). Default: False.

    Returns an ``AttackOutput`` with per-example query counts.

    Example grid entry::

        [[attacks]]
        plugin = "rays"
        n_queries = 10000
    """

    display_name: ClassVar[str] = "RayS"

    access: ClassVar[Access] = Access.BLACK_BOX
    norms: ClassVar[tuple[Norm, ...]] = (Norm.LINF,)
    full_precision: ClassVar[bool] = True    # it stops on the boundary: run in fp32 under a bf16 grid

    n_queries: int = param(10000, "query budget per example", minimum=1)
    early_stop: bool = param(False, "stop an example at its first boundary within ε (the official code does not)")

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                 generator: torch.Generator) -> AttackOutput:
        if threat.norm is not Norm.LINF:
            raise ValueError("rays is an L∞ attack; use it in a grid with norm = \"Linf\"")
        n, dim = len(x), x[0].numel()
        tol = 1e-3                              # the official tolerance, in units of the normalised ray
        flat = x.flatten(1)
        sign = torch.ones_like(flat)            # sgn_t: the best ray's signs
        best = torch.full((n,), float("inf"), device=x.device)   # d_t: boundary distance along it
        final = (flat + sign).clamp(0, 1)       # x_final: the boundary point found (the corner at first)
        queries = torch.zeros(n, dtype=torch.long, device=x.device)

        def is_adv(idx: Tensor, unit: Tensor, d: Tensor) -> Tensor:
            """One query for each example in idx: is x + d·unit (clipped to [0,1]) misclassified?"""
            queries[idx] += 1
            point = (flat[idx] + d[:, None] * unit).clamp(0, 1).view(-1, *x.shape[1:])
            with torch.no_grad():
                return model(point).argmax(1) != y[idx]

        done = torch.zeros(n, dtype=torch.bool, device=x.device)   # early_stop only: within ε already
        level, block = 0, 0
        while True:
            active = (~done & (queries < self.n_queries)).nonzero().flatten()
            if len(active) == 0:
                break
            size = math.ceil(dim / 2**level)
            start, end = block * size, min(dim, (block + 1) * size)
            attempt = sign[active].clone()
            attempt[:, start:end] *= -1
            unit = attempt / attempt.norm(dim=1, keepdim=True)
            # the ray must beat the current best: first check at d_t (the corner while d_t is inf)
            ok = is_adv(active, unit, best[active])
            idx, attempt, unit = active[ok], attempt[ok], unit[ok]
            d_hi = torch.minimum(best[idx], attempt.norm(dim=1))
            d_lo = torch.zeros_like(d_hi)
            searching = queries[idx] < self.n_queries
            while searching.any():
                s = searching.nonzero().flatten()
                mid = (d_lo[s] + d_hi[s]) / 2
                adv = is_adv(idx[s], unit[s], mid)
                d_hi[s[adv]], d_lo[s[~adv]] = mid[adv], mid[~adv]
                searching = (d_hi - d_lo > tol) & (queries[idx] < self.n_queries)
            better = d_hi < best[idx]
            chosen = idx[better]
            best[chosen], sign[chosen] = d_hi[better], attempt[better]
            final[chosen] = (flat[chosen] + d_hi[better][:, None] * unit[better]).clamp(0, 1)
            if self.early_stop:
                done |= (final - flat).abs().amax(dim=1) <= threat.eps
            block += 1
            if block == 2**level or end == dim:
                level, block = level + 1, 0
        # the nearest boundary point found (the corner where none was), projected into the ball
        return AttackOutput(threat.project(final.view_as(x), x), queries)

    def passes(self, threat: ThreatModel) -> Passes:
        return Passes(self.n_queries, 0)

    def scaled(self, factor: int) -> RayS:
        return dataclasses.replace(self, n_queries=self.n_queries * factor)
