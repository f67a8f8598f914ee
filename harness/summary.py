"""Table-1-style summaries for the terminal: rows model × defense; columns clean, each attack, worst cases."""

from __future__ import annotations

import pandas as pd

from harness.aggregate import adaptive_attacks, cells, worst_columns
from harness.interfaces import Role
from harness.records import RunRecord
from harness.store import Store


def warnings_for(store: Store, run_id: str) -> list[str]:
    """A grid with a test-time defense but no adaptive attack overstates that defense's robustness."""
    run = store.run(run_id)
    test_time = [d["label"] for d in run.entries("defenses") if d.get("role") != Role.REFERENCE.value]
    if test_time and not adaptive_attacks(run):
        return [f"warning: no adaptive attack in this grid, so the worst case of {', '.join(test_time)} is the "
                "transfer protocol only and overstates robustness (Croce et al., ICML 2022). "
                "Add [[attacks]] plugin = \"adaptive\" to attack model + defense end to end."]
    return []


def wide_table(store: Store, run_id: str | None = None) -> tuple[RunRecord, pd.DataFrame]:
    """(the run, a table of "mean ± std" strings indexed by model and defense, in grid order)."""
    run = store.run(run_id)
    long = cells(store, run)
    attacks, defenses, models = run.labels("attacks"), run.labels("defenses"), run.labels("models")
    columns = attacks + list(worst_columns(run))
    index = pd.MultiIndex.from_product([models, defenses], names=["model", "defense"])
    table = pd.DataFrame("—", index=index, columns=columns)
    for row in long.itertuples():
        if (row.model, row.defense) in table.index and row.key in table.columns:
            cell = f"{row.mean:.2f}" if row.repeats < 2 else f"{row.mean:.2f} ± {row.std:.2f}"
            table.loc[(row.model, row.defense), row.key] = cell
    return run, table
