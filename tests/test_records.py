"""Every published number can be re-derived from data in the repository: the tables of docs/results.md and the
README's quote are `harness show --format csv` of the committed record databases under results/record/."""

from __future__ import annotations

import subprocess

import pytest

from benchmarks.record_tables import DOCUMENTS, MARKER, regenerate, table
from conftest import REPO, digits_grid, harness_cli


def _markers(document) -> list:
    return [m for line in document.read_text(encoding="utf-8").splitlines() if (m := MARKER.match(line.strip()))]


def test_every_marked_table_is_what_its_committed_database_gives():
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        assert regenerate(text) == text, f"{document.name}: run python benchmarks/record_tables.py and review the diff"


def test_the_record_databases_are_committed_and_the_results_carry_their_tables():
    results, readme = (_markers(d) for d in DOCUMENTS)
    assert len(results) >= 3 and len(readme) >= 1
    tracked = subprocess.run(["git", "ls-files", "results/record"], capture_output=True, text=True, cwd=REPO).stdout.split()
    for marker in results + readme:
        assert marker["db"] in tracked, f"{marker['db']} is not committed"


def test_each_record_database_is_one_self_contained_file():
    """Committed with a rollback journal: reading it writes no -wal or -shm beside it, and nothing it holds
    lives in a log that was left uncommitted."""
    import sqlite3

    tracked = subprocess.run(["git", "ls-files", "results/record"], capture_output=True, text=True, cwd=REPO).stdout.split()
    assert not [path for path in tracked if path.endswith(("-wal", "-shm", "-journal"))]
    for path in (p for p in tracked if p.endswith(".sqlite")):
        conn = sqlite3.connect(f"file:{REPO / path}?mode=ro", uri=True)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete", path
        conn.close()


def test_a_recorded_database_resumes_in_another_checkout_and_virtual_environment(tmp_path, registry):
    """tests/golden/run.sqlite was written in the developers' checkout and virtual environment: the same grid
    has the same run id and unit keys wherever the checkout and the installed packages live (the digits file
    inside scikit-learn is named from site-packages), so running it into a copy computes nothing and leaves
    every row as it was."""
    import shutil

    from harness.grid.config import Overrides
    from harness.grid.reader import load_grid
    from harness.run.runner import run_grid
    from harness.storage.store import Store

    db = shutil.copy(REPO / "tests" / "golden" / "run.sqlite", tmp_path / "run.sqlite")
    with Store(db, readonly=True) as store:
        (before,) = store.runs()
        rows = store.results(before.run_id)
    grid = load_grid(REPO / "tests" / "golden" / "grid.toml", registry, overrides=Overrides(db=str(db)))
    assert grid.run_id == before.run_id
    with Store(db) as store:
        run_grid(grid, store=store, progress=False)
        assert [r.run_id for r in store.runs()] == [before.run_id]
        assert store.results(before.run_id).equals(rows)


def test_files_in_the_installed_packages_or_the_home_folder_are_named_from_there():
    import sysconfig
    from pathlib import Path

    from harness.grid.fingerprint import portable

    inside = Path(sysconfig.get_paths()["purelib"]) / "sklearn" / "datasets" / "data" / "digits.csv.gz"
    assert portable(inside) == "<site-packages>/sklearn/datasets/data/digits.csv.gz"
    assert portable(Path.home() / ".cache" / "cifar10" / "data_batch_1") == "~/.cache/cifar10/data_batch_1"
    assert portable(Path("checkpoints/digits-fgsm-rs.pt")) == "checkpoints/digits-fgsm-rs.pt"   # as the grid wrote it
    assert portable(Path("/usr/share/datasets/x.gz")) == "/usr/share/datasets/x.gz"


def test_the_old_module_names_import_the_moved_modules_and_warn():
    import importlib
    import sys

    for old, new in (("harness.config", "harness.grid.config"), ("harness.store", "harness.storage.store"),
                     ("harness.interfaces", "harness.api.interfaces")):
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
            module = importlib.import_module(old)
        assert module is importlib.import_module(new)


