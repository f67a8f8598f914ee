"""`harness run --estimate`: calibrate on this device, predict per unit and for the grid, write nothing."""

from __future__ import annotations

import pytest

from conftest import PGD_AND_SQUARE, digits_grid, harness_cli, none_and_hedge
from harness.api.interfaces import Passes
from harness.grid.plan import plan, unit_cost
from harness.grid.reader import load_grid
from harness.run.estimate import Calibration, Recorded, estimate
from harness.run.runner import run_grid
from harness.storage.store import Store

ATTACKS = PGD_AND_SQUARE
DEFENSES = none_and_hedge(steps=3)


def test_seconds_are_passes_times_the_calibrated_cost(tmp_path, registry):
    grid = load_grid(digits_grid(tmp_path, attacks=ATTACKS, defenses=DEFENSES), registry)
    cal = Calibration(forward_s=1e-3, backward_s=2e-3)
    rows = estimate(grid, {"robust": cal})
    assert [r.unit.key for r in rows] == [u.key for u in plan(grid)]
    for row in rows:
        passes = unit_cost(row.unit, grid)
        assert row.passes == passes
        assert row.seconds == pytest.approx(passes.forward * 1e-3 + passes.backward * 2e-3)
        assert row.remaining_s == row.seconds
    assert Calibration(1.0, 3.0).seconds(Passes(2, 1)) == 5.0


def test_cli_estimate_calibrates_prints_every_unit_and_writes_nothing(tmp_path):
    path = digits_grid(tmp_path, attacks=ATTACKS, defenses=DEFENSES)
    done = harness_cli("run", "--grid", str(path), "--estimate")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "calibration robust on cpu (fp32, batch 20): forward" in out
    assert out.count(" ≈ ") == 3 and "estimated wall time:" in out  # clean, pgd, square
    assert not (tmp_path / "results.sqlite").exists()


def test_estimate_counts_only_what_is_left_of_a_partial_run(tmp_path, registry):
    grid = load_grid(digits_grid(tmp_path, attacks=ATTACKS, defenses=DEFENSES, n=40), registry)
    store = Store(grid.db)
    run_grid(grid, store=store, progress=False)
    units = store.units(grid.run_id)
    first = units.unit_key.iloc[1]
    store.db.execute("UPDATE units SET done = 20, finished = 0 WHERE unit_key = ?", [first])
    store.db.conn.commit()
    done = {u.unit_key: Recorded(u.done, 0.0) for u in store.units(grid.run_id).itertuples()}  # no seconds: no pace
    rows = estimate(grid, {"robust": Calibration(1e-3, 1e-3)}, done)
    left = {r.unit.key: r.remaining_s / r.seconds for r in rows}
    assert left[first] == pytest.approx(0.5)
    assert all(v == 0 for k, v in left.items() if k != first)


def test_what_is_left_runs_at_the_pace_its_unit_or_its_attack_measured(tmp_path, registry):
    """A unit with examples in the database is paced by its own seconds; a unit still to run by the median pace of
    its attack's recorded units (robust to one slowed by other work); one whose attack has none by the calibration."""
    import statistics

    grid = load_grid(digits_grid(tmp_path, attacks=ATTACKS, defenses=DEFENSES, n=40, repeats=4), registry)
    with Store(grid.db) as store:
        run_grid(grid, store=store, progress=False)
        units = store.units(grid.run_id)
    cal = {"robust": Calibration(1e-4, 2e-4)}
    whole = {r.unit.key: r.seconds for r in estimate(grid, cal)}
    by = {(u.attack, u.repeat): u for u in units.itertuples()}
    pgd = [by[("pgd", r)] for r in range(4)]
    square = by[("square", 0)]
    recorded = {u.unit_key: Recorded(u.done, u.seconds) for u in pgd[:2]}
    recorded[pgd[2].unit_key] = Recorded(40, pgd[2].seconds * 10)            # slowed by other work on the machine
    recorded[square.unit_key] = Recorded(20, square.seconds)                 # half its examples, in all its time
    rows = {r.unit.key: r for r in estimate(grid, cal, recorded)}

    paces = [rows[u.unit_key].pace for u in pgd[:3]]
    assert paces == pytest.approx([pgd[0].seconds / whole[pgd[0].unit_key], pgd[1].seconds / whole[pgd[1].unit_key],
                                   pgd[2].seconds * 10 / whole[pgd[2].unit_key]])
    assert all(rows[u.unit_key].remaining_s == 0 and rows[u.unit_key].paced_by == "itself" for u in pgd[:3])
    to_run = rows[pgd[3].unit_key]
    assert to_run.paced_by == "its attack" and to_run.pace == pytest.approx(statistics.median(paces))
    assert to_run.pace < statistics.mean(paces)
    assert to_run.remaining_s == pytest.approx(whole[pgd[3].unit_key] * to_run.pace)
    half = rows[square.unit_key]                 # its second half takes what its first did
    assert half.paced_by == "itself" and half.remaining_s == pytest.approx(square.seconds)
    assert rows[by[("square", 1)].unit_key].pace == pytest.approx(half.pace)
    clean = rows[by[("clean", 0)].unit_key]      # nothing of its attack is recorded: the calibration alone
    assert clean.paced_by == "" and clean.pace == 1 and clean.remaining_s == whole[clean.unit.key]


