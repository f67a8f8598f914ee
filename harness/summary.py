"""Table-1-style summaries from the store: rows model × defense; columns clean, each attack, worst case."""

from __future__ import annotations

import json

import pandas as pd

from harness.store import Store

WORST = "worst case"


def _mean_std(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean and sample standard deviation (ddof=1; 0 for a single repeat) of accuracy over repeats, in %."""
    grouped = frame.groupby(keys, sort=False)["acc"]
    out = pd.DataFrame({"mean": grouped.mean() * 100, "std": grouped.std(ddof=1).fillna(0.0) * 100,
                        "repeats": grouped.count()})
    return out.reset_index()


def summary(store: Store, run_id: str) -> pd.DataFrame:
    """Long form: model, defense, column (attack label or "worst case"), mean, std, repeats."""
    run = store.run(run_id)
    acc = store.accuracy(run["run_id"])
    if acc.empty:
        return pd.DataFrame(columns=["model", "defense", "column", "mean", "std", "repeats"])
    per_attack = _mean_std(acc.rename(columns={"attack": "column"}), ["model", "defense", "column"])
    worst = store.worst_case(run["run_id"])
    worst["column"] = WORST
    per_worst = _mean_std(worst, ["model", "defense", "column"]) if not worst.empty else worst
    return pd.concat([per_attack, per_worst], ignore_index=True)


def wide_table(store: Store, run_id: str | None = None) -> tuple[dict, pd.DataFrame]:
    """(run facts, a table of "mean ± std" strings indexed by model and defense, in grid order)."""
    run = store.run(run_id)
    long = summary(store, run["run_id"])
    attacks, defenses, models = (json.loads(run[k]) for k in ("attacks", "defenses", "models"))
    columns = attacks + [WORST]
    index = pd.MultiIndex.from_product([models, defenses], names=["model", "defense"])
    table = pd.DataFrame("—", index=index, columns=columns)
    for row in long.itertuples():
        if (row.model, row.defense) in table.index and row.column in table.columns:
            cell = f"{row.mean:.2f}" if row.repeats < 2 else f"{row.mean:.2f} ± {row.std:.2f}"
            table.loc[(row.model, row.defense), row.column] = cell
    return run, table
