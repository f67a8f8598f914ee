"""The report's main table for a terminal (`harness show`), and the same data for scripts (csv, json).

The layout is the markdown report's: one group of rows per model, one row per defense under its paper
name, one column per attack and then both worst cases, each cell "mean (Wilson 95 % interval)" with
"± std" over repeats where there are several. Columns that do not fit the terminal's width continue in
a block below (pandas' ``line_width``), with the model and defense repeated.
"""

from __future__ import annotations

import shutil

import pandas as pd

from harness_reports.content import Cell, Table

UNEVALUATED = "not evaluated"


def _text(cell: Cell | None, key: str, unevaluated: tuple[str, ...]) -> str:
    if cell is None:
        return UNEVALUATED if key in unevaluated else "—"
    spread = f" ± {cell.std:.2f}" if cell.repeats > 1 else ""
    best = "*" if cell.best else ""
    return f"{best}{cell.mean:.2f}{spread} ({cell.low:.1f}–{cell.high:.1f})"


def frame(table: Table) -> pd.DataFrame:
    """Display strings, indexed by (model, defense); the model is written on its group's first row only."""
    rows, index = [], []
    for group in table.groups:
        for position, row in enumerate(group.rows):
            index.append((group.model if position == 0 else "", row.defense))
            rows.append([_text(c, k, table.unevaluated) for c, k in zip(row.cells, table.keys)])
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["model", "defense"]),
                        columns=list(table.columns))


def records(table: Table) -> pd.DataFrame:
    """One row per cell, numbers only: for `--format csv` and `--format json`."""
    out = []
    for group in table.groups:
        for row in group.rows:
            for cell, key, column in zip(row.cells, table.keys, table.columns):
                base = {"model": group.model, "defense": row.defense, "column": column, "key": key}
                if cell is None:
                    out.append({**base, "evaluated": key not in table.unevaluated})
                    continue
                out.append({**base, "evaluated": True, "accuracy": cell.mean, "std": cell.std,
                            "repeats": cell.repeats, "n": cell.n, "low": cell.low, "high": cell.high,
                            "best": cell.best})
    return pd.DataFrame(out)


def fitted(table: Table, width: int | None = None) -> str:
    """The table as text no wider than ``width`` (the terminal's, by default)."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    return frame(table).to_string(line_width=width, justify="right")
