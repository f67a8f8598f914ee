"""The honest number, shown to be honest: several adaptive attacks in one grid line, budget ladders, and what the
report says about convergence and about a defense's gain — on the robust digits model, where attacks are cheap."""

from __future__ import annotations

import pytest
import torch

from conftest import digits_grid, harness_cli
from harness.analysis.aggregate import WORST_ADAPTIVE, WORST_TRANSFER, per_example, worst_columns
from harness.analysis.pairing import PairedRow
from harness.analysis.stats import paired
from harness.api.specs import Kind
from harness.api.threat import Norm, ThreatModel
from harness.run.defended import Defended
from harness.storage.store import Store
from harness_plugins.attacks.adaptive import Adaptive
from harness_plugins.attacks.hedge_attacks import HedgeAware
from harness_plugins.attacks.suite import BPDAPGD, AdaptiveSuite
from harness_plugins.defenses.hedge import Hedge
from harness_reports.comparisons import Convergence, gain_verdict
from harness_reports.content import build_content
from harness_reports.warnings import unconverged

LINF = ThreatModel(Norm.LINF, 0.1)
MEMBERS = ["APGD-DLR-T", "BPDA-PGD", "APGD-CE full", "Algorithm 6"]
DEFENSES = ["none", "random", "hedge"]

SUITE_GRID = """
[[attacks]]
plugin = "pgd"
steps = 5
step_size = 0.025
[[attacks]]
plugin = "adaptive-suite"
label = "suite"
n_iter = 3
pgd_steps = 3
eot = 1
defense_steps_in_attack = 1
full_gradient_steps = 1
ladder = 3
"""
DEFENSE_GRID = """
[[defenses]]
plugin = "none"
[[defenses]]
plugin = "random"
eps_d = 0.1
[[defenses]]
plugin = "hedge"
eps_d = 0.1
steps = 3
step_size = 0.025
"""


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    """One small grid: PGD (transfer) and the adaptive suite with a three-rung ladder, through none / random / Hedge."""
    tmp = tmp_path_factory.mktemp("suite")
    grid = digits_grid(tmp, attacks=SUITE_GRID, defenses=DEFENSE_GRID, extra="votes = 3", n=60, batch_size=60)
    harness_cli("run", "--grid", str(grid), "--quiet")
    store = Store(str(tmp / "results.sqlite"), readonly=True)
    return store, store.run()


# --- the budget ladder ------------------------------------------------------------------------

def test_each_doubling_goes_to_the_next_budget_axis_in_turn():
    adaptive = Adaptive(n_iter=10, eot=3, defense_steps_in_attack=5)
    assert [(a.n_iter, a.eot, a.defense_steps_in_attack) for a in (adaptive.scaled(f) for f in (1, 2, 4, 8, 16))] == \
           [(10, 3, 5), (20, 3, 5), (20, 6, 5), (20, 6, 10), (40, 6, 10)]
    assert BPDAPGD(steps=7, eot=2, defense_steps_in_attack=None).scaled(8) == \
           BPDAPGD(steps=14, eot=4, defense_steps_in_attack=None)   # None (all steps) stays all
    assert HedgeAware().scaled(4).steps == 4 * HedgeAware().steps


def test_the_suite_expands_into_its_members_and_each_rung_costs_more(tmp_path):
    grid = digits_grid(tmp_path, attacks=SUITE_GRID, defenses=DEFENSE_GRID, n=60)
    out = harness_cli("run", "--grid", str(grid), "--estimate").stdout
    for member in MEMBERS:
        costs = []
        for rung in ("", " ×2", " ×4"):
            line = next(text for text in out.splitlines() if f"suite: {member}{rung} through Hedge [hedge]" in text)
            costs.append(int(line.split("forward")[1].split()[0].replace(",", "")))
        assert costs[0] < costs[1] < costs[2], (member, costs)   # every member's cost is in the estimate


def test_raising_the_adaptive_budget_never_raises_the_worst_case(suite_run):
    """Rungs share their random draws (the attack's and the scoring's), so only the budget differs between them.

    Against a random defense one example can still flip back under a different perturbation, so per ladder the
    check is the paired one the report makes: ×4 is never distinguishably above ×1. Over all ladders together,
    more budget must not raise the worst case at all, and somewhere it must lower it."""
    store, run = suite_run
    transfer = worst_columns(run)[WORST_TRANSFER]
    total = {1: 0, 4: 0}
    lowered = 0
    for member in MEMBERS:
        for defense in DEFENSES:
            correct = {}
            for factor, suffix in ((1, ""), (4, " ×4")):
                frame = per_example(store, run.run_id, transfer + [f"suite: {member}{suffix}"])
                correct[factor] = frame[frame.defense == defense].sort_values("idx").correct.tolist()
                total[factor] += sum(correct[factor])
            more_budget = paired(correct[4], correct[1])
            assert more_budget.interval[0] <= 0, (member, defense, more_budget)
            lowered += more_budget.difference < 0
    assert total[4] <= total[1] and lowered >= 2, (total, lowered)   # a no-op doubling would lower nothing


def test_the_suite_worst_case_is_at_most_every_member_example_by_example(suite_run):
    store, run = suite_run
    columns = worst_columns(run)
    members = [a for a in run.labels("attacks") if a.startswith("suite: ")]
    assert len(members) == 4 * 3 and set(members) <= set(columns[WORST_ADAPTIVE])
    suite = per_example(store, run.run_id, columns[WORST_ADAPTIVE]).set_index(["defense", "repeat", "idx"]).correct
    assert len(suite) == 60 * len(DEFENSES)
    for member in members:
        alone = per_example(store, run.run_id, [member]).set_index(["defense", "repeat", "idx"]).correct
        assert (suite <= alone.reindex(suite.index)).all(), member
    # the AND takes the members in: the suite's worst case is strictly below the transfer one through Hedge
    transfer = per_example(store, run.run_id, columns[WORST_TRANSFER]).set_index(["defense", "repeat", "idx"]).correct
    assert suite.loc["hedge"].mean() < transfer.loc["hedge"].mean()


