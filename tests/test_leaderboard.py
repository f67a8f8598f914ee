"""The leaderboard of test-time defenses, from one real grid on the robust digits model: the anti-adversary and
TTE beside no defense, under a transfer PGD and the adaptive suite with its gradient-free member."""

from __future__ import annotations

import json

import pytest

from conftest import digits_grid, harness_cli
from harness.analysis.aggregate import WORST_ADAPTIVE, WORST_TRANSFER, per_example, worst_columns
from harness.storage.store import Store
from harness_reports.comparisons import convergence
from harness_reports.content import build_content
from harness_reports.leaderboard import leaderboard
from harness_reports.naming import display_names

ATTACKS = """
[[attacks]]
plugin = "pgd"
steps = 5
step_size = 0.025
[[attacks]]
plugin = "adaptive-suite"
label = "suite"
n_iter = 5
n_target_classes = 2
pgd_steps = 5
eot = 1
defense_steps_in_attack = 1
full_gradient_steps = 1
algorithm6_steps = 2
rays_queries = 60
ladder = 2
"""
DEFENSES = """
[[defenses]]
plugin = "none"
[[defenses]]
plugin = "anti-adversary"
step_size = 0.05
[[defenses]]
plugin = "tte"
pad = 1
"""


@pytest.fixture(scope="module")
def board_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("board")
    grid = digits_grid(tmp, attacks=ATTACKS, defenses=DEFENSES, n=60, batch_size=60)
    harness_cli("run", "--grid", str(grid), "--quiet")
    store = Store(str(tmp / "results.sqlite"), readonly=True)
    return tmp, store, store.run()


def test_the_adaptive_suite_brings_each_defense_to_at_most_its_transfer_worst_case(board_run):
    _, store, run = board_run
    columns = worst_columns(run)
    transfer = per_example(store, run.run_id, columns[WORST_TRANSFER]).set_index(["defense", "repeat", "idx"])
    adaptive = per_example(store, run.run_id, columns[WORST_ADAPTIVE]).set_index(["defense", "repeat", "idx"])
    suite_only = per_example(store, run.run_id, [a for a in run.labels("attacks") if a.startswith("suite: ")])
    suite_only = suite_only.set_index(["defense", "repeat", "idx"])
    for defense in ("anti-adversary", "tte"):
        # example by example, the honest worst case is the AND of the transfer and the adaptive verdicts
        both = (transfer.correct.loc[defense] & suite_only.correct.loc[defense]).astype(int)
        assert (adaptive.correct.loc[defense] == both).all()
        # and the suite alone already takes each defense to at most its transfer worst case
        assert suite_only.correct.loc[defense].mean() <= transfer.correct.loc[defense].mean(), defense


def test_the_leaderboard_ranks_by_the_adaptive_worst_case_and_names_the_attacks(board_run):
    _, store, run = board_run
    rows = leaderboard(store, run, convergence(store, run, display_names(run)))
    assert {r.defense for r in rows} == {"−", "Anti-adversary", "TTE"}
    assert [r.adaptive for r in rows] == sorted((r.adaptive for r in rows), reverse=True)
    for r in rows:
        assert r.adaptive <= r.transfer and r.adaptive <= r.clean
        assert r.gradient is not None and r.gradient.attack.startswith("suite: ")
        assert r.black_box is not None and r.black_box.attack.startswith("suite: RayS")
        assert r.adaptive <= min(r.gradient.accuracy, r.black_box.accuracy)
        assert r.converged is not None
        assert (r.versus_reference is None) == r.reference
    anti = next(r for r in rows if r.defense == "Anti-adversary")
    assert (anti.forward, anti.backward) == (2 + 1 + 1, 2)      # pseudo label + k steps + the prediction
    tte = next(r for r in rows if r.defense == "TTE")
    assert (tte.forward, tte.backward) == (10, 0)


def test_show_leaderboard_prints_the_ranking(board_run):
    tmp, store, run = board_run
    text = harness_cli("show", "--db", str(tmp / "results.sqlite"), "--leaderboard").stdout
    assert "ranked by the adaptive worst case" in text and "Anti-adversary" in text and "TTE" in text
    data = json.loads(harness_cli("show", "--db", str(tmp / "results.sqlite"), "--leaderboard", "--format",
                                  "json").stdout)
    ranked = [row for row in data if row["rank"] != "—"]
    assert [float(row["adaptive %"]) for row in ranked] == sorted((float(row["adaptive %"]) for row in ranked), reverse=True)


def test_the_report_has_the_leaderboard(board_run):
    _, store, _ = board_run
    content = build_content(store)
    assert [r.defense for r in content.leaderboard][0] in {"−", "Anti-adversary", "TTE"}
    assert len(content.leaderboard) == 3