def test_load_grid_from_its_old_module_is_the_readers_and_warns():
    import harness.grid.config as config
    from harness.grid.reader import load_grid

    with pytest.warns(DeprecationWarning, match="moved to harness.grid.reader.load_grid"):
        assert config.load_grid is load_grid
    with pytest.raises(AttributeError, match="no attribute 'load_grids'"):
        config.load_grids  # noqa: B018


def test_a_marked_table_of_a_run_in_progress_says_which_cells_are_to_run_and_which_are_part_done(tmp_path):
    """A real digits run, then as if stopped part-way: PGD has no rows yet, CW its first batch only. The table
    must not show a cell of 20 examples as if it held 40, nor an empty cell as a number."""
    import sqlite3

    grid = digits_grid(tmp_path, n=40, attacks='[[attacks]]\nplugin = "pgd"\nsteps = 3\n[[attacks]]\nplugin = "cw"\n'
                       'steps = 3\n', extra="save_examples = 0")
    harness_cli("run", "--grid", str(grid), "--quiet")
    db = tmp_path / "results.sqlite"
    whole = table(str(db), run_id(db), ["clean", "pgd", "cw"])
    with sqlite3.connect(db) as connection:
        connection.execute("DELETE FROM results WHERE attack = 'pgd'")
        connection.execute("DELETE FROM results WHERE attack = 'cw' AND idx >= 20")
    clean, pgd, cw = table(str(db), run_id(db), ["clean", "pgd", "cw"])[2].strip("| ").split(" | ")[2:]
    assert clean == whole[2].strip("| ").split(" | ")[2] and ", n = " not in clean
    assert pgd == "to run"
    assert cw.endswith(", n = 20)")


def run_id(db) -> str:
    import sqlite3

    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT run_id FROM runs").fetchone()[0]


def test_a_marked_table_follows_rows_still_in_the_write_ahead_log(tmp_path):
    """A run in progress writes to the database's -wal file first, so the main file can keep its time and size
    while rows change: the tables must be read again all the same."""
    import sqlite3

    grid = digits_grid(tmp_path, n=40, attacks='[[attacks]]\nplugin = "pgd"\nsteps = 3\n', extra="save_examples = 0")
    harness_cli("run", "--grid", str(grid), "--quiet")
    db = tmp_path / "results.sqlite"
    text = f"<!-- record: {db} run={run_id(db)} columns=clean,pgd -->\n"
    before = regenerate(text)
    writer = sqlite3.connect(db)
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("PRAGMA wal_autocheckpoint=0")      # the change stays in the -wal file
        stat = db.stat()
        with writer:
            writer.execute("DELETE FROM results WHERE attack = 'pgd'")
        assert (db.stat().st_mtime_ns, db.stat().st_size) == (stat.st_mtime_ns, stat.st_size)
        after = regenerate(text)
    finally:
        writer.close()
    assert "to run" in after and "to run" not in before


def test_a_marked_leaderboard_is_the_leaderboard_that_harness_show_prints():
    import json

    marked = [line for document in DOCUMENTS for line in document.read_text(encoding="utf-8").splitlines()
              if (m := MARKER.match(line.strip())) and m["leaderboard"]]
    assert marked, "docs/results.md marks the leaderboard of test-time defenses"
    m = MARKER.match(marked[0].strip())
    lines = regenerate(marked[0] + "\n").splitlines()[1:]
    shown = json.loads(harness_cli("show", "--db", str(REPO / m["db"]), "--run", m["run"], "--leaderboard",
                                   "--format", "json").stdout)
    assert lines[0] == "| " + " | ".join(shown[0]) + " |"
    assert [line.strip("| ").split(" | ") for line in lines[2:]] == \
        [[str(value) for value in row.values()] for row in shown]
