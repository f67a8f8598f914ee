"""Accuracies as the tables show them, from the store: per cell the mean and standard deviation over
repeats, for every attack and for the worst cases. The CLI summary and the reports both read these.

Honest by default: when the grid holds adaptive attacks (attacks on model + defense), the worst
case over *all* attacks, transfer and adaptive (Croce et al.'s definition), is the column to report;
the paper's transfer-only worst case stands beside it.
"""

from __future__ import annotations

import pandas as pd

from harness.api.interfaces import Role
from harness.grid.presets import PRESETS
from harness.storage.queries import per_example as per_example  # its home is the queries module
from harness.storage.records import RunRecord
from harness.storage.store import Store

WORST = "worst case"
WORST_TRANSFER = "worst case (transfer)"
WORST_ADAPTIVE = "worst case (adaptive)"   # the column to report where a grid attacks through its defenses
CELL_COLUMNS = ["model", "defense", "key", "mean", "std", "repeats", "n"]


def worst_columns(run: RunRecord) -> dict[str, list[str] | None]:
    """Worst-case column name → the attacks it takes the per-example AND over: clean included, except under the
    paper preset, whose released code took the OR over the attacks' failures without the clean column.

    With a test-time defense in the grid, the transfer and the adaptive worst case stand side by side; without
    an adaptive attack the adaptive one is None: not evaluated (never the transfer value under its name)."""
    attacks = run.labels("attacks")
    if not PRESETS[run.preset].worst_case_baseline:
        attacks = [a["label"] for a in run.entries("attacks") if a.get("role") != Role.BASELINE.value]
    adaptive = run.adaptive_attacks
    if not adaptive and not run.test_time_defenses:
        return {WORST: attacks}
    return {WORST_TRANSFER: [a for a in attacks if a not in adaptive], WORST_ADAPTIVE: attacks if adaptive else None}


def mean_std(frame: pd.DataFrame, keys: list[str], ddof: int = 1) -> pd.DataFrame:
    """Mean and standard deviation (``ddof`` 1, the sample one, by default; NaN for a single repeat, where there
    is no spread to give) of ``acc`` over repeats, in %, with the number of repeats and the fewest examples any
    repeat's accuracy was taken over."""
    grouped = frame.groupby(keys, sort=False)
    spread = grouped["acc"].std(ddof=ddof).where(grouped["acc"].count() > 1)
    out = pd.DataFrame({"mean": grouped["acc"].mean() * 100, "std": spread * 100,
                        "repeats": grouped["acc"].count(), "n": grouped["n"].min()})
    return out.reset_index()


def cells(store: Store, run: RunRecord) -> pd.DataFrame:
    """model, defense, key (an attack label or a worst-case column), mean, std (in %), repeats, n."""
    frames = [store.accuracy(run.run_id).rename(columns={"attack": "key"})]
    for key, attacks in worst_columns(run).items():
        if attacks is not None:
            frames.append(store.worst_case(run.run_id, attacks).assign(key=key))
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=CELL_COLUMNS)
    return mean_std(pd.concat(frames, ignore_index=True), ["model", "defense", "key"], PRESETS[run.preset].spread_ddof)


