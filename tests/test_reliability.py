"""What the README's Reliability section promises, each shown here: content-keyed results, provenance of the
harness itself, several processes on one database, read-only reports, a full disk, and no code from files."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import DIGITS_ROBUST, DIGITS_STANDARD, REPO, digits_grid, harness_cli, shared_file
from harness.api.errors import DataError, StoreError
from harness.grid.plan import plan
from harness.grid.reader import load_grid
from harness.run.runner import Runner, run_grid
from harness.storage.records import SCHEMA_VERSION
from harness.storage.store import Store

ATTACKS = '[[attacks]]\nplugin = "pgd"\nsteps = 10\nstep_size = 0.02\n[[attacks]]\nplugin = "cw"\nsteps = 10\nstep_size = 0.02\n'
DEFENSES = '[[defenses]]\nplugin = "none"\n[[defenses]]\nplugin = "random"\neps_d = 0.1\n'
COMPARED = ["unit_key", "model", "attack", "defense", "repeat", "idx", "label", "pred", "correct", "vote_frac", "linf",
            "l2", "queries", "grad_norm"]


def _grid_with_model(tmp_path: Path, weights: Path, **kw) -> Path:
    models = f"""
[[models]]
plugin = "checkpoint"
label = "m"
arch = "small-cnn"
path = "{weights}"
dataset = "digits"
in_channels = 1
"""
    return digits_grid(tmp_path, models=models, **kw)


def _rows(db: Path, run_id: str | None = None) -> pd.DataFrame:
    store = Store(db, readonly=True)
    frame = store.results(run_id or store.run().run_id)
    return frame[COMPARED].fillna(-1).sort_values(COMPARED[1:6]).reset_index(drop=True)


# --- results belong to the bytes they were computed from -----------------------------------------------

def test_replacing_a_checkpoint_gives_a_new_run_and_new_unit_keys(tmp_path, registry):
    weights = tmp_path / "weights.pt"
    shutil.copy(DIGITS_ROBUST, weights)
    path = _grid_with_model(tmp_path, weights, n=40, attacks=ATTACKS)
    first = load_grid(path, registry)
    sha = dict(first.models[0].contents)[str(weights)]
    assert len(sha) == 64 and sha in first.identity()["models"][0]["contents"].values()   # recorded in the run
    run_grid(first, progress=False)
    shutil.copy(DIGITS_STANDARD, weights)                     # same path, other bytes
    second = load_grid(path, registry)
    assert second.run_id != first.run_id
    assert not {u.key for u in plan(first)} & {u.key for u in plan(second)}
    run_grid(second, progress=False)
    # the new run's rows are exactly those of a fresh run of the standard model: nothing of the old file mixed in
    (tmp_path / "fresh").mkdir()
    fresh_grid = load_grid(_grid_with_model(tmp_path / "fresh", DIGITS_STANDARD, n=40, attacks=ATTACKS), registry)
    run_grid(fresh_grid, progress=False)
    ours = _rows(Path(second.db), second.run_id).drop(columns="unit_key")
    theirs = _rows(Path(fresh_grid.db)).drop(columns="unit_key")
    pd.testing.assert_frame_equal(ours, theirs)
    assert len(Store(second.db, readonly=True).runs()) == 2


def test_the_harness_commit_is_the_harness_checkouts_not_the_current_directorys(tmp_path):
    other = tmp_path / "unrelated"
    other.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "x", "GIT_AUTHOR_EMAIL": "x@x", "GIT_COMMITTER_NAME": "x",
           "GIT_COMMITTER_EMAIL": "x@x"}
    for args in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "unrelated"]):
        subprocess.run(["git", *args], cwd=other, check=True, env=env)
    unrelated = subprocess.run(["git", "rev-parse", "HEAD"], cwd=other, capture_output=True, text=True).stdout.strip()
    ours = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    grid = digits_grid(tmp_path, n=20)
    subprocess.run([sys.executable, "-m", "harness.cli", "run", "--grid", str(grid), "--quiet"], cwd=other, check=True,
                   capture_output=True)
    run = Store(tmp_path / "results.sqlite", readonly=True).run()
    assert run.harness_commit.split("+")[0] == ours != unrelated
    assert run.harness_version == "0.1.0"


# --- several processes on one database ------------------------------------------------------------------

def test_three_processes_share_a_grid_and_survive_one_killed(tmp_path):
    """Three `harness run` processes on one grid and database, one SIGKILLed mid-run: none crashes, no unit is
    computed by two live processes, the killed one's claim is taken over, and the rows equal a solo run's."""
    attacks = ATTACKS + '[[attacks]]\nplugin = "pgd"\nlabel = "pgd-b"\nsteps = 15\nstep_size = 0.01\n'
    grid = digits_grid(tmp_path, n=120, batch_size=20, repeats=2, attacks=attacks, defenses=DEFENSES)
    shared, solo = tmp_path / "shared.sqlite", tmp_path / "solo.sqlite"
    command = [sys.executable, "-m", "harness.cli", "run", "--grid", str(grid), "--db", str(shared), "--quiet"]
    procs = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    victim = None
    deadline = time.time() + 180
    while victim is None and time.time() < deadline:
        time.sleep(0.2)
        try:
            conn = sqlite3.connect(f"file:{shared}?mode=ro", uri=True, timeout=5)
            claimed = {row[0] for row in conn.execute("SELECT pid FROM claims")}
            done = conn.execute("SELECT COUNT(*) FROM shards").fetchone()[0]
            conn.close()
        except sqlite3.Error:
            continue
        holders = [p for p in procs if p.pid in claimed]
        if holders and done >= 3:
            victim = holders[0]
    assert victim is not None, "no process ever held a unit"
    victim.send_signal(signal.SIGKILL)
    victim.wait()   # reaped at once, as a shell reaps its killed job (a zombie's pid would still look alive)
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        if proc is not victim:
            assert proc.returncode == 0, err.decode()[-2000:]
    harness_cli("run", "--grid", str(grid), "--db", str(solo), "--quiet")
    pd.testing.assert_frame_equal(_rows(shared), _rows(solo))
    conn = sqlite3.connect(shared)
    owners = pd.read_sql_query("SELECT unit_key, owner FROM shards", conn)
    per_unit = owners.groupby("unit_key").owner.nunique()
    killed = owners[owners.owner.str.split(":").str[1] == str(victim.pid)]
    assert set(per_unit[per_unit > 1].index) <= set(killed.unit_key)   # only the dead one's unit changed hands
    assert owners.owner.str.split(":").str[1].nunique() >= 2          # the work really was shared
    assert conn.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0


def test_a_second_store_in_a_process_keeps_its_live_connection_visible_to_other_processes(tmp_path):
    """Another process that opens and closes the database must not take a live writer for gone.

    Reading the file's header with open() and close() in the writer's process drops its POSIX locks;
    a reader closing last then folds and deletes the -wal under the writer, and later commits are lost."""
    path = tmp_path / "run.sqlite"
    writer = Store(path)
    writer.db.execute("CREATE TABLE pages (page BLOB)")
    for _ in range(40):
        writer.db.execute("INSERT INTO pages VALUES (randomblob(4000))")
    Store(path).close()                      # as the heartbeat thread opens its own connection
    Store(path, readonly=True).close()       # as the report at the end of a run
    reader = f"from harness.storage.store import Store; Store({str(path)!r}, readonly=True).close()"
    subprocess.run([sys.executable, "-c", reader], cwd=REPO, check=True)   # as harness show in another shell
    assert (tmp_path / "run.sqlite-wal").exists()    # the writer is still connected, so its log stays
    for _ in range(160):
        writer.db.execute("INSERT INTO pages VALUES (randomblob(4000))")
    writer.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT COUNT(*) FROM pages").fetchone()[0] == 200


# --- the database is the user's -----------------------------------------------------------------------

def test_show_and_report_leave_the_database_as_they_found_it(tmp_path):
    db = tmp_path / "run.sqlite"
    shutil.copy(REPO / "tests" / "golden" / "run.sqlite", db)    # a rollback-journal database, as archived
    before = db.read_bytes()
    harness_cli("show", "--db", str(db))
    harness_cli("report", "--db", str(db), "--out", str(tmp_path / "out"), "--format", "markdown")
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "run.sqlite"]   # no -wal or -shm left beside it


def test_show_and_report_read_a_wal_database_on_a_read_only_mount(tmp_path):
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("unshare (user and mount namespaces) is not available here")
    source, mount = tmp_path / "src", tmp_path / "ro"
    source.mkdir()
    mount.mkdir()
    from harness.api.registry import Registry

    registry = Registry()
    run_grid(load_grid(digits_grid(tmp_path, n=20), registry), store=Store(source / "run.sqlite"), progress=False)
    assert sqlite3.connect(source / "run.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    script = (f"mount --bind -o ro {source} {mount} && "
              f"{sys.executable} -m harness.cli show --db {mount}/run.sqlite && "
              f"{sys.executable} -m harness.cli report --db {mount}/run.sqlite --out {tmp_path}/out --format markdown")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "worst case" in done.stdout and (tmp_path / "out" / "report.md").exists()


def test_a_full_disk_stops_with_one_line_and_the_same_command_resumes(tmp_path, registry):
    grid = load_grid(digits_grid(tmp_path, n=60, batch_size=10, attacks=ATTACKS), registry)
    store = Store(grid.db)
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages + 3}")   # SQLite's own SQLITE_FULL, as on a full disk
    with pytest.raises(StoreError) as info:
        Runner(grid, store, progress=False).run()
    message = str(info.value)
    assert message.startswith(f"the disk holding {grid.db} is full; ") and "batches are safely stored" in message
    stored = int(message.split("full; ")[1].split(" batches")[0])
    assert stored > 0 and Store(grid.db, readonly=True).results(grid.run_id).shape[0] > 0
    run_grid(grid, store=Store(grid.db), progress=False)   # a new process, with room again
    (tmp_path / "ref").mkdir()
    reference = load_grid(digits_grid(tmp_path / "ref", n=60, batch_size=10, attacks=ATTACKS), registry)
    run_grid(reference, progress=False)
    pd.testing.assert_frame_equal(_rows(Path(grid.db)).drop(columns="unit_key"),
                                  _rows(Path(reference.db)).drop(columns="unit_key"))


# --- no code runs from a file -------------------------------------------------------------------------

class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = "/tmp/harness-reliability-pwned"


@pytest.mark.parametrize("force_unsafe", ["0", "1"])
def test_a_checkpoint_with_code_is_refused_by_every_model_plugin(tmp_path, monkeypatch, force_unsafe):
    from harness_plugins.models.checkpoint import Checkpoint
    from harness_plugins.models.zoo import RobustBenchModel

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", force_unsafe)  # torch then unpickles fully by default
    target = tmp_path / "cifar10" / "Linf" / "Wong2020Fast.pt"
    target.parent.mkdir(parents=True)
    state = torch.load(shared_file("models/cifar10-jpeg/fastat40.pt"), weights_only=True)
    torch.save({**state, "extra": _Payload()}, target)
    Path(MARKER).unlink(missing_ok=True)
    for plugin in (RobustBenchModel(name="Wong2020Fast", model_dir=str(tmp_path)),
                   Checkpoint(arch="robustbench:cifar10:Linf:Wong2020Fast", path=str(target))):
        with pytest.raises(DataError, match="refused: it is not a plain weights file"):
            plugin.load(torch.device("cpu"))
    assert not Path(MARKER).exists()


def test_a_database_of_the_previous_schema_is_read_as_it_is_and_upgraded_only_when_written(tmp_path):
    """Version 2 lacked runs.reported (and the units' pass counts, results.draws): show and report read it
    untouched; a run into it adds the columns."""
    old = tmp_path / "v2.sqlite"
    shutil.copy(REPO / "tests" / "golden" / "run.sqlite", old)
    with sqlite3.connect(old) as conn:
        if "reported" in {row[1] for row in conn.execute("PRAGMA table_info(runs)")}:
            conn.execute("ALTER TABLE runs DROP COLUMN reported")
        conn.execute("PRAGMA user_version = 2")
    before = old.read_bytes()
    store = Store(old, readonly=True)
    assert store.run().reported is None and not store.results(store.run().run_id).empty
    harness_cli("show", "--db", str(old))
    assert old.read_bytes() == before                              # reading never upgrades
    Store(old)                                                      # a writer adds what this version has
    with sqlite3.connect(old) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert "reported" in {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
        assert {"counted_forward", "floor_backward", "smallest_chunk", "reused_from", "messages"} <= {
            row[1] for row in conn.execute("PRAGMA table_info(units)")}
        assert "draws" in {row[1] for row in conn.execute("PRAGMA table_info(results)")}
    assert Store(old, readonly=True).run().run_id == store.run().run_id
