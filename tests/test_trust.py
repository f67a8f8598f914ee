"""No silent wrong number: a unit's identity covers the code and the bytes it computes with, and the read-only
commands read the database as it is now, whatever its name, and leave its folder as they found it."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest

from conftest import digits_grid
from harness.api.errors import StoreError
from harness.api.registry import Registry
from harness.api.specs import Kind
from harness.cli import main
from harness.grid.fingerprint import file_sha256
from harness.grid.reader import load_grid
from harness.run.runner import run_grid
from harness.storage.store import Store

PLUGIN = '''"""A third party's attack: PGD under another name."""
from dataclasses import dataclass

from harness_plugins.attacks.pgd import PGD


@dataclass(frozen=True)
class FakePGD(PGD, name="fake-pgd"):
    """PGD, as a third party ships it."""
'''


def install_fake_plugin(site: Path, version: str, source: str = PLUGIN) -> None:
    """An installed distribution, as pip leaves one: the module and its dist-info with an entry point."""
    for old in site.glob("fake_attack_plugin-*.dist-info"):
        shutil.rmtree(old)
    (site / "fake_attack_plugin.py").write_text(source)
    info = site / f"fake_attack_plugin-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fake-attack-plugin\nVersion: {version}\n")
    (info / "entry_points.txt").write_text("[harness]\nfake = fake_attack_plugin\n")


@pytest.fixture
def fake_site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("fake_attack_plugin", None)


def fresh_registry() -> Registry:
    """The plugins as a new process discovers them (the plugin's module imported anew)."""
    sys.modules.pop("fake_attack_plugin", None)
    return Registry()


def _grid(tmp_path: Path) -> Path:
    return digits_grid(tmp_path, n=20, attacks='[[attacks]]\nplugin = "fake-pgd"\nsteps = 2\nstep_size = 0.05\n')


def test_a_plugins_new_version_computes_its_units_again(tmp_path, fake_site):
    install_fake_plugin(fake_site, "0.1.0")
    registry = fresh_registry()
    assert registry.get(Kind.ATTACK, "fake-pgd").distribution == "fake-attack-plugin 0.1.0"
    first = load_grid(_grid(tmp_path), registry)
    run_grid(first, store=Store(first.db), progress=False)

    again = load_grid(_grid(tmp_path), fresh_registry())          # unchanged: the same run, every unit already done
    assert again.run_id == first.run_id
    assert Store(again.db).units(again.run_id).finished.all()

    install_fake_plugin(fake_site, "0.2.0")                 # a new release, the same source
    bumped_registry = fresh_registry()
    bumped = load_grid(_grid(tmp_path), bumped_registry)
    assert bumped.run_id != first.run_id
    store = Store(bumped.db)
    run_grid(bumped, store=store, progress=False)
    assert len(store.results(bumped.run_id)) == 2 * 20      # computed again, not the old rows under a new name
    assert "fake-attack-plugin" in store.run(bumped.run_id).versions and "0.2.0" in store.run(bumped.run_id).versions


def test_an_edited_plugin_under_the_same_version_computes_again_but_a_comment_does_not(tmp_path, fake_site):
    install_fake_plugin(fake_site, "0.1.0")
    base = load_grid(_grid(tmp_path), fresh_registry()).run_id
    install_fake_plugin(fake_site, "0.1.0", PLUGIN.replace('"""PGD, as a third party ships it."""',
                                                           '"""PGD, documented anew."""  # and a comment'))
    assert load_grid(_grid(tmp_path), fresh_registry()).run_id == base
    install_fake_plugin(fake_site, "0.1.0", PLUGIN.replace('"""PGD, as a third party ships it."""',
                                                           '"""PGD."""\n    steps: int = 3'))
    assert load_grid(_grid(tmp_path), fresh_registry()).run_id != base


def test_a_same_size_same_mtime_replacement_is_hashed_again(tmp_path, monkeypatch):
    """`cp -p`, `tar` and `rsync -a` restore a replaced file's size and mtime; the content hash must still see it."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"a" * 1000)
    stat = weights.stat()
    first = file_sha256(weights)
    weights.write_bytes(b"b" * 1000)                        # in place: the same inode
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_sha256(weights) != first
    replacement = tmp_path / "new.pt"                       # a new file moved over it, as cp -p and rsync -a do
    replacement.write_bytes(b"a" * 1000)
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    replacement.replace(weights)
    assert file_sha256(weights) == first


def test_a_replaced_checkpoint_with_its_mtime_reset_gives_a_new_run(tmp_path, monkeypatch, registry):
    import torch

    from conftest import DIGITS_ROBUST

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "model.pt"
    state = torch.load(DIGITS_ROBUST, weights_only=True)
    torch.save(state, weights)
    models = (f'[[models]]\nplugin = "checkpoint"\nlabel = "m"\narch = "small-cnn"\npath = "{weights}"\n'
              'dataset = "digits"\nin_channels = 1\n')
    before = load_grid(digits_grid(tmp_path, n=20, models=models), registry).run_id
    stat = weights.stat()
    torch.save({k: -v if v.is_floating_point() else v for k, v in state.items()}, tmp_path / "other.pt")
    assert (tmp_path / "other.pt").stat().st_size == stat.st_size      # other weights, the same size
    shutil.copyfile(tmp_path / "other.pt", weights)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))      # and the old mtime, as cp -p would leave it
    assert load_grid(digits_grid(tmp_path, n=20, models=models), registry).run_id != before


# --- read-only commands -----------------------------------------------------------------------------------------
def _run_into(tmp_path: Path, db: Path, registry: Registry, seed: int) -> str:
    folder = tmp_path / f"grid{seed}"
    folder.mkdir(exist_ok=True)
    path = digits_grid(folder, n=20, attacks='[[attacks]]\nplugin = "pgd"\nsteps = 2\n')
    path.write_text(path.read_text().replace("seed = 7", f"seed = {seed}"))
    grid = load_grid(path, registry, db_override=str(db))
    with Store(grid.db) as store:
        run_grid(grid, store=store, progress=False)
    return grid.run_id


@pytest.mark.parametrize("name,decoy", [("results#fp32.sqlite", "results"), ("run%20b.sqlite", "run b.sqlite"),
                                        ("what?x=1.sqlite", "what"), ("a b.sqlite", None)])
def test_show_opens_the_file_it_is_given_whatever_its_name(tmp_path, registry, capsys, name, decoy):
    wanted = _run_into(tmp_path, tmp_path / name, registry, seed=1)
    if decoy is not None:
        other = _run_into(tmp_path, tmp_path / decoy, registry, seed=2)
        assert other != wanted
    capsys.readouterr()
    assert main(["show", "--db", str(tmp_path / name)]) == 0
    assert f"run {wanted}" in capsys.readouterr().out


def _pending_wal(tmp_path: Path, registry: Registry) -> tuple[Path, str]:
    """A copy of a database as a killed run leaves it: the latest commit only in its -wal, and no -shm."""
    db = tmp_path / "live" / "out.sqlite"
    db.parent.mkdir()
    run_id = _run_into(tmp_path, db, registry, seed=3)
    writer = sqlite3.connect(db)
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("UPDATE results SET correct = 0, pred = -1 WHERE idx = 0")
    writer.commit()
    copy = tmp_path / "killed"
    copy.mkdir()
    shutil.copy(db, copy / "out.sqlite")
    shutil.copy(db.with_name("out.sqlite-wal"), copy / "out.sqlite-wal")
    writer.close()
    assert (copy / "out.sqlite-wal").stat().st_size > 0
    return copy / "out.sqlite", run_id


def test_a_read_sees_the_write_ahead_log_and_leaves_the_folder_as_it_found_it(tmp_path, registry):
    db, run_id = _pending_wal(tmp_path, registry)
    with Store(db, readonly=True) as store:
        rows = store.results(run_id)
    assert set(rows[rows.idx == 0].pred) == {-1}         # the commit that was only in the -wal
    assert sorted(p.name for p in db.parent.iterdir()) == ["out.sqlite"]   # folded in; no -wal, no -shm left


def test_a_folder_where_nothing_can_be_written_is_refused_rather_than_read_stale(tmp_path, registry, monkeypatch):
    """A read-only mount: SQLite cannot make the -shm it needs to read a -wal. Reading the file alone would show
    older numbers, so the read is refused; without a pending -wal the file is the whole database, and is read."""
    import harness.storage.store as store_module

    real_connect = store_module._connect

    def read_only_folder(uri: str, **kwargs):
        if "mode=rw" in uri or "mode=ro" in uri:
            raise sqlite3.OperationalError("unable to open database file")
        return real_connect(uri, **kwargs)

    db, run_id = _pending_wal(tmp_path, registry)
    clean = _run_into(tmp_path, tmp_path / "clean.sqlite", registry, seed=4)
    monkeypatch.setattr(store_module, "_connect", read_only_folder)
    with pytest.raises(StoreError, match=r"its latest writes are in out\.sqlite-wal.*read-only"):
        Store(db, readonly=True)
    with Store(tmp_path / "clean.sqlite", readonly=True) as store:
        assert len(store.results(clean)) == 2 * 20


def test_show_report_and_compare_leave_the_folder_as_they_found_it(tmp_path, registry, capsys):
    db = tmp_path / "runs" / "out.sqlite"
    db.parent.mkdir()
    _run_into(tmp_path, db, registry, seed=5)
    _run_into(tmp_path, db, registry, seed=6)
    before = sorted(p.name for p in db.parent.iterdir())
    assert main(["show", "--db", str(db)]) == 0
    assert main(["compare", "--db", str(db)]) == 0
    assert main(["report", "--db", str(db), "--out", str(tmp_path / "report"), "--format", "markdown"]) == 0
    assert sorted(p.name for p in db.parent.iterdir()) == before == ["out.sqlite"]


def test_a_report_on_a_full_disk_is_one_line(tmp_path, registry, capsys, monkeypatch):
    db = tmp_path / "out.sqlite"
    _run_into(tmp_path, db, registry, seed=8)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    capsys.readouterr()
    assert main(["report", "--db", str(db), "--out", str(tmp_path / "report"), "--format", "markdown"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and "cannot write the report" in err[0], err


def test_figures_print_a_label_with_dollars_as_plain_text(tmp_path, registry, capsys):
    label = r"$\frac{1}$ pgd"    # mathtext would fail on it; figures must show it as typed
    path = digits_grid(tmp_path, n=20, attacks=f'[[attacks]]\nplugin = "pgd"\nsteps = 2\nlabel = "{label}"\n'.replace(
        "\\", "\\\\"), defenses='[[defenses]]\nplugin = "none"\n[[defenses]]\nplugin = "random"\neps_d = 0.1\n')
    grid = load_grid(path, registry)
    with Store(grid.db) as store:
        run_grid(grid, store=store, progress=False)
    assert main(["report", "--db", grid.db, "--out", str(tmp_path / "report")]) == 0
    svgs = [p.read_text() for p in (tmp_path / "report" / "figures").glob("*.svg")]
    assert svgs and any("frac" in svg for svg in svgs)


def test_a_run_recorded_on_another_kind_of_device_is_not_extended_unasked(tmp_path, registry):
    """CPU and CUDA draw different random numbers: a database holding this grid's run from the other kind of device
    is refused with one line, unless the run is continued explicitly; then the run record says so."""
    from harness.api.errors import HarnessError
    from harness.grid.config import Overrides

    path = digits_grid(tmp_path, n=40, attacks='[[attacks]]\nplugin = "pgd"\nsteps = 2\n')
    # the first part of the run as a CUDA machine records it (computed here, on the CPU, under its identity)
    first = load_grid(path, registry, overrides=Overrides(resume_from_device="cuda"))
    assert first.resumed_from == "cuda" and first.identity()["device"] == "cuda"
    with Store(first.db) as store:
        run_grid(first, store=store, progress=False)
    plain = load_grid(path, registry)
    assert plain.run_id != first.run_id
    with Store(plain.db) as store, pytest.raises(HarnessError, match=r"computed on cuda, and this machine computes on "
                                                                      r"cpu.*--resume-from-device cuda"):
        run_grid(plain, store=store, progress=False)
    with Store(plain.db, readonly=True) as store:
        assert [r.run_id for r in store.runs()] == [first.run_id]       # nothing was written for the refused run
    again = load_grid(path, registry, overrides=Overrides(resume_from_device="cuda"))
    with Store(again.db) as store:
        assert run_grid(again, store=store, progress=False) == first.run_id
        assert "continues a run computed on cuda" in store.run(first.run_id).device


def test_a_plugin_package_that_fails_to_import_is_one_line_and_every_other_command_works(tmp_path, fake_site,
                                                                                          registry, capsys):
    db = tmp_path / "out.sqlite"
    run_id = _run_into(tmp_path, db, registry, seed=9)
    install_fake_plugin(fake_site, "0.3.0", 'raise ImportError("needs a library this machine lacks")\n')
    capsys.readouterr()
    for argv in (["show", "--db", str(db)], ["report", "--db", str(db), "--out", str(tmp_path / "r"), "--format",
                                                   "markdown"], ["plugins", "--kind", "defense"]):
        sys.modules.pop("fake_attack_plugin", None)
        assert main(argv) == 0, argv
        out, err = capsys.readouterr()
        assert err.strip().splitlines() == ["harness: skipped plugin package fake-attack-plugin 0.3.0, entry point "
                                            "fake = fake_attack_plugin: ImportError: needs a library this machine lacks"]
    assert main(["show", "--db", str(db)]) == 0 and f"run {run_id}" in capsys.readouterr().out


NO_PLUGINS = '''
import importlib.abc, sys
class NoPlugins(importlib.abc.MetaPathFinder):
    """Every plugin package fails to import, built-ins included: only the core and the reports are left."""
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("harness_plugins", "third_party_attack", "fake_attack_plugin"):
            raise ImportError(f"{name} is not importable here")
