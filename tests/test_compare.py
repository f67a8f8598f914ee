"""`harness compare`: two runs of one grid, example by example (fp32 against bf16 on Fashion-MNIST, CPU)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from statsmodels.stats.contingency_tables import mcnemar

from conftest import REPO, harness_cli
from harness.analysis.compare import compare_runs, sides
from harness.storage.store import Store

GRID = """
dataset = "fashion-mnist"
n_examples = 50
norm = "Linf"
eps = 0.1
repeats = 1
seed = 0
batch_size = 50
votes = 3
precision = "{precision}"
db = "{db}"
models = [{{ plugin = "checkpoint", label = "fmnist", arch = "small-cnn", dataset = "fashion-mnist", in_channels = 1, path = "{checkpoint}" }}]
attacks = [{{ plugin = "pgd", steps = 10, step_size = 0.025 }}, {{ plugin = "cw", steps = 10 }}]
defenses = [{defenses}]
"""
ALL_THREE = '{ plugin = "none" }, { plugin = "random" }, { plugin = "hedge", steps = 4, step_size = 0.05 }'
NO_RANDOM = '{ plugin = "none" }, { plugin = "hedge", steps = 4, step_size = 0.05 }'


@pytest.fixture(scope="module")
def two_precisions(tmp_path_factory) -> Path:
    """One database holding the grid in fp32 (none, random, Hedge) and then in bf16 (none, Hedge)."""
    if not Path("/usr/share/datasets/fashion-mnist").exists():
        pytest.skip("needs Debian's dataset-fashion-mnist (scripts/setup.sh installs it)")
    tmp = tmp_path_factory.mktemp("compare")
    db = tmp / "runs.sqlite"
    for precision, defenses in (("fp32", ALL_THREE), ("bf16", NO_RANDOM)):
        grid = tmp / f"{precision}.toml"
        grid.write_text(GRID.format(precision=precision, db=db, defenses=defenses,
                                    checkpoint=REPO / "checkpoints" / "fmnist-fgsm-rs.pt"))
        harness_cli("run", "--grid", str(grid), "--quiet")
    return db


def test_compare_pairs_the_shared_cells_and_matches_an_independent_computation(two_precisions):
    store = Store(two_precisions, readonly=True)
    fp32, bf16 = sides([(store, None)])     # one database, no run given: its two latest runs, older first
    assert (fp32[1].precision, bf16[1].precision) == ("fp32", "bf16")
    result = compare_runs(fp32, bf16)
    cells = {(c.attack, c.defense): c for c in result.cells}
    assert set(cells) == {(a, d) for a in ("clean", "pgd", "cw") for d in ("none", "hedge")}
    assert result.only_first == tuple(f"fmnist × {a} × random" for a in ("clean", "cw", "pgd"))
    assert result.only_second == () and result.unmatched_first == result.unmatched_second == 0
    rows = {name: store.results(run.run_id).set_index(["attack", "defense", "idx"]).sort_index()
            for name, (_, run) in (("a", fp32), ("b", bf16))}
    for (attack, defense), cell in cells.items():
        a, b = rows["a"].loc[(attack, defense)], rows["b"].loc[(attack, defense)]
        both = pd.concat([a.correct.rename("a"), b.correct.rename("b")], axis=1)
        table = pd.crosstab(both.a, both.b).reindex(index=[1, 0], columns=[1, 0], fill_value=0).to_numpy()
        assert cell.paired.acc_first == pytest.approx(a.correct.mean() * 100)
        assert cell.paired.acc_second == pytest.approx(b.correct.mean() * 100)
        assert cell.paired.difference == pytest.approx((a.correct.mean() - b.correct.mean()) * 100)
        assert (cell.paired.only_first, cell.paired.only_second) == (table[0, 1], table[1, 0])
        assert cell.paired.p_value == pytest.approx(mcnemar(table, exact=True).pvalue)
        assert cell.changed == pytest.approx((a.pred != b.pred).mean() * 100)
        assert cell.paired.low <= cell.paired.difference <= cell.paired.high


def test_compare_prints_the_paired_table_and_its_exit_code_follows_the_bound(two_precisions):
    store = Store(two_precisions, readonly=True)
    runs = store.runs()
    largest = max(abs(c.paired.difference) for c in compare_runs((store, runs[0]), (store, runs[1])).cells)
    out = harness_cli("compare", "--db", str(two_precisions), "--run", runs[0].run_id[:6],
                      "--db", str(two_precisions), "--run", runs[1].run_id, env={"COLUMNS": "200"}).stdout
    assert f"A: run {runs[0].run_id}" in out and "fp32" in out and f"B: run {runs[1].run_id}" in out and "bf16" in out
    header = next(line for line in out.splitlines() if "changed %" in line)
    assert "A − B" in header and "95% paired interval" in header and "McNemar p" in header
    assert "only in A (not compared): fmnist × clean × random; fmnist × cw × random; fmnist × pgd × random" in out
    within = harness_cli("compare", "--db", str(two_precisions), "--fail-if-differs", f"{largest:.4f}", check=False)
    assert within.returncode == 0 and "every cell is within" in within.stdout
    if largest > 0:   # bf16 moved at least one cell: a bound below that difference fails the comparison
        beyond = harness_cli("compare", "--db", str(two_precisions), "--fail-if-differs", f"{largest / 2:.4f}",
                             check=False)
        assert beyond.returncode == 1 and "differ by more than" in beyond.stdout
    for bound in ("-1", "nan"):   # a bound nothing can be within is refused, not taken as "fail"
        refused = harness_cli("compare", "--db", str(two_precisions), "--fail-if-differs", bound, check=False)
        assert refused.returncode == 2 and "--fail-if-differs" in refused.stderr


def test_the_exit_code_fails_a_comparison_beyond_the_bound(tmp_path, two_precisions):
    """A run at twice the radius differs by far more than a point in its attacked cells: exit status 1."""
    stronger = tmp_path / "stronger.toml"
    stronger.write_text(GRID.format(precision="fp32", db=tmp_path / "stronger.sqlite", defenses=NO_RANDOM,
                                    checkpoint=REPO / "checkpoints" / "fmnist-fgsm-rs.pt").replace("eps = 0.1", "eps = 0.2"))
    harness_cli("run", "--grid", str(stronger), "--quiet")
    beyond = harness_cli("compare", "--db", str(two_precisions), "--db", str(tmp_path / "stronger.sqlite"),
                         "--fail-if-differs", "1", check=False)
    assert beyond.returncode == 1 and "differ by more than 1 points" in beyond.stdout


def test_compare_needs_two_runs_and_says_how_to_get_them(tmp_path, two_precisions):
    store = Store(two_precisions, readonly=True)
    first = store.runs()[0].run_id
    only = tmp_path / "one.sqlite"
    only.write_bytes(two_precisions.read_bytes())
    # a database with one run: the error says how to get a second one
    import sqlite3

    with sqlite3.connect(only) as conn:
        for table in ("runs", "units", "results"):
            conn.execute(f"DELETE FROM {table} WHERE run_id != ?", (first,))
    proc = harness_cli("compare", "--db", str(only), check=False)
    assert proc.returncode == 2 and "holds 1 run(s); compare needs two" in proc.stderr
    proc = harness_cli("compare", "--db", str(only), "--db", str(only), "--db", str(only), check=False)
    assert proc.returncode == 2 and "one or two --db" in proc.stderr
