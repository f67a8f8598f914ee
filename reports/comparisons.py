"""Paired comparisons from the per-example rows: defense against the reference, transfer against adaptive,
one budget of an adaptive attack against the next.

Every defense is scored on the same examples, so two settings are compared pair by pair (harness.analysis.pairing):
the difference of accuracies, Newcombe's paired interval and the exact McNemar p-value.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from harness.analysis.aggregate import (
    WORST_ADAPTIVE,
    WORST_TRANSFER,
    per_example,
    worst_columns,
)
from harness.analysis.pairing import PairedRow, pair_examples
from harness.storage.records import RunRecord
from harness.storage.store import Store
from harness_reports.naming import COLUMN_NAMES


def _select(frame: pd.DataFrame, model: str, defense: str) -> pd.DataFrame:
    return frame[(frame.model == model) & (frame.defense == defense)][["repeat", "idx", "correct"]]


def defense_pairs(store: Store, run: RunRecord, names: dict[str, str]) -> list[PairedRow]:
    """Every test-time defense against the reference defense, under each attack and each worst case."""
    reference = run.reference_defense
    if reference is None:
        return []
    columns: dict[str, list[str]] = {a: [a] for a in run.labels("attacks") if a not in run.adaptive_attacks}
    columns.update({k: v for k, v in worst_columns(run).items() if v is not None})
    rows = []
    for key, attacks in columns.items():
        frame = per_example(store, run.run_id, attacks)
        for model in run.labels("models"):
            for defense in run.test_time_defenses:
                row = pair_examples(_select(frame, model, defense), _select(frame, model, reference), model,
                              COLUMN_NAMES.get(key, names.get(key, key)), names.get(defense, defense),
                              names.get(reference, reference))
                if row is not None:
                    rows.append(row)
    return rows


def transfer_against_adaptive(store: Store, run: RunRecord, names: dict[str, str]) -> list[PairedRow]:
    """Per model and defense: the transfer worst case against the adaptive one (how much the adaptive attacks took)."""
    columns = worst_columns(run)
    if columns.get(WORST_ADAPTIVE) is None:
        return []
    transfer = per_example(store, run.run_id, columns[WORST_TRANSFER])
    adaptive = per_example(store, run.run_id, columns[WORST_ADAPTIVE])
    return [row for model in run.labels("models") for defense in run.labels("defenses")
            if (row := pair_examples(_select(transfer, model, defense), _select(adaptive, model, defense), model,
                               names.get(defense, defense), COLUMN_NAMES[WORST_TRANSFER],
                               COLUMN_NAMES[WORST_ADAPTIVE])) is not None]


@dataclass(frozen=True)
class Convergence:
    """One adaptive attack's budget ladder on one model and defense: the worst case at each budget."""

    model: str
    attack: str              # the ladder's base label, as shown
    defense: str
    factors: tuple[int, ...]
    accuracy: tuple[float, ...]      # worst case (transfer attacks ∧ this rung), % (mean over repeats)
    last_step: PairedRow | None      # the last rung against the one before (negative: the doubling lowered it)

    @property
    def converged(self) -> bool:
        """The last doubling did not lower the worst case by more than its paired interval allows."""
        return self.last_step is None or not (self.last_step.distinguishable and self.last_step.difference < 0)


def convergence(store: Store, run: RunRecord, names: dict[str, str]) -> list[Convergence]:
    ladders: dict[str, list[tuple[int, str]]] = {}
    for a in run.entries("attacks"):
        if a.get("ladder"):
            base, factor = a["ladder"]
            ladders.setdefault(base, []).append((factor, a["label"]))
    transfer = [a for a in (worst_columns(run).get(WORST_TRANSFER) or [])]
    out = []
    for base, rungs in ladders.items():
        rungs.sort()
        frames = [per_example(store, run.run_id, transfer + [label]) for _, label in rungs]
        for model in run.labels("models"):
            for defense in run.labels("defenses"):
                selected = [_select(f, model, defense) for f in frames]
                # a rung with examples still to run has no verdict yet: its examples are another set
                if any(len(s) < run.rows_per_cell for s in selected):
                    continue
                accuracy = tuple(float(s.groupby("repeat").correct.mean().mean() * 100) for s in selected)
                last = pair_examples(selected[-1], selected[-2], model, names.get(base, base),
                               f"×{rungs[-1][0]}", f"×{rungs[-2][0]}") if len(selected) > 1 else None
                out.append(Convergence(model, names.get(base, base), names.get(defense, defense),
                                       tuple(f for f, _ in rungs), accuracy, last))
    return out


def adaptive_gains(store: Store, run: RunRecord, names: dict[str, str]) -> list[tuple[PairedRow, str]]:
    """Where a test-time defense's adaptive worst case is above the reference's: the paired difference, and
    what it says."""
    columns = worst_columns(run)
    reference = run.reference_defense
    if columns.get(WORST_ADAPTIVE) is None or reference is None:
        return []
    frame = per_example(store, run.run_id, columns[WORST_ADAPTIVE])
    out = []
    for model in run.labels("models"):
        for defense in run.test_time_defenses:
            row = pair_examples(_select(frame, model, defense), _select(frame, model, reference), model,
                          COLUMN_NAMES[WORST_ADAPTIVE], names.get(defense, defense), names.get(reference, reference))
            if row is None or row.difference <= 0:
                continue
            out.append((row, gain_verdict(row)))
    return out


def gain_verdict(row: PairedRow) -> str:
    """What a test-time defense's adaptive worst case above the reference's says, plainly."""
    if row.distinguishable:
        return (f"{row.model}: {row.first} keeps a gain under the adaptive attacks ({row.difference:+.2f} points over "
                f"{row.second}, paired 95% interval {row.low:+.2f} to {row.high:+.2f}, McNemar p = {row.p_value:.3g}); "
                "confirm it with a larger budget before claiming it.")
    return (f"{row.model}: {row.first} is {row.difference:+.2f} points above {row.second} under the adaptive attacks, "
            f"but the paired 95% interval {row.low:+.2f} to {row.high:+.2f} contains 0 (McNemar p = "
            f"{row.p_value:.3g}): no evidence of a gain.")
