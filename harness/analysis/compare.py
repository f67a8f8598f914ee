"""Two runs, example by example: the same grid in fp32 and bf16, on a CPU and a GPU, at two versions,
or under the paper's preset and the honest one.

Rows are matched by (model, attack, defense, repeat, example); a cell is one (model, attack, defense),
compared over the examples and repeats both runs evaluated (harness.analysis.pairing). Cells and examples that
only one run has are listed, not compared.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from harness.analysis.pairing import PairedRow, pair_examples
from harness.api.errors import HarnessError
from harness.storage.queries import predictions
from harness.storage.records import RunRecord
from harness.storage.store import Store

CELL = ["model", "attack", "defense"]
PAIR = ["repeat", "idx"]


@dataclass(frozen=True)
class CellComparison:
    """One (model, attack, defense) of run A against the same cell of run B."""

    model: str
    attack: str
    defense: str
    paired: PairedRow        # A against B: accuracies, difference, interval, McNemar p, in points
    changed: float           # share of the pairs whose predicted class differs, %


@dataclass(frozen=True)
class RunComparison:
    first: RunRecord
    second: RunRecord
    cells: tuple[CellComparison, ...]
    only_first: tuple[str, ...]       # "model × attack × defense" cells that run B lacks
    only_second: tuple[str, ...]
    unmatched_first: int              # rows of shared cells whose (repeat, example) run B lacks
    unmatched_second: int

    def beyond(self, points: float) -> list[CellComparison]:
        """Cells whose accuracies differ by more than ``points`` percentage points (either way)."""
        return [c for c in self.cells if abs(c.paired.difference) > points]

    def table(self) -> pd.DataFrame:
        """One row per cell: both accuracies, the paired difference and interval, changed predictions, p."""
        rows = [{"model": c.model, "attack": c.attack, "defense": c.defense,
                 "A %": f"{c.paired.acc_first:.2f}", "B %": f"{c.paired.acc_second:.2f}",
                 "A − B": f"{c.paired.difference:+.2f}",
                 "95% paired interval": f"{c.paired.low:+.2f} to {c.paired.high:+.2f}",
                 "changed %": f"{c.changed:.1f}", "McNemar p": f"{c.paired.p_value:.3g}",
                 "n": c.paired.n * c.paired.repeats} for c in self.cells]
        return pd.DataFrame(rows).set_index(CELL) if rows else pd.DataFrame()


def _cell_names(frame: pd.DataFrame) -> set[tuple[str, str, str]]:
    return set(frame[CELL].drop_duplicates().itertuples(index=False, name=None))


def compare_runs(first: tuple[Store, RunRecord], second: tuple[Store, RunRecord]) -> RunComparison:
    """Run A (``first``) against run B, on the cells and examples they share."""
    a, b = predictions(first[0], first[1].run_id), predictions(second[0], second[1].run_id)
    in_a, in_b = _cell_names(a), _cell_names(b)
    shared = in_a & in_b
    place = {kind: {label: i for i, label in enumerate(first[1].labels(kind))} for kind in ("models", "attacks", "defenses")}
    order = sorted(shared, key=lambda c: (place["models"][c[0]], place["attacks"][c[1]], place["defenses"][c[2]]))
    cells, unmatched_a, unmatched_b = [], 0, 0
    groups_a, groups_b = a.groupby(CELL), b.groupby(CELL)
    for model, attack, defense in order:
        ga, gb = groups_a.get_group((model, attack, defense)), groups_b.get_group((model, attack, defense))
        merged = ga.merge(gb, on=PAIR, suffixes=("_a", "_b"))
        unmatched_a += len(ga) - len(merged)
        unmatched_b += len(gb) - len(merged)
        row = pair_examples(ga[PAIR + ["correct"]], gb[PAIR + ["correct"]], model, attack, "A", "B")
        if row is not None:
            changed = float((merged.pred_a != merged.pred_b).mean() * 100)
            cells.append(CellComparison(model, attack, defense, row, changed))
    name = " × ".join
    return RunComparison(first[1], second[1], tuple(cells),
                         tuple(sorted(name(c) for c in in_a - shared)),
                         tuple(sorted(name(c) for c in in_b - shared)), unmatched_a, unmatched_b)


def sides(stores: list[tuple[Store, str | None]]) -> tuple[tuple[Store, RunRecord], tuple[Store, RunRecord]]:
    """The two runs to compare from one or two (database, run id or None) sides.

    Two sides: each side's run (its latest where no id is given). One side: that database's run and its
    latest other run, or, with no id, its two latest runs (the earlier one is A)."""
    if len(stores) == 2:
        return tuple((store, store.run(run_id)) for store, run_id in stores)  # type: ignore[return-value]
    store, run_id = stores[0]
    runs = store.runs()
    if run_id is None:
        if len(runs) < 2:
            raise _too_few(store, runs)
        return (store, runs[-2]), (store, runs[-1])
    chosen = store.run(run_id)
    others = [r for r in runs if r.run_id != chosen.run_id]
    if not others:
        raise _too_few(store, runs)
    return (store, chosen), (store, others[-1])


def _too_few(store: Store, runs: list[RunRecord]) -> HarnessError:
    return HarnessError(f"{store.path} holds {len(runs)} run(s); compare needs two: pass a second --db, or run "
                       "the grid again with another setting (e.g. --preset paper) into the same database")
