"""The tables of recorded results in docs/results.md and the README, re-derived from the committed databases.

    python benchmarks/record_tables.py            # rewrite every marked table from its database
    python benchmarks/record_tables.py --check    # exit 1 if any table differs from its database (tests do this)

A table is marked by the comment line before it::

    <!-- record: results/record/fastat40.sqlite run=37ec527209be columns=clean,pgd,worst case (transfer) -->

and is the accuracy in % with its 95 % Wilson interval of each (model, defense) of that run, one column per key
(an attack label or a worst-case column, as `harness show --format csv` names them), exactly as
`harness show --format csv` gives them (a run in progress: "to run" where a cell has no examples yet, and the
number of examples where it has part of them). A leaderboard of test-time defenses is marked ::

    <!-- record: results/record/test-time-defenses.sqlite run=d92aedfcb559 leaderboard -->

and is `harness show --leaderboard --format csv` of the run, row for row. So every published number can be
re-derived from data in the repository.
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = (ROOT / "docs" / "results.md", ROOT / "README.md")
MARKER = re.compile(r"^<!-- record: (?P<db>\S+) run=(?P<run>[0-9a-f]+) "
                    r"(?:columns=(?P<columns>[^>]*?)|(?P<leaderboard>leaderboard)) -->$")


def shown(db: str, run: str, *options: str) -> pd.DataFrame:
    """`harness show --format csv` of one run (with ``options``, e.g. ``--leaderboard``), as a frame."""
    done = subprocess.run([sys.executable, "-m", "harness.cli", "show", "--db", str(ROOT / db), "--run", run, "--format",
                           "csv", *options], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"harness show --db {db} --run {run} {' '.join(options)} failed: {done.stderr.strip()}")
    return pd.read_csv(io.StringIO(done.stdout), keep_default_na=False, na_values=[""])


def leaderboard_table(db: str, run: str) -> list[str]:
    """The marked leaderboard's lines: `harness show --leaderboard --format csv`, every column as it prints."""
    board = shown(db, run, "--leaderboard").astype(str)
    return ["| " + " | ".join(board.columns) + " |", "|" + "---|" * len(board.columns)] + \
        ["| " + " | ".join(row) + " |" for row in board.itertuples(index=False)]


def table(db: str, run: str, columns: list[str], data: pd.DataFrame | None = None) -> list[str]:
    """The marked table's lines: model, defense, then each column's accuracy (95 % Wilson interval); ``data``:
    the run's `shown` frame where the caller has it already."""
    data = shown(db, run) if data is None else data
    missing = [c for c in columns if c not in set(data.key)]
    if missing:
        raise KeyError(f"run {run} of {db} has no column {missing[0]!r}; it has: {', '.join(dict.fromkeys(data.key))}")
    names = {key: column for key, column in zip(data.key, data.column)}
    full = data.n.max()
    lines = ["| model | defense | " + " | ".join(names[c] for c in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for (model, defense), group in data.groupby(["model", "defense"], sort=False):
        cells = group.set_index("key")
        lines.append(f"| {model} | {defense} | " + " | ".join(cell(cells.loc[key], full) for key in columns) + " |")
    return lines


def cell(row: pd.Series, full: float) -> str:
    """One accuracy (95 % Wilson interval); a run in progress shows a cell with no examples yet as "to run" and
    one with part of its examples with their number, so that no partial number passes for a whole one."""
    if not bool(row.evaluated):
        return "not evaluated"
    if pd.isna(row.accuracy):
        return "to run"
    part = f", n = {int(row.n)}" if row.n < full else ""
    return f"{row.accuracy:.2f} ({row.low:.1f}–{row.high:.1f}{part})"


_RUNS: dict[tuple, pd.DataFrame] = {}


def _read_once(db: str, run: str) -> pd.DataFrame:
    """`shown`, read once per run while its database is unchanged (several tables mark one run).

    Unchanged: the file and its write-ahead log (where a run in progress writes first) keep their times and sizes."""
    path = ROOT / db
    files = (path, path.with_name(path.name + "-wal"))
    key = (db, run, *((f.stat().st_mtime_ns, f.stat().st_size) if f.exists() else None for f in files))
    if key not in _RUNS:
        _RUNS[key] = shown(db, run)
    return _RUNS[key]


def regenerate(text: str) -> str:
    """The document with every marked table replaced by its database's."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        out.append(lines[i])
        match = MARKER.match(lines[i].strip())
        i += 1
        if match is None:
            continue
        if match["leaderboard"]:
            out += leaderboard_table(match["db"], match["run"])
        else:
            out += table(match["db"], match["run"], [c.strip() for c in match["columns"].split(",")],
                         _read_once(match["db"], match["run"]))
        while i < len(lines) and lines[i].startswith("|"):   # the old table
            i += 1
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs from its database")
    args = ap.parse_args()
    stale = []
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        fresh = regenerate(text)
        if fresh != text:
            stale.append(document.name)
            if not args.check:
                document.write_text(fresh, encoding="utf-8")
    print(("stale: " if args.check else "rewrote: ") + ", ".join(stale) if stale else "every recorded table is current")
    sys.exit(1 if args.check and stale else 0)


if __name__ == "__main__":
    main()
