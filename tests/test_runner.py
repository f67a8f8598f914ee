"""The scheduler: the paper's protocol, output checks, worst case and resumability, on real digits models."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import types
import warnings
from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
import pytest
import sqlite_utils
import torch

from conftest import REPO, digits_grid, harness_cli
from harness.analysis.notices import Notice
from harness.api.errors import AttackOutputError, PluginCrash, PluginError
from harness.api.interfaces import Attack, AttackOutput, Defense
from harness.api.registry import Registry
from harness.api.specs import param
from harness.grid.config import identity_hash
from harness.grid.plan import plan
from harness.grid.reader import load_grid
from harness.run.runner import run_grid
from harness.storage.store import Store
from harness_plugins.attacks.pgd import PGD

HEDGE_FAST = '[[defenses]]\nplugin = "hedge"\nsteps = 3\neps_d = 0.1\nstep_size = 0.05\n'
THREE_DEFENSES = '[[defenses]]\nplugin = "none"\n[[defenses]]\nplugin = "random"\neps_d = 0.1\n' + HEDGE_FAST


@dataclass(frozen=True)
class CountingPGD(PGD, name="counting-pgd"):
    """PGD that counts its calls, to show the examples are generated once for all defenses."""

    calls: ClassVar[list] = []

    def __call__(self, model, x, y, threat, *, generator):
        CountingPGD.calls.append(len(x))
        return super().__call__(model, x, y, threat, generator=generator)


@dataclass(frozen=True)
class BadAttack(Attack, name="bad"):
    """Deliberately broken: outside (2ε), nan, box (pixel > 1), shape, train (flips mode), labels (y += 1 in
    place), inputs (writes into x and returns it), weights (zeroes the model), float64, queries (too few
    counts), raises (an exception of its own)."""

    how: str = param("outside", "which way to break")

    def __call__(self, model, x, y, threat, *, generator):
        if self.how == "labels":
            y.add_(1)
            return x.clone()
        if self.how == "inputs":
            return x.fill_(0.5)
        if self.how == "weights":
            with torch.no_grad():
                for p in model.parameters():
                    p.data.zero_()  # .data: invisible to autograd's version counters
            return x.clone()
        if self.how == "float64":
            return x.double()
        if self.how == "queries":
            return AttackOutput(x.clone(), torch.ones(3, dtype=torch.long))
        if self.how == "raises":
            raise ValueError("the plugin's own bug")
        if self.how == "outside":
            out = x.clone()
            out[3] = (x[3] + 2 * threat.eps).clamp(0, 1)
            out[3, 0, 0, 0] = min(float(x[3, 0, 0, 0]) + 2 * threat.eps, 1.0) if x[3, 0, 0, 0] < 0.5 else x[3, 0, 0, 0] - 2 * threat.eps
            return out
        if self.how == "nan":
            out = x.clone()
            out[1, 0, 2, 2] = float("nan")
            return out
        if self.how == "box":
            return x + 0.5 * threat.eps  # in the ball, but above 1 where x is near 1
        if self.how == "shape":
            return x[:, :, :4]
        if self.how == "swap":  # two rows of a weight swapped: sums and sums of squares stay the same
            weight = next(p for p in model.parameters() if p.dim() >= 2)
            with torch.no_grad():
                weight.data[[0, 1]] = weight.data[[1, 0]]
            return x.clone()
        if self.how == "hook":
            model.register_forward_hook(lambda module, args, out: out * 0)
            return x.clone()
        if self.how == "forward":
            original = model.forward
            model.forward = lambda inputs: original(inputs) * 0
            return x.clone()
        if self.how == "submodule":  # only a submodule switched to train mode (batch-norm would update)
            list(model.modules())[2].train()
            return x.clone()
        if self.how == "buffer":
            model.register_buffer("stolen", torch.zeros(1))
            return x.clone()
        if self.how == "exit":
            raise SystemExit(0)
        if self.how == "widen":  # widen the frozen threat model it was handed, then step outside the real one
            object.__setattr__(threat, "eps", 1.0)
            return (x + 0.5).clamp(0, 1)
        model.train()
        return x


@dataclass(frozen=True)
class ChattyPGD(PGD, name="chatty"):
    """PGD that talks as libraries do: a print, a warning and a log record on every call."""

    def __call__(self, model, x, y, threat, *, generator):
        print("computing the gradients now")
        warnings.warn("this might lead to unreliable evaluation")
        logging.getLogger("some.library").warning("there are 2 points with zero gradient!")
        return super().__call__(model, x, y, threat, generator=generator)


@dataclass(frozen=True)
class BadDefense(Defense, name="bad-defense"):
    """Deliberately broken predictions: NaN logits, or one column more than the dataset has classes."""

    how: str = param("nan")

    def purify(self, model, x, *, generator, differentiable=False):
        return x

    def logits(self, model, x, *, generator, differentiable=False):
        out = model(x)
        if self.how == "nan":
            return out.masked_fill(torch.arange(len(x))[:, None] == 1, float("nan"))
        return torch.cat([out, out[:, :1] + 100], dim=1)   # "class 10" would win everywhere


def _test_plugins() -> types.ModuleType:
    """This module, as a plugin package registered in code: its classes that name themselves are its plugins."""
    return sys.modules[__name__]


@pytest.fixture(scope="module")
def registry_plus():
    return Registry(extra_modules=(_test_plugins(),))


def test_examples_are_generated_once_and_reused_by_every_defense(tmp_path, registry_plus):
    CountingPGD.calls.clear()
    grid = load_grid(digits_grid(tmp_path, n=60, batch_size=20, repeats=2,
                                 attacks='[[attacks]]\nplugin = "counting-pgd"\nsteps = 5\nstep_size = 0.03\n',
                                 defenses=THREE_DEFENSES), registry_plus)
    store = Store(grid.db)
    run_id = run_grid(grid, store=store, progress=False)
    # 2 repeats × 3 batches, not × 3 defenses
    assert CountingPGD.calls == [20] * 6
    rows = store.results(run_id)
    assert len(rows) == 60 * 2 * 3 * 2  # examples × attacks (clean + pgd) × defenses × repeats
    # re-running the finished grid skips every unit
    run_grid(grid, store=store, progress=False)
    assert CountingPGD.calls == [20] * 6
    assert len(store.results(run_id)) == len(rows)


def test_worst_case_is_the_per_example_and_across_attacks(tmp_path, registry):
    attacks = ('[[attacks]]\nplugin = "pgd"\nsteps = 5\nstep_size = 0.03\n'
               '[[attacks]]\nplugin = "cw"\nsteps = 5\nstep_size = 0.03\n'
               '[[attacks]]\nplugin = "pgd"\nlabel = "pgd-1"\nsteps = 1\nstep_size = 0.1\n')
    grid = load_grid(digits_grid(tmp_path, n=80, repeats=2, attacks=attacks, defenses=THREE_DEFENSES), registry)
    store = Store(grid.db)
    run_id = run_grid(grid, store=store, progress=False)
    rows = store.results(run_id)
    direct = (rows.groupby(["model", "defense", "repeat", "idx"])["correct"].min()
              .groupby(["model", "defense", "repeat"]).mean())
    sql = store.worst_case(run_id, store.run(run_id).labels("attacks")).set_index(["model", "defense", "repeat"])["acc"]
    pd.testing.assert_series_equal(sql.sort_index(), direct.sort_index(), check_names=False)
    # and the worst case is below every single attack, strictly below at least one somewhere
    per_attack = rows.groupby(["model", "defense", "repeat", "attack"])["correct"].mean().unstack("attack")
    assert (sql.sort_index().values[:, None] <= per_attack.sort_index().values + 1e-12).all()
    assert (sql.sort_index().values < per_attack.min(axis=1).sort_index().values - 1e-12).any()


def test_worst_case_ignores_examples_missing_an_attack(tmp_path, registry):
    grid = load_grid(digits_grid(tmp_path, n=40, attacks='[[attacks]]\nplugin = "pgd"\nsteps = 2\n'), registry)
    store = Store(grid.db)
    run_id = run_grid(grid, store=store, progress=False)
    store.db.execute("DELETE FROM results WHERE attack = 'pgd' AND idx >= 30")
    store.db.conn.commit()
    worst = store.worst_case(run_id, store.run(run_id).labels("attacks"))
    assert int(worst["n"].iloc[0]) == 30


@pytest.mark.parametrize("how,message", [
    ("outside", r"attack 'bad' left the threat model: example 3 of the batch lies at Linf distance 0\.2000\d+ > eps 0\.100000"),
    ("nan", r"attack 'bad' returned NaN or inf values \(first at example 1 of the batch\)"),
    ("box", r"attack 'bad' returned a pixel value 1\.05\d+ outside \[0,1\]"),
    ("shape", r"attack 'bad' returned shape \(20, 1, 4, 8\); the input's is \(20, 1, 8, 8\)"),
    ("train", r"plugin 'bad' switched the model to train mode"),
    ("labels", r"plugin 'bad' wrote into its input y \(the labels\) \(20 examples changed\)"),
    ("inputs", r"plugin 'bad' wrote into its input x \(20 examples changed\)"),
    ("weights", r"plugin 'bad' changed the model's weights or buffers \(\d+ tensors\)"),
    ("float64", r"attack 'bad' returned a torch.float64 tensor on cpu; the input is torch.float32 on cpu"),
    ("queries", r"attack 'bad' returned queries of shape \(3,\); expected one count per example, shape \(20,\)"),
    ("raises", r"attack 'bad' \(plugin 'bad'\) raised ValueError: the plugin's own bug"),
    ("swap", r"plugin 'bad' changed the model's weights or buffers \(1 tensors\)"),
    ("hook", r"plugin 'bad' added, removed or replaced a hook or a forward method"),
    ("forward", r"plugin 'bad' added, removed or replaced a hook or a forward method"),
    ("submodule", r"plugin 'bad' switched the submodule '[\w.]+' to train mode"),
    ("buffer", r"plugin 'bad' changed which tensors the model holds \(added: stolen"),
    ("exit", r"attack 'bad' \(plugin 'bad'\) raised SystemExit"),
    ("widen", r"attack 'bad' left the threat model: .* > eps 0\.100000"),
])
def test_runner_rejects_a_bad_attack_and_records_nothing_for_it(tmp_path, registry_plus, how, message):
    attacks = (f'[[attacks]]\nplugin = "bad"\nhow = "{how}"\n'
               '[[attacks]]\nplugin = "pgd"\nsteps = 5\nstep_size = 0.03\n')  # would run after the bad unit
    grid = load_grid(digits_grid(tmp_path, n=40, attacks=attacks), registry_plus)
    store = Store(grid.db)
    with pytest.raises((AttackOutputError, PluginError, PluginCrash), match=message):
        run_grid(grid, store=store, progress=False)
    rows = store.results(grid.run_id)
    assert set(rows["attack"]) == {"clean"}  # the bad unit committed no row, and the run stopped before pgd
    assert identity_hash(grid.identity())[:12] == grid.run_id   # the grid it was handed a copy of is untouched


@pytest.mark.parametrize("how,message", [
    ("nan", r"defense 'bad-defense' returned NaN or infinite logits \(first at input 1\)"),
    ("columns", r"defense 'bad-defense' returned logits of shape \(20, 11\); expected \(20, 10\)"),
])
def test_runner_rejects_a_bad_defense_and_records_nothing_for_it(tmp_path, registry_plus, how, message):
    grid = load_grid(digits_grid(tmp_path, n=40, defenses=f'[[defenses]]\nplugin = "bad-defense"\nhow = "{how}"\n'),
                     registry_plus)
    store = Store(grid.db)
    with pytest.raises(PluginError, match=message):
        run_grid(grid, store=store, progress=False)
    assert store.results(grid.run_id).empty   # the clean unit stopped at its first batch: nothing recorded


def test_a_plugins_exception_shows_its_traceback_under_a_line_naming_the_plugin(tmp_path, capsys, monkeypatch):
    import harness.cli as cli

    monkeypatch.setattr(cli, "Registry", lambda: Registry(extra_modules=(_test_plugins(),)))
    grid = digits_grid(tmp_path, n=20, attacks='[[attacks]]\nplugin = "bad"\nhow = "raises"\n')
    assert cli.main(["run", "--grid", str(grid), "--quiet"]) == 2
    err = capsys.readouterr().err.splitlines()
    first = next(i for i, line in enumerate(err) if line.startswith("harness: error:"))
    assert "attack 'bad' (plugin 'bad') raised ValueError: the plugin's own bug; its traceback follows" in err[first]
    assert err[first + 1] == "Traceback (most recent call last):" and err[-1] == "ValueError: the plugin's own bug"
    assert any("test_runner.py" in line for line in err)  # the frame inside the plugin is shown


def test_randomised_defense_votes(tmp_path, registry):
    grid = load_grid(digits_grid(tmp_path, n=40, extra="votes = 7", defenses=THREE_DEFENSES), registry)
    store = Store(grid.db)
    rows = store.results(run_grid(grid, store=store, progress=False))
    none = rows[rows.defense == "none"]
    assert (none.vote_frac == 1.0).all()
    hedged = rows[rows.defense == "hedge"]
    assert ((hedged.vote_frac > 0.5 - 1e-9) & (hedged.vote_frac <= 1.0)).all()
    assert (hedged.vote_frac * 7).round(6).mod(1).eq(0).all()  # a share of 7 draws


def test_adaptive_attack_gets_one_unit_per_defense(tmp_path, registry):
    attacks = '[[attacks]]\nplugin = "pgd"\nlabel = "pgd-adaptive"\ntarget = "defended"\nsteps = 3\nstep_size = 0.05\n'
    grid = load_grid(digits_grid(tmp_path, n=20, attacks=attacks, defenses=THREE_DEFENSES), registry)
    store = Store(grid.db)
    run_id = run_grid(grid, store=store, progress=False)
    units = store.units(run_id)
    adaptive = units[units.attack == "pgd-adaptive"]
    assert sorted(adaptive.defenses) == ['["hedge"]', '["none"]', '["random"]']
    rows = store.results(run_id)
    assert (rows[rows.attack == "pgd-adaptive"].adaptive == 1).all()


def _rows(db_path) -> pd.DataFrame:
    db = sqlite_utils.Database(db_path)
    frame = pd.DataFrame(list(db["results"].rows))
    return frame.drop(columns=["attack_s", "defense_s"]).sort_values(["model", "attack", "defense", "repeat", "idx"]) \
        .reset_index(drop=True)


def test_resume_after_sigkill_gives_the_rows_of_an_uninterrupted_run(tmp_path):
    attacks = '[[attacks]]\nplugin = "pgd"\nsteps = 10\nstep_size = 0.02\n'
    defenses = '[[defenses]]\nplugin = "none"\n[[defenses]]\nplugin = "hedge"\nsteps = 10\neps_d = 0.1\nstep_size = 0.02\n'
    grid = digits_grid(tmp_path, n=200, batch_size=10, repeats=2, attacks=attacks, defenses=defenses)
    killed_db, clean_db = tmp_path / "killed.sqlite", tmp_path / "uninterrupted.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "--grid", str(grid), "--db", str(killed_db),
                             "--quiet"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        try:
            done = sqlite_utils.Database(killed_db).execute("SELECT COALESCE(SUM(done), 0) FROM units").fetchone()[0]
        except Exception:  # the file or table may not exist yet
            continue
        if done >= 30:
            break
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = sqlite_utils.Database(killed_db)
    total_units = partial["units"].count
    finished = partial.execute("SELECT COUNT(*) FROM units WHERE finished = 1").fetchone()[0]
    assert finished < total_units  # it really was interrupted
    committed = partial["results"].count
    assert committed > 0 and committed % 10 == 0 or committed % 20 == 0  # whole batches only
    harness_cli("run", "--grid", str(grid), "--db", str(killed_db), "--quiet")
    harness_cli("run", "--grid", str(grid), "--db", str(clean_db), "--quiet")
    resumed, uninterrupted = _rows(killed_db), _rows(clean_db)
    assert len(resumed) == 200 * 2 * 2 * 2
    pd.testing.assert_frame_equal(resumed, uninterrupted)


def test_dry_run_prints_units_and_passes(tmp_path):
    attacks = '[[attacks]]\nplugin = "pgd"\nsteps = 10\n'
    grid = digits_grid(tmp_path, n=50, repeats=2, attacks=attacks, defenses=THREE_DEFENSES)
    out = harness_cli("run", "--grid", str(grid), "--dry-run").stdout
    assert "4 work units on 50 examples of digits" in out
    # pgd unit: attack 10 fwd + 10 bwd; none 1 fwd; random 5 draws × 1 fwd; hedge 5 draws × (3 fwd + 3 bwd + 1 fwd)
    pgd_line = next(line for line in out.splitlines() if "robust × PGD [pgd] on the bare model × r0" in line)
    assert "defenses: − [none], Random [random], Hedge [hedge]" in pgd_line
    assert "forward 1,800  backward 1,250" in pgd_line  # (10 + 1 + 5 + 20) × 50 and (10 + 15) × 50
    assert not (tmp_path / "results.sqlite").exists()


def test_show_prints_the_reports_table_fitted_to_the_terminal_and_the_data_for_scripts(tmp_path):
    attacks = '[[attacks]]\nplugin = "pgd"\nsteps = 3\nstep_size = 0.05\n'
    grid = digits_grid(tmp_path, n=40, repeats=2, attacks=attacks, defenses=THREE_DEFENSES)
    harness_cli("run", "--grid", str(grid), "--quiet")
    db = str(tmp_path / "results.sqlite")
    wide = harness_cli("show", "--db", db, env={"COLUMNS": "250"}).stdout.splitlines()
    header = next(line for line in wide if "Nat-Acc." in line)
    assert header.split()[:3] == ["Nat-Acc.", "PGD", "Worst"] and "Worst Case (adaptive)" in header  # paper names
    rows = [line for line in wide if re.search(r"\d+\.\d\d ± \d+\.\d\d \(\d+\.\d–\d+\.\d\)", line)]  # mean ± std (Wilson)
    assert [r.split()[:2] for r in rows][0] == ["robust", "−"]                   # the model once, then its group
    assert [r.split()[0] for r in rows][1:] == ["Random", "Hedge"]
    assert sum(r.endswith("not evaluated") for r in rows) == 3   # no adaptive attack: never the transfer value there
    narrow = harness_cli("show", "--db", db, env={"COLUMNS": "90"}).stdout.splitlines()
    table_lines = narrow[2:narrow.index(next(line for line in narrow if line.startswith("warning")))]
    assert max(map(len, table_lines)) <= 90 < max(map(len, wide))   # the same table, wrapped into blocks
    assert sum("Nat-Acc." in line or "Worst Case (adaptive)" in line for line in table_lines) == 2
    store = Store(db, readonly=True)
    expected = store.accuracy(store.run().run_id).groupby(["defense", "attack"]).acc.mean() * 100
    cells = json.loads(harness_cli("show", "--db", db, "--format", "json").stdout)
    by_name = {"−": "none", "Random": "random", "Hedge": "hedge"}
    measured = {(by_name[c["defense"]], c["key"]): c["accuracy"] for c in cells if c["key"] in ("clean", "pgd")}
    assert measured == pytest.approx({k: v for k, v in expected.items()})
    csv_lines = harness_cli("show", "--db", db, "--format", "csv").stdout.splitlines()
    assert csv_lines[0].startswith("model,defense,column,key,evaluated,accuracy") and len(csv_lines) == 1 + 3 * 4


def test_a_unit_another_run_of_the_database_finished_is_copied_not_computed(tmp_path, registry):
    """Two grids that share units (same data, model, attack, defenses, seed and settings) in one database: the
    second copies the first's finished units, rows identical, and computes only what is new to it."""
    pgd = '[[attacks]]\nplugin = "pgd"\nsteps = 3\nstep_size = 0.03\n'
    defenses = '[[defenses]]\nplugin = "none"\n[[defenses]]\nplugin = "random"\neps_d = 0.1\n'
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    first = load_grid(digits_grid(tmp_path / "a", n=40, attacks=pgd, defenses=defenses), registry)
    second = load_grid(digits_grid(tmp_path / "b", n=40, defenses=defenses,
                                   attacks=pgd + '[[attacks]]\nplugin = "cw"\nsteps = 3\nstep_size = 0.03\n'),
                       registry, db_override=first.db)
    assert second.run_id != first.run_id
    with Store(first.db) as store:
        run_grid(first, store=store, progress=False)
        run_grid(second, store=store, progress=False)
        units = store.units(second.run_id).set_index("attack")
        assert units.loc["clean"].reused_from == units.loc["pgd"].reused_from == first.run_id
        assert pd.isna(units.loc["cw"].reused_from) and units.finished.all()
        columns = ["unit_key", "defense", "idx", "pred", "vote_frac", "draws", "linf"]
        for attack in ("clean", "pgd"):
            ours, theirs = (store.results(run)[lambda r: r.attack == attack][columns].sort_values(["defense", "idx"])
                            .reset_index(drop=True) for run in (second.run_id, first.run_id))
            assert ours.equals(theirs) and len(ours) == 2 * 40