def test_adaptive_cost_counts_its_majority_vote_checks(tmp_path, registry):
    """Against a random defense the adaptive attack scores its candidates as the runner does: votes × the defense."""
    costs = {}
    for success in ("vote", "single-draw"):
        attacks = f'[[attacks]]\nplugin = "adaptive"\nn_iter = 4\nn_target_classes = 2\nsuccess = "{success}"\n'
        grid = load_grid(digits_grid(tmp_path, attacks=attacks, defenses=DEFENSES, n=40,
                                     extra="votes = 3"), registry)
        hedge = next(u for u in plan(grid) if u.adaptive and u.defenses[0].plugin == "hedge")
        costs[success] = unit_cost(hedge, grid)
    from harness_plugins.defenses.hedge import Hedge

    scored = Hedge(eps_d=0.1, steps=3, step_size=0.025).passes() + Passes(1, 0)  # the defense, then the prediction
    checks = 1 + 2 * 2                                   # the clean check, then two candidates per target class
    extra = scored * (3 * checks * 40)                   # votes × checks × examples
    assert costs["vote"].forward - costs["single-draw"].forward == extra.forward > 0
    assert costs["vote"].backward - costs["single-draw"].backward == extra.backward > 0


def test_estimate_after_a_run_shows_the_passes_each_unit_made(tmp_path, registry):
    grid = load_grid(digits_grid(tmp_path, attacks=ATTACKS, defenses=DEFENSES, n=40), registry)
    with Store(grid.db) as store:
        run_grid(grid, store=store, progress=False)
        units = store.units(grid.run_id)
    out = harness_cli("run", "--grid", str(tmp_path / "grid.toml"), "--estimate").stdout
    for unit in units.itertuples():
        line = next(line for line in out.splitlines() if line.strip().startswith("robust × ")
                    and f"[{unit.attack}] " in line)
        assert f"made: forward {unit.counted_forward / 40:,.1f}  backward {unit.counted_backward / 40:,.1f}" in line


def test_a_dry_run_ends_with_gpu_hours_per_model_and_attack_without_any_weights(capsys):
    """configs/table1.toml names eight RobustBench models, none of whose weights are here: the summary counts each
    architecture's FLOPs on the meta device and gives every model × attack its passes and H100 hours."""
    from harness.cli import main

    assert main(["run", "--grid", "configs/table1.toml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    summary = out.split("summary per model × attack, in passes and in H100 hours")[1]
    models = [line for line in summary.splitlines() if line.startswith("  ") and not line.startswith("    ")]
    assert len(models) == 8 and all("GFLOP per image" in line and "GPU-h in all" in line for line in models)
    assert summary.count("≈") == 8 * 14


def test_flops_are_counted_from_the_architecture_alone():
    """PreActResNet-18 (Wong2020Fast's architecture) on one 32×32 image: 1.11 GFLOP forward, as the throughput
    benchmark's FLOP counter measures on a real forward pass."""
    import torch

    from harness.run.flops import forward_flops
    from harness_plugins.models.zoo import RobustBenchModel

    with torch.device("meta"):
        module, shape = RobustBenchModel(name="Wong2020Fast").architecture()
    assert shape == (3, 32, 32) and forward_flops(module, shape) == pytest.approx(1.11e9, rel=0.01)


def test_estimate_times_an_architecture_whose_weights_are_absent_and_says_so(tmp_path):
    """table1's RobustBench models are not on disk here, nor is CIFAR-10: the estimate times the architecture with
    random weights on random inputs and says so, instead of stopping at the first missing file."""
    done = harness_cli("run", "--grid", "configs/table1.toml", "--estimate", "--models", "Standard", "--n-examples", "2",
                       "--attacks", "pgd", "--defenses", "none")
    assert done.returncode == 0, done.stderr
    assert "calibration Standard (its architecture with random weights: the checkpoint is not on disk)" in done.stdout
    assert "estimated wall time:" in done.stdout
