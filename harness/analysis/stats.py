"""Statistics that fit per-example robustness data: Wilson intervals for one accuracy, and paired comparisons.

Every defense in a grid is scored on the same examples, and the store keeps one row per example, so
two settings are compared pair by pair: only the examples on which they disagree carry information.
The difference of two paired accuracies gets Newcombe's (1998) method 10 interval (Wilson score
limits for each accuracy, combined with the continuity-corrected correlation of the pairs) and the
exact McNemar test on the discordant counts. Intervals for independent samples, or two overlapping
Wilson intervals, are far too cautious for paired data.

Wilson rather than the normal approximation because robust accuracies sit near 0 and small test
sets are common; the normal interval then leaves [0, 1] or collapses to a point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054


def wilson(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``p`` observed on ``n`` examples (p in [0,1])."""
    if n <= 0:
        return 0.0, 1.0
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: the binomial test of b successes in b + c trials at 1/2."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class Paired:
    """Two settings scored on the same n examples: A right and B wrong (b), A wrong and B right (c).

    ``difference`` is acc(A) − acc(B) = (b − c)/n, with its 95 % interval (Newcombe's method 10) and the
    exact McNemar p-value."""

    n: int
    both: int            # right under both
    b: int               # right under A only
    c: int               # right under B only
    neither: int

    @property
    def difference(self) -> float:
        return (self.b - self.c) / self.n if self.n else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return newcombe_paired(self.both, self.b, self.c, self.neither)

    @property
    def p_value(self) -> float:
        return mcnemar_exact(self.b, self.c)

    @property
    def distinguishable(self) -> bool:
        low, high = self.interval
        return low > 0 or high < 0

    def examples_needed(self, limit: int = 10_000_000) -> int | None:
        """The fewest examples at which, with this difference and this discordance, the interval excludes 0.

        The counts are scaled to n examples at the observed rates (rounded); None if they cannot be told
        apart at any size (no difference) or only beyond ``limit``."""
        if self.b == self.c or not self.n:
            return None

        def excludes_zero(m: int) -> bool:
            scale = m / self.n
            b, c = round(self.b * scale), round(self.c * scale)
            both = round(self.both * scale)
            return b != c and Paired(m, both, b, c, max(m - both - b - c, 0)).distinguishable

        low, high = self.n, self.n
        while not excludes_zero(high):
            low, high = high, high * 2
            if high > limit:
                return None
        while low < high:  # monotone in m for fixed rates, up to rounding
            middle = (low + high) // 2
            if excludes_zero(middle):
                high = middle
            else:
                low = middle + 1
        return high


def paired(a: list[int] | tuple[int, ...], b: list[int] | tuple[int, ...]) -> Paired:
    """Pair two per-example correctness vectors (1 right, 0 wrong) over the same examples."""
    if len(a) != len(b):
        raise ValueError(f"paired samples must have one entry per example each; got {len(a)} and {len(b)}")
    both = sum(1 for x, y in zip(a, b) if x and y)
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    return Paired(len(a), both, only_a, only_b, len(a) - both - only_a - only_b)


def newcombe_paired(both: int, b: int, c: int, neither: int, z: float = Z95) -> tuple[float, float]:
    """95 % interval for p1 − p2 = (b − c)/n of paired proportions: Newcombe (1998), method 10.

    p1 = (both + b)/n and p2 = (both + c)/n, Wilson limits (l1, u1) and (l2, u2), and φ the correlation of the
    pairs with Newcombe's continuity correction (A = both·neither − b·c: φ = (A − n/2)/√… when A > n/2, 0 when
    0 ≤ A ≤ n/2, A/√… when A < 0; 0 when a margin is empty):
        L = θ − √((p1 − l1)² − 2φ(p1 − l1)(u2 − p2) + (u2 − p2)²)
        U = θ + √((p2 − l2)² − 2φ(p2 − l2)(u1 − p1) + (u1 − p1)²)
    """
    n = both + b + c + neither
    if n == 0:
        return -1.0, 1.0
    p1, p2 = (both + b) / n, (both + c) / n
    l1, u1 = wilson(p1, n, z)
    l2, u2 = wilson(p2, n, z)
    margins = (both + b) * (c + neither) * (both + c) * (b + neither)
    if margins == 0:
        phi = 0.0
    else:
        a = both * neither - b * c
        phi = (a - n / 2) / math.sqrt(margins) if a > n / 2 else 0.0 if a >= 0 else a / math.sqrt(margins)
    theta = p1 - p2
    lower = theta - math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    upper = theta + math.sqrt(max((p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2, 0.0))
    return max(-1.0, lower), min(1.0, upper)
