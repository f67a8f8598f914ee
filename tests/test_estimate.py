"""`harness run --estimate`: calibrate on this device, predict per unit and for the grid, write nothing."""

from __future__ import annotations

import pytest

from conftest import PGD_AND_SQUARE, digits_grid, harness_cli, none_and_hedge
from harness.config import load_grid
from harness.estimate import Calibration, estimate
from harness.interfaces import Passes
from harness.plan import plan, unit_cost
from harness.runner import run_grid
from harness.store import Store

ATTACKS = PGD_AND_SQUARE
DEFENSES = none_and_hedge(steps=3)


def test_seconds_are_passes_times_the_calibrated_cost(tmp_path, registry):
    grid = load_grid(digits_grid(tmp_path, attacks=ATTACKS, defenses=DEFENSES), registry)
    cal = Calibration(forward_s=1e-3, backward_s=2e-3)
    rows = estimate(grid, registry, {"robust": cal})
    assert [r.unit.key for r in rows] == [u.key for u in plan(grid, registry)]
    for row in rows:
        passes = unit_cost(row.unit, grid, registry)
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
    run_grid(grid, registry, store=store, progress=False)
    units = store.units(grid.run_id)
    first = units.unit_key.iloc[1]
    store.db.execute("UPDATE units SET done = 20, finished = 0 WHERE unit_key = ?", [first])
    store.db.conn.commit()
    done = dict(zip(store.units(grid.run_id).unit_key, store.units(grid.run_id).done))
    rows = estimate(grid, registry, {"robust": Calibration(1e-3, 1e-3)}, done)
    left = {r.unit.key: r.remaining_s / r.seconds for r in rows}
    assert left[first] == pytest.approx(0.5)
    assert all(v == 0 for k, v in left.items() if k != first)


def test_adaptive_cost_counts_its_majority_vote_checks(tmp_path, registry):
    """Against a random defense the adaptive attack scores its candidates as the runner does: votes × the defense."""
    costs = {}
    for success in ("vote", "single-draw"):
        attacks = f'[[attacks]]\nplugin = "adaptive"\nn_iter = 4\nn_target_classes = 2\nsuccess = "{success}"\n'
        grid = load_grid(digits_grid(tmp_path, attacks=attacks, defenses=DEFENSES, n=40,
                                     extra="votes = 3"), registry)
        hedge = next(u for u in plan(grid, registry) if u.adaptive and u.defenses[0].plugin == "hedge")
        costs[success] = unit_cost(hedge, grid, registry)
    from harness_plugins.defenses.hedge import Hedge

    scored = Hedge(eps_d=0.1, steps=3, step_size=0.025).passes() + Passes(1, 0)  # the defense, then the prediction
    checks = 1 + 2 * 2                                   # the clean check, then two candidates per target class
    extra = scored * (3 * checks * 40)                   # votes × checks × examples
    assert costs["vote"].forward - costs["single-draw"].forward == extra.forward > 0
    assert costs["vote"].backward - costs["single-draw"].backward == extra.backward > 0


def test_estimate_after_a_run_shows_the_passes_each_unit_made(tmp_path, registry):
    grid = load_grid(digits_grid(tmp_path, attacks=ATTACKS, defenses=DEFENSES, n=40), registry)
    with Store(grid.db) as store:
        run_grid(grid, registry, store=store, progress=False)
        units = store.units(grid.run_id)
    out = harness_cli("run", "--grid", str(tmp_path / "grid.toml"), "--estimate").stdout
    for unit in units.itertuples():
        line = next(line for line in out.splitlines() if line.strip().startswith(f"robust × {unit.attack} "))
        assert f"made: forward {unit.counted_forward / 40:,.1f}  backward {unit.counted_backward / 40:,.1f}" in line