sys.meta_path.insert(0, NoPlugins())
from harness.cli import main
sys.exit(main(sys.argv[1:]))
'''


def test_show_report_and_compare_read_only_the_database_with_no_plugin_importable(tmp_path):
    """A record database outlives its plugins: with every plugin package broken (the built-ins too), show, report
    and compare still work from what the database holds, and each broken package is one line on stderr."""
    import subprocess

    from conftest import REPO
    db = shutil.copy(REPO / "results" / "record" / "fastat40.sqlite", tmp_path / "fastat40.sqlite")

    def harness(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", NO_PLUGINS, *argv], capture_output=True, text=True, cwd=tmp_path)

    for argv in (["show", "--db", str(db), "--run", "2770dc2a1aff"],
                 ["report", "--db", str(db), "--run", "37ec527209be", "--out", str(tmp_path / "r")],
                 ["compare", "--db", str(db), "--run", "2770dc2a1aff", "--db", str(db), "--run", "37ec527209be"]):
        proc = harness(*argv)
        assert proc.returncode == 0, (argv, proc.stderr)
        skipped = proc.stderr.strip().splitlines()
        assert skipped and all(line.startswith("harness: skipped plugin package robustness-harness") for line in skipped)
        assert {line.split("entry point ")[1].split(" =")[0] for line in skipped} == {
            "builtin-attacks", "builtin-defenses", "builtin-models", "builtin-datasets"}
    assert "Hedge" in harness("show", "--db", str(db), "--run", "2770dc2a1aff").stdout
    assert (tmp_path / "r" / "report.html").stat().st_size > 10_000 and "Hedge" in (tmp_path / "r" / "main.tex").read_text()
