"""Rebuild the golden run database and the expected report files (run from the repository root).

    python3 tests/golden/regenerate.py            # rerun the grid, then re-render
    python3 tests/golden/regenerate.py --render   # keep the database, re-render only (after a template change)

Review the diff of tests/golden/expected/ before committing: it is what users' papers will contain.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
DB = HERE / "run.sqlite"
EXPECTED = HERE / "expected"
GOLDEN_FORMATS = ("markdown", "latex")   # byte-compared; HTML embeds SVG and is checked in a browser instead


def rerun() -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{DB}{suffix}").unlink(missing_ok=True)
    # a relative grid path: the database records it, and the golden files print it
    subprocess.run([sys.executable, "-m", "harness", "run", "--grid", "tests/golden/grid.toml", "--db", str(DB),
                    "--quiet"], check=True, cwd=HERE.parent.parent)
    conn = sqlite3.connect(DB)  # one self-contained file: no WAL beside it, no free pages
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("VACUUM")
    conn.close()


def render(out: Path) -> None:
    from harness_reports.render import write_report

    with tempfile.TemporaryDirectory() as tmp:  # render from a copy: the committed file stays untouched
        copy = Path(tmp) / "run.sqlite"
        shutil.copy(DB, copy)
        write_report(copy, out, GOLDEN_FORMATS)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render", action="store_true", help="re-render only")
    if not parser.parse_args().render:
        rerun()
    shutil.rmtree(EXPECTED, ignore_errors=True)
    render(EXPECTED)
    shutil.rmtree(EXPECTED / "figures")  # figures are not golden: matplotlib versions differ in bytes
    print(f"wrote {DB} and {EXPECTED}/")
