"""The reproduction section: a paper's reported numbers (the grid's ``[reported]`` table) beside the measured ones.

Each reported cell gets the measured accuracy (mean over repeats), the difference, and whether the reported
value lies inside the measured 95 % Wilson interval; each model gets one line that says what agrees and what
does not. The measured interval is the sampling error of this run only: a paper's number measured on 10,000
images has an interval of its own, about ±1 point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from harness.analysis.aggregate import WORST, WORST_TRANSFER, worst_columns
from harness.analysis.notices import Notice
from harness.analysis.stats import wilson
from harness.api.interfaces import Role
from harness.grid.reported import REPORTED_WORST, Reported
from harness.storage.records import RunRecord
from harness_reports.naming import COLUMN_NAMES

BENCHMARK_SLACK = 1.0   # points a benchmark attack may measure above the reported value before it is flagged
VERDICT_HALF_WIDTH = 5.0   # no agree/disagree verdict while a measured interval is wider than ± this many points


def examples_for(half_width: float) -> int:
    """The fewest examples that bring the widest Wilson interval (an accuracy near 50 %) to ± ``half_width``
    points. The Wald formula z²/4h² is an upper bound (Wilson's interval is the narrower), so count down from it."""
    n = math.ceil(1.96 ** 2 * 0.25 / (half_width / 100) ** 2)
    while n > 1 and _widest_half_width(n - 1) <= half_width:
        n -= 1
    return n


def _widest_half_width(n: int) -> float:
    low, high = wilson(0.5, n)
    return 100 * (high - low) / 2


def _examples(rows: list[ReproductionRow]) -> str:
    return f"{min(r.n for r in rows if r.n is not None):,}"


@dataclass(frozen=True)
class ReproductionRow:
    model: str
    defense: str             # as shown
    column: str              # as shown: an attack, or the worst case
    reported: float          # %
    measured: float | None   # % (mean over repeats); None: not measured in this run
    low: float | None        # the measured 95 % Wilson interval
    high: float | None
    benchmark: bool          # a standard evaluation (AutoAttack) of the reference defense
    n: int | None = None     # the examples the measured accuracy was taken over

    @property
    def difference(self) -> float | None:
        return None if self.measured is None else self.measured - self.reported

    @property
    def inside(self) -> bool | None:
        return None if self.low is None else self.low <= self.reported <= self.high


@dataclass(frozen=True)
class Reproduction:
    source: str
    measured_on: str
    data_note: str | None            # where the run's data differ from the paper's
    rows: tuple[ReproductionRow, ...]
    summaries: tuple[str, ...]       # one line per model


def _measured_key(attack: str, run: RunRecord) -> str | None:
    if attack != REPORTED_WORST:
        return attack
    columns = worst_columns(run)
    return WORST_TRANSFER if WORST_TRANSFER in columns else WORST if WORST in columns else None


def reproduction(run: RunRecord, table_cells: pd.DataFrame, names: dict[str, str]) -> Reproduction | None:
    if not run.reported:
        return None
    reported = Reported.from_json(run.reported)
    lookup = {(r.model, r.defense, r.key): r for r in table_cells.itertuples()}
    benchmarks = {a["label"] for a in run.entries("attacks") if a.get("benchmark")}
    references = set(run.with_role("defenses", Role.REFERENCE))
    rows = []
    for value in reported.values:
        key = _measured_key(value.attack, run)
        cell = lookup.get((value.model, value.defense, key))
        low = high = None
        if cell is not None:
            low, high = (100 * b for b in wilson(cell.mean / 100, int(cell.n)))
        column = COLUMN_NAMES[WORST] if value.attack == REPORTED_WORST else names.get(value.attack, value.attack)
        rows.append(ReproductionRow(value.model, names.get(value.defense, value.defense), column, value.accuracy,
                                    None if cell is None else float(cell.mean), low, high,
                                    value.attack in benchmarks and value.defense in references,
                                    None if cell is None else int(cell.n)))
    return Reproduction(reported.source, reported.measured_on, _data_note(run, reported), tuple(rows),
                        tuple(_summaries(rows, dict(reported.notes))))


def _data_note(run: RunRecord, reported: Reported) -> str | None:
    if run.dataset_display == reported.measured_on:
        return None
    note = (f"The reported values were measured on {reported.measured_on}; this run measured on "
            f"{run.dataset_display}, which is different data")
    if run.dataset_caveat:
        note += f" ({run.dataset_caveat.rstrip('.')})"
    return note + ". Differences include that change, not only the method's."


def _summaries(rows: list[ReproductionRow], notes: dict[str, str]) -> list[str]:
    lines = []
    for model in dict.fromkeys(r.model for r in rows):
        mine = [r for r in rows if r.model == model and r.measured is not None]
        if model in notes:
            lines.append(f"{model}: {notes[model].rstrip('.')}; not compared.")
            continue
        if not mine:
            lines.append(f"{model}: none of its reported values was measured in this run.")
            continue
        widest = max((r.high - r.low) / 2 for r in mine)
        if widest > VERDICT_HALF_WIDTH:
            lines.append(f"{model}: no verdict: its measured 95% intervals reach ±{widest:.0f} points on "
                         f"{_examples(mine)} examples; about {examples_for(VERDICT_HALF_WIDTH)} examples would bring "
                         f"them to ±{VERDICT_HALF_WIDTH:.0f}.")
            continue
        off = sorted((r for r in mine if not r.inside), key=lambda r: -abs(r.difference))
        text = f"{model}: {len(mine) - len(off)} of {len(mine)} reported values lie inside the measured 95% intervals"
        if off:
            shown = ", ".join(f"{r.column} with {r.defense} ({r.difference:+.2f})" for r in off[:4])
            text += f"; outside: {shown}" + (f" and {len(off) - 4} more" if len(off) > 4 else "")
        lines.append(text + ".")
    return lines


def benchmark_above_reported(found: Reproduction | None) -> list[Notice]:
    """AutoAttack's own check, against the paper: the undefended model measured clearly above its reported value."""
    if found is None:
        return []
    return [Notice("above-reported", f"{r.model}: {r.column} measures {r.measured:.2f}% without a defense, "
                   f"{r.difference:.2f} points above the reported {r.reported:.2f}% (the reported value lies "
                   f"{'inside' if r.inside else 'outside'} the measured 95% interval): a weaker attack than the "
                   "paper's, or different data.")
            for r in found.rows if r.benchmark and r.difference is not None and r.difference > BENCHMARK_SLACK]
