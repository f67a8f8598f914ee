"""Confidence intervals for accuracies: 95 % Wilson score intervals, and how many examples two rows need.

Wilson rather than the normal approximation because robust accuracies sit near 0 and small test
sets are common; the normal interval then leaves [0, 1] or collapses to a point.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054


def wilson(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``p`` observed on ``n`` examples (p in [0,1])."""
    if n <= 0:
        return 0.0, 1.0
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def separated(p: float, q: float, n: int) -> bool:
    """Whether the 95 % intervals of two accuracies measured on ``n`` examples each do not overlap."""
    lo_p, hi_p = wilson(p, n)
    lo_q, hi_q = wilson(q, n)
    return hi_p < lo_q or hi_q < lo_p


def examples_needed(p: float, q: float, limit: int = 10_000_000) -> int | None:
    """The fewest examples at which accuracies ``p`` and ``q`` have disjoint 95 % intervals (None if equal)."""
    if p == q:
        return None
    low, high = 1, 1
    while not separated(p, q, high):
        low, high = high, high * 2
        if high > limit:
            return None
    while low < high:  # separation is monotone in n for fixed p, q
        middle = (low + high) // 2
        if separated(p, q, middle):
            high = middle
        else:
            low = middle + 1
    return high
