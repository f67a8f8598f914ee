"""Table-1-style summaries from the store: rows model × defense; columns clean, each attack, worst case.

Honest by default: when the grid holds adaptive attacks (attacks on model + defense), the worst
case over *all* attacks, transfer and adaptive (Croce et al.'s definition), is the column to report;
the paper's transfer-only worst case stands beside it. A grid with a test-time defense and no
adaptive attack gets a warning that its worst case overstates robustness.
"""

from __future__ import annotations

import json

import pandas as pd

from harness.store import Store

WORST = "worst case"
WORST_TRANSFER = "worst case (transfer)"
WORST_ADAPTIVE = "worst case (adaptive) — report this"


def _mean_std(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean and sample standard deviation (ddof=1; 0 for a single repeat) of accuracy over repeats, in %."""
    grouped = frame.groupby(keys, sort=False)["acc"]
    out = pd.DataFrame({"mean": grouped.mean() * 100, "std": grouped.std(ddof=1).fillna(0.0) * 100,
                        "repeats": grouped.count()})
    return out.reset_index()


def adaptive_attacks(store: Store, run_id: str) -> list[str]:
    units = store.units(run_id)
    return sorted(set(units.loc[units.adaptive == 1, "attack"])) if not units.empty else []


def worst_columns(store: Store, run_id: str) -> dict[str, list[str]]:
    """Worst-case column name → the attacks it takes the per-example AND over."""
    attacks = json.loads(store.run(run_id)["attacks"])
    adaptive = adaptive_attacks(store, run_id)
    if not adaptive:
        return {WORST: attacks}
    return {WORST_TRANSFER: [a for a in attacks if a not in adaptive], WORST_ADAPTIVE: attacks}


def summary(store: Store, run_id: str) -> pd.DataFrame:
    """Long form: model, defense, column (attack label or a worst-case column), mean, std, repeats."""
    run = store.run(run_id)
    acc = store.accuracy(run["run_id"])
    if acc.empty:
        return pd.DataFrame(columns=["model", "defense", "column", "mean", "std", "repeats"])
    parts = [_mean_std(acc.rename(columns={"attack": "column"}), ["model", "defense", "column"])]
    for column, attacks in worst_columns(store, run["run_id"]).items():
        worst = store.worst_case(run["run_id"], attacks)
        if not worst.empty:
            worst["column"] = column
            parts.append(_mean_std(worst, ["model", "defense", "column"]))
    return pd.concat(parts, ignore_index=True)


def warnings_for(store: Store, run_id: str) -> list[str]:
    run = store.run(run_id)
    identity = json.loads(run["identity"])
    test_time = [d["label"] for d in identity["defenses"] if d["plugin"] != "none"]
    notes = []
    if test_time and not adaptive_attacks(store, run["run_id"]):
        notes.append(f"warning: no adaptive attack in this grid, so the worst case of {', '.join(test_time)} is the "
                     "transfer protocol only and overstates robustness (Croce et al., ICML 2022). "
                     "Add [[attacks]] plugin = \"adaptive\" to attack model + defense end to end.")
    return notes


def wide_table(store: Store, run_id: str | None = None) -> tuple[dict, pd.DataFrame]:
    """(run facts, a table of "mean ± std" strings indexed by model and defense, in grid order)."""
    run = store.run(run_id)
    long = summary(store, run["run_id"])
    attacks, defenses, models = (json.loads(run[k]) for k in ("attacks", "defenses", "models"))
    columns = attacks + list(worst_columns(store, run["run_id"]))
    index = pd.MultiIndex.from_product([models, defenses], names=["model", "defense"])
    table = pd.DataFrame("—", index=index, columns=columns)
    for row in long.itertuples():
        if (row.model, row.defense) in table.index and row.column in table.columns:
            cell = f"{row.mean:.2f}" if row.repeats < 2 else f"{row.mean:.2f} ± {row.std:.2f}"
            table.loc[(row.model, row.defense), row.column] = cell
    return run, table
