"""Two settings scored on the same examples, compared pair by pair over repeats (harness.analysis.stats).

Each repeat is its own set of pairs: a row gives the mean difference and its spread, the widest interval
and the largest p-value of its repeats, and it is distinguishable only if every repeat's interval excludes
0 on the same side. The report's paired sections and ``harness compare`` both build their rows here.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from harness.analysis.stats import Paired, paired


@dataclass(frozen=True)
class PairedRow:
    """Setting A against setting B on the same examples, in percentage points."""

    model: str
    what: str                # the column compared: an attack, or a worst case
    first: str               # A
    second: str              # B
    acc_first: float         # mean over repeats
    acc_second: float
    difference: float        # acc(A) − acc(B), mean over repeats
    spread: float            # its standard deviation over repeats (0 for one repeat)
    low: float               # the widest 95 % interval over repeats (Newcombe, paired)
    high: float
    p_value: float           # exact McNemar, the largest over repeats
    only_first: int          # right under A only (summed over repeats)
    only_second: int
    n: int                   # examples per repeat
    repeats: int
    needed: int | None       # examples that would tell them apart at the observed rates (when they cannot be)

    @property
    def distinguishable(self) -> bool:
        return self.low > 0 or self.high < 0


def pair_examples(a: pd.DataFrame, b: pd.DataFrame, model: str, what: str, first: str, second: str) -> PairedRow | None:
    """Pair two per-example frames (repeat, idx, correct) on (repeat, idx)."""
    merged = a.merge(b, on=["repeat", "idx"], suffixes=("_a", "_b"))
    if merged.empty:
        return None
    per_repeat: list[Paired] = [paired(g.correct_a.tolist(), g.correct_b.tolist()) for _, g in merged.groupby("repeat")]
    diffs = pd.Series([p.difference for p in per_repeat]) * 100
    intervals = [p.interval for p in per_repeat]
    low, high = min(i[0] for i in intervals) * 100, max(i[1] for i in intervals) * 100
    same_side = all(i[0] > 0 for i in intervals) or all(i[1] < 0 for i in intervals)
    if not same_side:  # report the widest interval, which then contains 0 unless every repeat agrees
        low, high = min(low, 0.0), max(high, 0.0)
    return PairedRow(
        model=model, what=what, first=first, second=second,
        acc_first=float(merged.groupby("repeat").correct_a.mean().mean() * 100),
        acc_second=float(merged.groupby("repeat").correct_b.mean().mean() * 100),
        difference=float(diffs.mean()), spread=float(diffs.std(ddof=1)) if len(diffs) > 1 else 0.0,
        low=low, high=high, p_value=max(p.p_value for p in per_repeat),
        only_first=sum(p.b for p in per_repeat), only_second=sum(p.c for p in per_repeat),
        n=min(p.n for p in per_repeat), repeats=len(per_repeat),
        needed=None if same_side else _pooled(per_repeat).examples_needed())


def _pooled(per_repeat: list[Paired]) -> Paired:
    """All repeats' pairs as one set: the observed rates, for how many examples would tell the two apart."""
    return Paired(*(sum(getattr(p, f) for p in per_repeat) for f in ("n", "both", "b", "c", "neither")))