def test_a_cell_with_a_rung_still_to_run_has_no_rank_and_no_convergence_verdict(board_run, tmp_path):
    """A run in progress: RayS ×2 through TTE has not run. The other ladders' "converged" must not speak for
    it, and TTE is not ranked on the attacks that have run; the cells that are complete keep their verdicts."""
    import shutil
    import sqlite3

    tmp, _, _ = board_run
    db = tmp_path / "partial.sqlite"
    shutil.copy(tmp / "results.sqlite", db)
    with sqlite3.connect(db) as connection:
        deleted = connection.execute("DELETE FROM results WHERE attack = 'suite: RayS ×2' AND defense = 'tte'").rowcount
        connection.execute("UPDATE units SET done = 0, finished = 0 WHERE attack = 'suite: RayS ×2' AND "
                           "defenses = '[\"tte\"]'")
        (units,) = connection.execute("SELECT COUNT(*) FROM units").fetchone()
    assert deleted == 60
    for shown in (harness_cli("show", "--db", str(db)).stdout, harness_cli("show", "--db", str(db), "--leaderboard").stdout):
        assert f"in progress: {units - 1} of {units} units finished" in shown
        assert shown.rstrip().endswith(f"resume with: harness run --grid {tmp / 'grid.toml'} --db {db}")
    assert "in progress" not in harness_cli("show", "--db", str(tmp / "results.sqlite"), "--leaderboard").stdout
    store = Store(str(db), readonly=True)
    run = store.run()
    rows = {r.defense: r for r in leaderboard(store, run, convergence(store, run, display_names(run)))}
    assert rows["TTE"].converged is None and rows["TTE"].adaptive is None
    assert rows["TTE"].gradient is not None    # what has run is still shown
    assert rows["Anti-adversary"].converged is not None and rows["Anti-adversary"].adaptive is not None
    assert list(rows)[-1] == "TTE"             # unranked, last


def test_a_cell_with_part_of_its_examples_says_so_is_not_ranked_and_flags_no_masking(board_run, tmp_path):
    """A run in progress: RayS through the anti-adversary has only the examples it got wrong, TTE's first half.
    A number over part of the examples is shown with how many, no partial worst case is ranked, and a partial
    gradient-free number below a whole gradient-based one is not masking (it is another set of examples)."""
    import shutil
    import sqlite3

    tmp, _, _ = board_run
    db = tmp_path / "partial.sqlite"
    shutil.copy(tmp / "results.sqlite", db)
    with sqlite3.connect(db) as connection:
        rays = "attack IN ('suite: RayS', 'suite: RayS ×2')"
        connection.execute(f"DELETE FROM results WHERE {rays} AND defense = 'anti-adversary' AND correct = 1")
        connection.execute(f"DELETE FROM results WHERE {rays} AND defense = 'tte' AND idx >= 30")
        kept = connection.execute("SELECT COUNT(*) FROM results WHERE attack = 'suite: RayS' AND "
                                  "defense = 'anti-adversary'").fetchone()[0]
    assert 0 < kept < 60
    store = Store(str(db), readonly=True)
    run = store.run()
    rows = {r.defense: r for r in leaderboard(store, run, convergence(store, run, display_names(run)))}
    anti, tte = rows["Anti-adversary"], rows["TTE"]
    assert anti.black_box is not None and anti.gradient is not None
    assert anti.black_box.accuracy < anti.gradient.accuracy and not anti.masking    # 0 % on its kept examples
    assert anti.black_box.coverage == f" ({kept} of 60)" and anti.gradient.coverage == ""
    assert tte.adaptive is not None and not tte.ranked and tte.adaptive_coverage == " (30 of 60)"
    assert tte.versus_reference.n == 30 and tte.versus_coverage == " (30 of 60)" and rows["−"].versus_coverage == ""
    # nor does a verdict or a ladder on half the examples pass for one on all of them
    assert tte.verdict.endswith(" (30 of 60)") and tte.converged is None and anti.converged is None
    assert rows["−"].ranked and rows["−"].adaptive_coverage == "" and list(rows)[0] == "−"
    frame = harness_cli("show", "--db", str(db), "--leaderboard", "--format", "json").stdout
    shown = {row["defense"]: row for row in json.loads(frame)}
    assert shown["TTE"]["rank"] == "—" and shown["TTE"]["adaptive %"].endswith(" (30 of 60)")
    assert shown["TTE"]["vs reference"].endswith(" (30 of 60)")
    assert shown["TTE"]["verdict"].endswith(" (30 of 60)") and shown["TTE"]["converged"] == "—"
    assert shown["Anti-adversary"]["black-box"].endswith(f" ({kept} of 60)")
    assert shown["− (reference)"]["rank"] == "1"