def test_units_that_record_more_are_not_copied_from_units_that_recorded_less(tmp_path, registry):
    """The Lipschitz gaps and the saved examples enter a unit's key where they differ from the defaults."""
    path = digits_grid(tmp_path, n=20, attacks='[[attacks]]\nplugin = "pgd"\nsteps = 2\n')
    plain = {u.key for u in plan(load_grid(path, registry))}
    for setting in ("lipschitz = true", "save_examples = 2"):
        other = tmp_path / f"{setting.split()[0]}.toml"
        other.write_text(setting + "\n" + path.read_text())
        assert plain.isdisjoint(u.key for u in plan(load_grid(other, registry))), setting


def test_what_a_plugin_prints_is_kept_once_per_unit_for_the_report_not_mixed_into_the_output(tmp_path, registry_plus,
                                                                                               capsys):
    from harness.analysis.summary import warnings_for

    grid = load_grid(digits_grid(tmp_path, n=60, batch_size=20, attacks='[[attacks]]\nplugin = "chatty"\nsteps = 2\n'),
                     registry_plus)
    capsys.readouterr()
    with Store(grid.db) as store:
        run_grid(grid, store=store, progress=False)
        out, err = capsys.readouterr()
        assert "computing the gradients" not in out + err and "zero gradient" not in out + err
        units = store.units(grid.run_id).set_index("attack")
        assert sorted(json.loads(units.loc["chatty"].messages)) == [        # three batches, each message once
            "attack PGD [chatty]: computing the gradients now",   # named as tables name it, the label in brackets
            "attack PGD [chatty]: there are 2 points with zero gradient!",
            "attack PGD [chatty]: this might lead to unreliable evaluation"]
        assert pd.isna(units.loc["clean"].messages)
        shown = warnings_for(store, grid.run_id)
    assert Notice("plugin-output", "robust × PGD [chatty] on the bare model × r0: attack PGD [chatty]: there are 2 "
                  "points with zero gradient!") in shown