def test_the_report_shows_every_ladder_and_the_budgets_used(suite_run):
    store, run = suite_run
    content = build_content(store)
    ladders = {(c.attack, c.defense) for c in content.convergence}
    assert ladders == {(f"suite: {m}", d) for m in MEMBERS for d in ("−", "Random", "Hedge")}
    for c in content.convergence:
        assert c.factors == (1, 2, 4) and c.converged == (not (c.last_step.distinguishable
                                                               and c.last_step.difference < 0))
    assert any("n_iter = 3" in b for b in content.facts.adaptive_budgets)
    hedge = next(p for p in content.transfer_adaptive if p.what == "Hedge")
    assert hedge.acc_second < hedge.acc_first   # what the adaptive attacks took from Hedge's transfer number


# --- what the report says ------------------------------------------------------------------------

def _row(difference: float, low: float, high: float, p: float = 0.5) -> PairedRow:
    return PairedRow(model="m", what="worst", first="Hedge", second="−", acc_first=50 + difference, acc_second=50,
                     difference=difference, spread=0.0, low=low, high=high, p_value=p, only_first=9, only_second=2,
                     n=200, repeats=1, needed=None)


def test_a_gain_under_adaptive_attacks_is_called_as_the_paired_interval_says():
    assert "keeps a gain under the adaptive attacks" in gain_verdict(_row(3.5, 0.4, 6.6, 0.03))
    assert "confirm it with a larger budget" in gain_verdict(_row(3.5, 0.4, 6.6, 0.03))
    not_significant = gain_verdict(_row(1.5, -1.1, 4.0, 0.38))
    assert "no evidence of a gain" in not_significant and "keeps" not in not_significant


def test_a_last_doubling_that_still_lowers_the_worst_case_is_not_converged():
    still_falling = Convergence("m", "adaptive", "Hedge", (1, 2, 4), (40.0, 36.0, 31.0), _row(-5.0, -8.1, -2.2))
    flat = Convergence("m", "adaptive", "Hedge", (1, 2, 4), (40.0, 36.0, 35.5), _row(-0.5, -2.9, 1.8))
    rising = Convergence("m", "adaptive", "Hedge", (1, 2), (40.0, 43.0), _row(3.0, 0.5, 5.6))
    assert not still_falling.converged and flat.converged and rising.converged
    warnings = unconverged([still_falling, flat, rising])
    assert [w.id for w in warnings] == ["not-converged"] and "lowered the worst case by 5.00" in warnings[0].text


def test_without_an_adaptive_attack_the_adaptive_worst_case_is_not_evaluated(tmp_path):
    grid = digits_grid(tmp_path, attacks='[[attacks]]\nplugin = "pgd"\nsteps = 3\n', defenses=DEFENSE_GRID, n=20)
    out = harness_cli("run", "--grid", str(grid)).stdout
    assert "not evaluated" in out
    store = Store(str(tmp_path / "results.sqlite"), readonly=True)
    run = store.run()
    assert worst_columns(run)[WORST_ADAPTIVE] is None
    content = build_content(store)
    column = content.main.keys.index(WORST_ADAPTIVE)
    assert all(row.cells[column] is None for group in content.main.groups for row in group.rows)
    assert WORST_ADAPTIVE in content.main.unevaluated and not content.verdicts and not content.transfer_adaptive


# --- the full gradient through the released Hedge ------------------------------------------------

def test_the_full_gradient_flows_through_the_released_hedge(digits, digits_robust):
    """predict = "released" must keep a graph for ``gradient = "full"``: BPDA's identity backward and the full
    gradient then differ, and APGD-CE on the full gradient breaks examples."""
    x, y = digits.x[:40], digits.y[:40]
    hedge = Hedge(eps_d=0.1, steps=4, step_size=0.025, predict="released")
    defended = Defended(digits_robust, hedge, gen(1))
    grads = {}
    for gradient in ("bpda", "full"):
        inside = defended.with_defense(hedge.for_attack(2), gradient)
        point = x.clone().requires_grad_(True)
        torch.manual_seed(5)
        loss = torch.nn.functional.cross_entropy(inside(point), y)
        grads[gradient], = torch.autograd.grad(loss, point)
    assert grads["full"].abs().sum() > 0
    assert not torch.allclose(grads["full"], grads["bpda"])
    attack = Adaptive(loss="ce", gradient="full", n_iter=10, eot=1, defense_steps_in_attack=2)
    x_adv = attack.attack_defended(defended, x, y, LINF, generator=gen())
    assert (x_adv - x).abs().max() <= LINF.eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        before = (hedge.logits(digits_robust, x, generator=gen(4)).argmax(1) == y).float().mean()
        after = (hedge.logits(digits_robust, x_adv, generator=gen(4)).argmax(1) == y).float().mean()
    assert after < before


def test_the_suite_declares_its_members_as_grid_attacks(registry):
    spec = registry.get(Kind.ATTACK, "adaptive-suite")
    suite = spec.factory()
    assert isinstance(suite, AdaptiveSuite) and [name for name, _ in suite.members()] == MEMBERS
    assert all(member.adaptive for _, member in suite.members())
