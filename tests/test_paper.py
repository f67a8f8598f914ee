"""The paper as it ran: every table as a grid, the released code's settings behind one preset (each held against
a plain re-implementation of the released loop, on real data), the paper's definitions, and its defaults."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from benchmarks import reference_loops as released
from conftest import REPO, digits_grid, harness_cli, shared_file
from harness.api.specs import Kind
from harness.api.threat import Norm, ThreatModel
from harness.cli import main
from harness.grid.config import Overrides
from harness.grid.reader import load_grid
from harness.run.runner import run_grid
from harness.storage.store import Store

CONFIGS = sorted((REPO / "configs").glob("*.toml"))
TABLE5_IDS = ["Gowal2020Uncovering_28_10_extra", "Zhang2020Geometry", "Gowal2020Uncovering_34_20", "Wu2020Adversarial",
              "Pang2020Boosting", "Cui2020Learnable_34_20", "Zhang2020Attacks", "Rice2020Overfitting", "Huang2020Self",
              "Cui2020Learnable_34_10", "Chen2020Adversarial", "Chen2020Efficient", "Sitawarin2020Improving",
              "Engstrom2019Robustness", "Zhang2019You", "Wong2020Fast", "Ding2020MMA"]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def paper(registry, plugin: str, kind: Kind = Kind.ATTACK, **params):
    """The plugin as the paper preset builds it (its released variant), with extra parameters."""
    spec = registry.get(kind, plugin)
    return spec.factory(**{**spec.declared("presets", {}).get("paper", {}), **params})


# --- every table and figure as a grid ---------------------------------------------------------------

@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_config_dry_runs(config, capsys):
    assert main(["run", "--grid", str(config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "work units on" in out and "total: forward" in out


def test_table5_lists_the_seventeen_models_in_the_papers_order(capsys):
    assert main(["run", "--grid", "configs/table5.toml", "--dry-run"]) == 0
    listed = [line.split("(models[")[1].split("'")[1] for line in capsys.readouterr().out.splitlines()
              if "needs file" in line and "_m1.pt" not in line and "_m2.pt" not in line]
    assert listed == TABLE5_IDS


PAPER_TABLES = {"table1.toml": (1, False), "table2.toml": (2, False), "table5.toml": (5, True), "table7.toml": (7, False)}


@pytest.mark.parametrize("config", sorted(PAPER_TABLES))
def test_the_reported_values_are_the_papers_tables_as_printed(config, registry):
    """Every [reported] cell against the paper's own table, read from its text; every grid model has its rows."""
    import importlib.util
    import math

    spec = importlib.util.spec_from_file_location("reported_from_paper", REPO / "scripts" / "reported_from_paper.py")
    tool = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = tool   # dataclasses look their module up while the module runs
    spec.loader.exec_module(tool)
    number, by_position = PAPER_TABLES[config]
    caption, rows = tool.read_table(shared_file("paper/attacking-adversarial-attacks-as-a-defense.md"), number)
    grid = load_grid(REPO / "configs" / config, registry)
    matched = tool.match(rows, [m.label for m in grid.models], by_position)
    expected = {(model, row.defense, attack): float(value) for model, block in matched.items() for row in block
                for attack, value in row.values.items()}
    got = {(v.model, v.defense, v.attack): v.accuracy for v in grid.reported.values}
    assert got == expected
    assert {(m, d) for m, d, _ in got} == {(m.label, d) for m in grid.models for d in ("none", "random", "hedge")}
    assert all(math.isfinite(v) for v in got.values()) and grid.reported.source == f"Wu et al., Table {number}"
    wong = {("Wong2020Fast", "none", "pgd"): 47.57, ("Wong2020Fast", "hedge", "worst case"): 49.13}
    if config == "table5.toml":
        assert {k: got[k] for k in wong} == wong   # two cells read by eye from the paper's Table 5


def test_an_offline_zoo_row_of_table5_runs_end_to_end_to_a_report(tmp_path):
    """Wong2020Fast's RobustBench file in a folder given with --model-dir (here: the shared fastat40 weights, same
    architecture), the JPEG copy of CIFAR-10 found beside the checkout, one attack, a few examples: part of the
    grid, file untouched, no environment variable."""
    target = tmp_path / "weights" / "cifar10" / "Linf" / "Wong2020Fast.pt"
    target.parent.mkdir(parents=True)
    shutil.copy(shared_file("models/cifar10-jpeg/fastat40.pt"), target)
    run = ["run", "--grid", str(REPO / "configs" / "table5.toml"), "--models", "Wong2020Fast", "--dataset",
           "cifar10-jpeg", "--attacks", "pgd", "--n-examples", "10", "--db", str(tmp_path / "row.sqlite"), "--quiet",
           "--model-dir", str(tmp_path / "weights")]
    done = harness_cli(*run, env={"HARNESS_CIFAR10_JPEG": ""}, cwd=tmp_path)
    assert "Wong2020Fast" in done.stdout and "CIFAR-10 (JPEG)" in done.stdout
    harness_cli("report", "--db", str(tmp_path / "row.sqlite"), "--out", str(tmp_path / "report"), cwd=tmp_path)
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| Wong2020Fast | − |" in md and "| Preset | paper" in md and "JPEG re-encoding" in md
    rows = Store(tmp_path / "row.sqlite", readonly=True).results(Store(tmp_path / "row.sqlite", readonly=True).run().run_id)
    assert set(rows.attack) == {"clean", "pgd"} and set(rows.defense) == {"none", "random", "hedge"}
    assert (rows.linf <= 0.031 + 1e-6).all() and rows.linf.max() > 0.03   # ε = 0.031 under the paper preset
    # the reproduction section: Table 5's Wong2020Fast row beside the measured cells, on different data
    assert "## Reproduction: Wu et al., Table 5 beside this run" in md and "**Different data.**" in md
    measured = rows[(rows.attack == "pgd") & (rows.defense == "none")].correct.mean() * 100
    assert f"| Wong2020Fast | − | PGD | 47.57 | {measured:.2f} |" in md
    assert "| Wong2020Fast | Hedge | Nat-Acc. | 81.76 |" in md
    assert "Worst Case" not in md.split("## Reproduction")[1].split("\n## ")[0].split("|---|")[1]  # not the paper's
    # ten examples give intervals of about ±30 points: no verdict, but how many examples would give one
    assert "Wong2020Fast: no verdict: its measured 95% intervals reach ±" in md
    assert "points on 10 examples; about 381 examples would bring them to ±5." in md
    assert "reported values lie inside" not in md


def test_a_grid_can_be_cut_down_from_the_command_line(registry):
    grid = load_grid(REPO / "configs" / "table1.toml", registry,
                     overrides=Overrides(models=("TRADES", "Standard"), attacks=("pgd",), defenses=("none", "hedge"),
                                         preset="honest", n_examples=5))
    assert [m.label for m in grid.models] == ["TRADES", "Standard"]
    assert [a.label for a in grid.attacks] == ["clean", "pgd"]                 # the clean baseline always stays
    assert [d.label for d in grid.defenses] == ["none", "hedge"] and grid.preset.name == "honest"
    assert grid.threat.eps == pytest.approx(8 / 255) and grid.votes == 5
    from harness.api.errors import ConfigError

    with pytest.raises(ConfigError, match=r"key '\(--models\)': the grid has no entry labelled 'TRADE'; did you mean "
                                          r"'TRADES'"):
        load_grid(REPO / "configs" / "table1.toml", registry, overrides=Overrides(models=("TRADE",)))


# --- the paper preset: the released code's settings ---------------------------------------------------

def test_the_paper_preset_sets_the_released_grid_defaults(tmp_path, registry):
    honest = load_grid(_retarget(tmp_path, ""), registry)
    grid = load_grid(_retarget(tmp_path, 'preset = "paper"\n'), registry)
    assert honest.threat.eps == pytest.approx(8 / 255) and honest.votes == 5
    assert grid.threat.eps == 0.031 and grid.votes == 1 and grid.preset.name == "paper"
    assert grid.run_id != honest.run_id and grid.identity()["preset"] == "paper"
    params = {e.plugin: dict(e.params) for e in grid.attacks + grid.defenses}
    assert params["pgd"]["step_size"] == 0.007 and params["pgd"]["clip_start"] is False
    assert params["cw"]["confidence"] == 0.0 and params["hedge"]["predict"] == "released"
    assert params["random"] == {"eps_d": 0.031, "clip": False}
    explicit = load_grid(_retarget(tmp_path, 'preset = "paper"\n', pgd_extra="step_size = 0.01\n"), registry)
    assert dict(explicit.attacks[1].params)["step_size"] == 0.01                  # what an entry sets itself wins


def _retarget(tmp_path: Path, top: str, pgd_extra: str = "") -> Path:
    path = digits_grid(tmp_path, attacks=f'[[attacks]]\nplugin = "pgd"\n{pgd_extra}[[attacks]]\nplugin = "cw"\n',
                       defenses='[[defenses]]\nplugin = "none"\n[[defenses]]\nplugin = "random"\n'
                                '[[defenses]]\nplugin = "hedge"\n')
    path.write_text(top + path.read_text().replace("eps = 0.1", 'eps = "8/255"'))
    return path


@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_pgd_and_cw_under_the_preset_are_the_released_loop(registry, cifar, cifar_robust, loss):
    attack = paper(registry, "pgd" if loss == "ce" else "cw", steps=10)
    threat = ThreatModel(Norm.LINF, 0.031)
    ours = attack(cifar_robust, cifar.x, cifar.y, threat, generator=gen(3))
    reference = released.released_pgd(cifar_robust, cifar.x, cifar.y, gen(3), attack_loss=loss, steps=10)
    assert torch.equal(ours, reference)


def test_cw_with_the_released_clamp_stops_at_the_boundary_and_the_plain_margin_does_not(registry, digits,
                                                                                           digits_standard):
    x, y, threat = digits.x[:100], digits.y[:100], ThreatModel(Norm.LINF, 0.1)
    with torch.no_grad():
        margin = lambda x_adv: digits_standard(x_adv).topk(2).values.diff().abs().squeeze(1)  # noqa: E731
    clamped = paper(registry, "cw", steps=20, step_size=0.01)(digits_standard, x, y, threat, generator=gen())
    plain = registry.get(Kind.ATTACK, "cw").factory(step_size=0.01)(digits_standard, x, y, threat, generator=gen())
    with torch.no_grad():
        fooled = (digits_standard(clamped).argmax(1) != y) & (digits_standard(plain).argmax(1) != y)
    # where both fool the model, the clamped loss left its examples nearer the boundary
    assert margin(clamped)[fooled].mean() < 0.5 * margin(plain)[fooled].mean()


def test_reverse_hedge_and_daa_white_under_the_preset_are_the_released_loops(registry, cifar, cifar_robust):
    threat = ThreatModel(Norm.LINF, 0.031)
    x, y = cifar.x[:8], cifar.y[:8]
    ours = paper(registry, "reverse-hedge", steps=6)(cifar_robust, x, y, threat, generator=gen(1))
    assert torch.equal(ours, released.released_reverse(cifar_robust, x, gen(1), steps=6))
    x, y = x[:3], y[:3]   # DAA's 10 × 10 inner steps: three images pin the loop, as eight would
    ours = registry.get(Kind.ATTACK, "daa-white").factory()(
        cifar_robust, x, y, threat, generator=gen(2))
    assert torch.equal(ours, released.released_daa_white(cifar_robust, x, y, gen(2)))


def test_random_noise_under_the_preset_is_the_released_noise(registry, cifar, cifar_robust):
    from harness.run.defended import predict_defended

    noise = paper(registry, "random", kind=Kind.DEFENSE)
    ours = predict_defended(cifar_robust, noise, cifar.x, 1, lambda draw: gen(4)).pred
    assert torch.equal(ours, released.released_random_noise(cifar_robust, cifar.x, gen(4)))
    unclipped = noise.purify(cifar_robust, cifar.x, generator=gen(4))
    assert unclipped.min() < 0 or unclipped.max() > 1   # the released noise leaves the image box


def test_hedge_through_the_preset_is_the_released_hedge(registry, cifar, cifar_robust):
    hedge = paper(registry, "hedge", kind=Kind.DEFENSE, steps=6)
    with torch.no_grad():
        ours = hedge.logits(cifar_robust, cifar.x, generator=gen(5)).argmax(1)
    reference = released.released_hedge(cifar_robust, cifar.x, gen(5), steps=6)
    for p in cifar_robust.parameters():  # the released loop's backward() left .grad on the weights
        p.grad = None
    assert torch.equal(ours, reference)


def test_the_released_hedge_predicts_from_the_logits_summed_over_its_inner_iterates(registry, cifar, cifar_robust):
    """Where the rules disagree (PGD points near the boundary): the paper preset's Hedge is the released sum of the
    logits of x_1 … x_{K−1}; neither f(x_K), the text's rule, nor a sum that takes x_0 or x_K in would pass."""
    from harness_plugins.attacks.pgd import PGD

    x = PGD(steps=10, step_size=2 / 255)(cifar_robust, cifar.x, cifar.y, ThreatModel(Norm.LINF, 8 / 255),
                                         generator=gen(8))
    hedge = paper(registry, "hedge", kind=Kind.DEFENSE, steps=6)
    with torch.no_grad():
        ours = hedge.logits(cifar_robust, x, generator=gen(9))
    reference = released.released_hedge(cifar_robust, x, gen(9), steps=6, summed=True)
    for p in cifar_robust.parameters():  # the released loop's backward() left .grad on the weights
        p.grad = None
    assert torch.allclose(ours, reference, atol=1e-4)
    iterates = []                          # x_0 … x_K of the same run, to build the rules it must not follow
    hedge._run(cifar_robust, x, gen(9), observe=lambda k, xk, logits: iterates.append(xk))
    last = hedge._run(cifar_robust, x, gen(9))
    with torch.no_grad():
        per_point = [cifar_robust(p) for p in iterates + [last]]
    wrong_rules = {"f(x_K)": per_point[-1], "x_0 … x_{K−1}": sum(per_point[:-1]), "x_1 … x_K": sum(per_point[1:])}
    for rule, logits in wrong_rules.items():
        assert not torch.allclose(ours, logits, atol=1e-2), rule
    assert any(not torch.equal(ours.argmax(1), logits.argmax(1)) for logits in wrong_rules.values())


def test_bpda_through_the_released_hedge_differentiates_what_is_scored(registry, cifar, cifar_robust):
    """The released prediction sums the logits of x_1 … x_{K−1}: BPDA's surrogate takes the model at each of them,
    so its value is the scored prediction (not f(x_K)) and its gradient the sum of the model's gradients there."""
    from harness.run.defended import Defended

    hedge = paper(registry, "hedge", kind=Kind.DEFENSE, steps=4)
    x, y = cifar.x[:8], cifar.y[:8]
    with torch.no_grad():
        scored = hedge.logits(cifar_robust, x, generator=gen(3))
        final = cifar_robust(hedge.purify(cifar_robust, x, generator=gen(3)))
    point = x.clone().requires_grad_(True)
    surrogate = Defended(cifar_robust, hedge, gen(3))(point)
    assert torch.allclose(surrogate, scored, atol=1e-4) and not torch.allclose(surrogate, final, atol=1e-2)
    (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(surrogate, y, reduction="sum"), point)
    iterates = hedge.prediction_points(cifar_robust, x, generator=gen(3))
    expected = torch.zeros_like(x)
    for p in iterates:
        p = p.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(scored.detach() - cifar_robust(p).detach()
                                                                     + cifar_robust(p), y, reduction="sum"), p)
        expected += g
    assert len(iterates) == 3 and torch.allclose(grad, expected, atol=1e-5)


def test_apgd_ce_and_square_under_the_preset_are_autoattacks_custom_version(registry, digits, digits_robust):
    """As the released main_cifar10.py built them: AutoAttack(version="custom", attacks_to_run=[...])."""
    from pyautoattack import AutoAttack
    from pyautoattack.autopgd_base import APGDAttack
    from pyautoattack.square import SquareAttack

    from harness_plugins.attacks.seeded import seed_from

    x, y, threat = digits.x[:40], digits.y[:40], ThreatModel(Norm.LINF, 0.1)
    seed = seed_from(gen(6))
    for plugin, name, params in (("apgd-ce", "apgd-ce", {"n_iter": 10}), ("square", "square", {"n_queries": 200})):
        attack = paper(registry, plugin, **params)
        out = attack(digits_robust, x, y, threat, generator=gen(6))
        ours = getattr(out, "x_adv", out)
        adversary = AutoAttack(digits_robust, norm="Linf", eps=0.1, version="custom", attacks=[name], seed=seed,
                               device=x.device)
        adversary.verbose = False
        # AutoAttack's own constructor settings, with a smaller budget than its 100 iterations / 5,000 queries
        adversary.apgd = APGDAttack(digits_robust, n_restarts=5, n_iter=10, verbose=False, eps=0.1, norm="Linf",
                                    eot_iter=1, rho=.75, seed=seed, device=x.device)
        adversary.square = SquareAttack(digits_robust, p_init=.8, n_queries=200, eps=0.1, norm="Linf", n_restarts=1,
                                        seed=seed, verbose=False, device=x.device, resc_schedule=False)
        reference, _ = adversary.run_standard_evaluation(x, y, batch_size=len(x))
        assert torch.equal(ours, reference), plugin
    assert paper(registry, "apgd-ce").n_restarts == 5   # the constructor's, which the custom version keeps


def test_square_parity_with_pyautoattack(digits, digits_robust):
    """Our bridge's Square is pyautoattack's SquareAttack: the same points and query counts on the same seed."""
    from pyautoattack.square import SquareAttack

    from harness_plugins.attacks.autoattack_bridge import Square
    from harness_plugins.attacks.seeded import isolated_rng, seed_from

    x, y, threat = digits.x[:60], digits.y[:60], ThreatModel(Norm.LINF, 0.1)
    out = Square(n_queries=300)(digits_robust, x, y, threat, generator=gen(7))
    seed = seed_from(gen(7))
    library = SquareAttack(digits_robust, norm="Linf", n_queries=300, eps=0.1, p_init=0.8, n_restarts=1, seed=seed,
                           resc_schedule=False, device=x.device)
    with torch.no_grad(), isolated_rng(seed, x.device):
        library.init_hyperparam(x)
        todo = (digits_robust(x).argmax(1) == y).nonzero().flatten()
        queries, points = library.attack_single_run(x[todo], y[todo])
    assert torch.equal(out.x_adv[todo], points) and torch.equal(out.queries[todo] - 1, queries.long())
    clean = Square(n_queries=300, unbroken="clean")(digits_robust, x, y, threat, generator=gen(7)).x_adv
    with torch.no_grad():
        broken = digits_robust(out.x_adv).argmax(1) != y
    assert torch.equal(clean[broken], out.x_adv[broken]) and torch.equal(clean[~broken], x[~broken])
    assert not torch.equal(out.x_adv[~broken], x[~broken])   # the honest default keeps the last point instead


def test_rays_follows_the_official_loop(digits, digits_standard):
    """uclaml/RayS's batch loop, re-implemented plainly: the same points and query counts; every example spends
    its budget (no stop at the first success); early_stop keeps the old, cheaper behaviour."""
    from harness_plugins.attacks.rays import RayS

    x, y = digits.x[:40], digits.y[:40]
    out = RayS(n_queries=300)(digits_standard, x, y, ThreatModel(Norm.LINF, 0.1), generator=gen())
    reference, queries = released.official_rays(digits_standard, x, y, 0.1, query_limit=300)
    assert torch.equal(out.x_adv, reference) and torch.equal(out.queries, queries)
    assert (out.queries == 300).all()
    early = RayS(n_queries=300, early_stop=True)(digits_standard, x, y, ThreatModel(Norm.LINF, 0.1), generator=gen())
    assert early.queries.float().mean() < 300
    with torch.no_grad():
        assert (digits_standard(early.x_adv).argmax(1) != y).sum() <= (digits_standard(out.x_adv).argmax(1) != y).sum()


def test_paper_worst_case_is_the_or_of_the_attacks_without_clean(tmp_path, registry):
    # weak attacks and strong single-draw noise on the standard model: some examples the noise gets wrong on the
    # clean input come out right on an attacked one, which is where the two rules differ
    attacks = '[[attacks]]\nplugin = "pgd"\nsteps = 1\n[[attacks]]\nplugin = "cw"\nsteps = 1\n'
    defenses = ('[[defenses]]\nplugin = "none"\n[[defenses]]\nplugin = "random"\neps_d = 0.4\n'
                '[[defenses]]\nplugin = "hedge"\nsteps = 3\n')
    path = digits_grid(tmp_path, n=200, batch_size=100, attacks=attacks, defenses=defenses, models=_standard_model(),
                       extra='preset = "paper"')
    grid = load_grid(path, registry)
    store = Store(grid.db)
    run_grid(grid, store=store, progress=False)
    from harness.analysis.aggregate import WORST_TRANSFER, cells

    table = cells(store, store.run()).set_index(["defense", "key"])["mean"]
    rows = store.results(grid.run_id)
    assert (rows.vote_frac == 1.0).all()                                   # one draw per prediction
    attacked = rows[rows.attack != "clean"]
    without_clean = attacked.groupby(["defense", "idx"]).correct.min().groupby("defense").mean() * 100
    with_clean = rows.groupby(["defense", "idx"]).correct.min().groupby("defense").mean() * 100
    for defense in ("none", "random", "hedge"):
        assert table[(defense, WORST_TRANSFER)] == pytest.approx(without_clean[defense])
    assert (without_clean != with_clean).any()   # on this data the two rules differ: the test can tell them apart


# --- the paper's definitions -----------------------------------------------------------------------

def test_ftof_is_a_different_wrong_class_and_the_counts_partition_the_examples(tmp_path, registry):
    from harness.analysis.analytics import flip_counts

    attacks = '[[attacks]]\nplugin = "pgd"\nsteps = 10\nstep_size = 0.02\n[[attacks]]\nplugin = "cw"\nsteps = 10\nstep_size = 0.02\n'
    defenses = ('[[defenses]]\nplugin = "none"\n[[defenses]]\nplugin = "random"\neps_d = 0.2\n'
                '[[defenses]]\nplugin = "hedge"\nsteps = 5\neps_d = 0.1\nstep_size = 0.04\n')
    grid = load_grid(digits_grid(tmp_path, n=100, batch_size=50, attacks=attacks, defenses=defenses,
                                 models=_standard_model()), registry)
    store = Store(grid.db)
    run_id = run_grid(grid, store=store, progress=False)
    flips = flip_counts(store, run_id).set_index(["attack", "defense"])
    rows = store.results(run_id).set_index(["attack", "defense", "idx"])
    for (attack, defense), row in flips.iterrows():
        base, ours = rows.loc[(attack, "none")], rows.loc[(attack, defense)]
        wrong_both = (base.correct == 0) & (ours.correct == 0)
        assert row.FtoF == int((wrong_both & (base.pred != ours.pred)).sum())
        assert row.FtoSame == int((wrong_both & (base.pred == ours.pred)).sum())
        assert row.FtoT + row.TtoF + row.FtoF + row.FtoSame + row.TtoT == row.n == 100
    assert (flips.FtoSame > 0).any()   # some stayed in their wrong class: counting every wrong-to-wrong as FtoF inflates it


def _standard_model() -> str:
    from conftest import DIGITS_STANDARD

    return f"""
[[models]]
plugin = "checkpoint"
label = "standard"
arch = "small-cnn"
path = "{DIGITS_STANDARD}"
dataset = "digits"
in_channels = 1
"""


def test_lipschitz_gaps_take_the_false_class_from_the_wrong_side(tmp_path, registry):
    attacks = '[[attacks]]\nplugin = "pgd"\nsteps = 10\nstep_size = 0.02\n'
    defenses = '[[defenses]]\nplugin = "none"\n[[defenses]]\nplugin = "hedge"\nsteps = 5\neps_d = 0.15\nstep_size = 0.05\n'
    grid = load_grid(digits_grid(tmp_path, n=100, batch_size=50, attacks=attacks, defenses=defenses,
                                 extra="lipschitz = true", models=_standard_model()), registry)
    store = Store(grid.db)
    run_id = run_grid(grid, store=store, progress=False)
    gaps = pd.read_sql_query("SELECT * FROM gaps WHERE run_id = ?", store.db.conn, params=[run_id])
    rows = store.results(run_id).set_index(["attack", "defense", "idx"])
    assert set(gaps.kind) == {"FtoT", "TtoF"}
    for g in gaps.itertuples():
        bare, defended = rows.loc[(g.attack, "none", g.idx)], rows.loc[(g.attack, g.defense, g.idx)]
        if g.kind == "FtoT":
            assert bare.correct == 0 and defended.correct == 1 and g.false_class == bare.pred
        else:
            assert bare.correct == 1 and defended.correct == 0 and g.false_class == defended.pred
        assert g.false_class != g.label and g.gap == pytest.approx(g.l_false - g.l_true)
    assert (gaps[gaps.kind == "TtoF"].gap != 0).all()   # taking the bare model's class would make these all 0


def test_local_lipschitz_is_the_largest_sampled_gradient_norm(digits, digits_robust):
    """The estimator against a plain loop over the same samples (the max over x and its draws of ‖∇ CE‖₁)."""
    from harness.analysis.analytics import local_lipschitz

    x, y, eps = digits.x[:20], digits.y[:20], 0.1
    ours = local_lipschitz(digits_robust, x, y, eps, samples=6, generator=gen(8))
    g = gen(8)
    best = torch.zeros(len(x))
    for s in range(7):
        point = x if s == 0 else (x + (2 * torch.rand(x.shape, generator=g) - 1) * eps).clamp(0, 1)
        point = point.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(digits_robust(point), y, reduction="sum"), point)
        best = torch.maximum(best, grad.flatten(1).abs().sum(1))
    assert torch.allclose(ours, best)
    assert (ours > local_lipschitz(digits_robust, x, y, eps, samples=0)).any()   # the samples matter


def test_hedge_aware_is_algorithm_6_with_one_step_size(registry, digits, digits_robust):
    x, y = digits.x[:30], digits.y[:30]
    attack = registry.get(Kind.ATTACK, "hedge-aware").factory(eps_d=0.1, hedge_step_size=0.03, hedge_steps=3, steps=4)
    assert attack.step_size is None   # Algorithm 6: the attack's step is η
    ours = attack(digits_robust, x, y, ThreatModel(Norm.LINF, 0.1), generator=gen(9))
    reference = released.algorithm6(digits_robust, x, y, gen(9), T=4, K=3, eta=0.03, eps_a=0.1, eps_d=0.1)
    assert torch.equal(ours, reference)


def test_hedge_random_class_rejects_what_it_ignores(tmp_path, registry):
    from harness.api.errors import ConfigError

    defenses = '[[defenses]]\nplugin = "hedge-random-class"\nloss = "kl-uniform"\n'
    with pytest.raises(ConfigError, match=r"key 'defenses\[0\]': hedge-random-class ascends the cross-entropy of one "
                                          r"random class per step; its loss cannot be set"):
        load_grid(digits_grid(tmp_path, defenses=defenses), registry)
    released_sum = load_grid(digits_grid(tmp_path, defenses='[[defenses]]\nplugin = "hedge-random-class"\n'
                                                            'predict = "released"\nsteps = 3\n'), registry)
    assert dict(released_sum.defenses[0].params)["predict"] == "released"


# --- the paper's defaults, every one -------------------------------------------------------------------

PAPER_DEFAULTS = [
    # (kind, plugin, parameter, the paper's value, where it says so)
    (Kind.ATTACK, "pgd", "steps", 20, "B.2, Algorithm 2: K = 20"),
    (Kind.ATTACK, "pgd", "random_start", True, "B.2: a random start in B(x, ε_a)"),
    (Kind.ATTACK, "cw", "steps", 20, "B.2: C&W as PGD-20 on the margin"),
    (Kind.ATTACK, "cw", "loss", "cw", "Eq. (B.1)"),
    (Kind.ATTACK, "deepfool", "steps", 50, "foolbox's LinfDeepFoolAttack, as released"),
    (Kind.ATTACK, "deepfool", "overshoot", 0.02, "foolbox's LinfDeepFoolAttack"),
    (Kind.ATTACK, "deepfool", "candidates", 10, "foolbox's LinfDeepFoolAttack"),
    (Kind.ATTACK, "apgd-ce", "n_iter", 100, "AutoAttack's APGD"),
    (Kind.ATTACK, "apgd-ce", "rho", 0.75, "Algorithm 3's ρ, AutoAttack's value"),
    (Kind.ATTACK, "apgd-t", "n_target_classes", 9, "B.2: APGD-T iterates among all the false classes"),
    (Kind.ATTACK, "apgd-t", "n_iter", 100, "AutoAttack's APGD-T"),
    (Kind.ATTACK, "fab-t", "n_target_classes", 9, "AutoAttack's FAB-T"),
    (Kind.ATTACK, "fab-t", "n_iter", 100, "AutoAttack's FAB-T"),
    (Kind.ATTACK, "square", "n_queries", 5000, "AutoAttack's Square, as released"),
    (Kind.ATTACK, "square", "p_init", 0.8, "AutoAttack's Square"),
    (Kind.ATTACK, "rays", "n_queries", 10000, "the released RayS call: query_limit = 10000"),
    (Kind.ATTACK, "autoattack", "version", "standard", "the released 'auto attack' entry"),
    (Kind.ATTACK, "reverse-hedge", "steps", 20, "Algorithm 5, as Algorithm 1"),
    (Kind.ATTACK, "hedge-aware", "steps", 20, "B.11, Algorithm 6: T"),
    (Kind.ATTACK, "hedge-aware", "hedge_steps", 20, "Algorithm 6: K, as Algorithm 1"),
    (Kind.ATTACK, "hedge-aware", "hedge_step_size", 4 / 255, "Algorithm 6: η, as Algorithm 1"),
    (Kind.ATTACK, "hedge-aware", "eps_d", 8 / 255, "ε_d = ε_a"),
    (Kind.ATTACK, "daa-white", "noise_radius", 0.093, "the released DAAWhite"),
    (Kind.ATTACK, "daa-black", "n_queries", 5000, "the released DAABlack: AutoAttack's Square"),
    (Kind.DEFENSE, "hedge", "steps", 20, "Section 4.1.1: 20 iterations"),
    (Kind.DEFENSE, "hedge", "random_init", True, "Algorithm 1: x'' = x' + ε_d U(−1, 1)"),
    (Kind.DEFENSE, "hedge", "loss", "sum-ce", "Eq. (3.2)"),
    (Kind.DEFENSE, "random", "eps_d", 8 / 255, "Section 4.1.1: ε_d = ε_a"),
    (Kind.DEFENSE, "hedge-random-class", "steps", 20, "Algorithm 4, as Algorithm 1"),
    (Kind.ATTACK, "daa-white", "steps", 10, "the released DAAWhite: 10 outer steps"),
    (Kind.ATTACK, "daa-white", "inner", 10, "the released DAAWhite: 10 Hedge steps each"),
    (Kind.ATTACK, "daa-black", "hedge_eps", 0.09, "the released DAABlack's one Hedge step"),
]
# What the paper preset sets: the released code's values, (plugin, parameter, value, where the code says so).
RELEASED = [
    (Kind.ATTACK, "pgd", "step_size", 0.007, "attacks.py PGDAttack: step_size = 0.007"),
    (Kind.ATTACK, "pgd", "clip_start", False, "attacks.py: the random start is not clipped"),
    (Kind.ATTACK, "cw", "confidence", 0.0, "attacks.py cw_loss, clamped at 0"),
    (Kind.ATTACK, "apgd-ce", "n_restarts", 5, "AutoAttack(version='custom') keeps 5 restarts"),
    (Kind.ATTACK, "reverse-hedge", "step_size", 0.007, "attacks.py ReverseAttack"),
    (Kind.DEFENSE, "hedge", "predict", "released", "hedge_defense.py: the summed logits"),
    (Kind.DEFENSE, "random", "eps_d", 0.031, "main_cifar10.py: ε = 0.031"),
    (Kind.DEFENSE, "random", "clip", False, "main_cifar10.py: the noise is not clipped"),
] + [(Kind.ATTACK, name, "unbroken", "clean", "AutoAttack's perturb returns x where it fails")
     for name in ("apgd-ce", "apgd-t", "fab-t", "square", "autoattack", "daa-black")]


@pytest.mark.parametrize("kind,plugin,parameter,value,source", PAPER_DEFAULTS,
                         ids=[f"{p}.{a}" for _, p, a, _, _ in PAPER_DEFAULTS])
def test_plugin_defaults_are_the_papers(registry, kind, plugin, parameter, value, source):
    assert registry.get(kind, plugin).param(parameter).default == value, source


@pytest.mark.parametrize("kind,plugin,parameter,value,source", RELEASED, ids=[f"{p}.{a}" for _, p, a, _, _ in RELEASED])
def test_the_paper_preset_sets_the_released_values(registry, kind, plugin, parameter, value, source):
    assert getattr(paper(registry, plugin, kind=kind), parameter) == value, source
    assert registry.get(kind, plugin).param(parameter).default != value, f"{plugin}.{parameter}: the preset changes nothing"


def test_the_honest_preset_keeps_every_attacks_own_point_where_it_fails(registry):
    for name in ("apgd-ce", "apgd-t", "fab-t", "square", "autoattack", "daa-black"):
        assert registry.get(Kind.ATTACK, name).param("unbroken").default == "last", name


def test_defaults_that_resolve_at_run_time_are_the_papers(registry):
    linf = ThreatModel(Norm.LINF, 8 / 255)
    assert registry.get(Kind.ATTACK, "pgd").factory().resolved_step(linf) == 4 / 255      # B.2: η = 4/255
    hedge = registry.get(Kind.DEFENSE, "hedge").factory()
    assert hedge.ball.eps == 8 / 255 and hedge.eta == 4 / 255                                # Section 4.1.1
    released_hedge = paper(registry, "hedge", kind=Kind.DEFENSE)
    assert released_hedge.ball.eps == 0.031 and released_hedge.eta == 0.007                 # hedge_defense.py
    assert paper(registry, "pgd").resolved_step(linf) == 0.007                              # attacks.py PGDAttack
    adaptive = registry.get(Kind.ATTACK, "adaptive").factory()
    assert (adaptive.n_target_classes, adaptive.eot, adaptive.defense_steps_in_attack) == (5, 3, 5)   # Croce et al.


@pytest.mark.parametrize("preset,ddof,name", [("honest", 1, "sample standard deviation"),
                                               ("paper", 0, "population standard deviation over repeats (np.std")])
def test_the_spread_over_repeats_is_the_presets(tmp_path, registry, preset, ddof, name):
    """Table 4: the released code prints np.std (ddof 0) and calls it "var"; the paper preset reports that, named
    as what it is; the honest preset the sample standard deviation."""
    import numpy as np

    from harness_reports.content import build_content

    grid = load_grid(digits_grid(tmp_path, n=40, repeats=3, attacks='[[attacks]]\nplugin = "pgd"\nsteps = 3\n',
                                 defenses='[[defenses]]\nplugin = "random"\neps_d = 0.2\n'), registry,
                     overrides=Overrides(preset=preset))
    with Store(grid.db) as store:
        run_grid(grid, store=store, progress=False)
        accuracy = store.accuracy(grid.run_id)
        content = build_content(store, grid.run_id)
    per_repeat = accuracy[(accuracy.attack == "pgd")].sort_values("repeat").acc.to_numpy() * 100
    cell = content.std.groups[0].rows[0].cells[content.std.keys.index("pgd")]
    assert cell.std == pytest.approx(np.std(per_repeat, ddof=ddof)) and per_repeat.std() > 0
    assert content.spread.startswith(name) and ("var" in content.spread) == (preset == "paper")


def test_a_paper_row_printed_twice_is_described_not_compared(registry):
    from harness_reports.reproduction import ReproductionRow, _summaries

    grid = load_grid(REPO / "configs" / "table5.toml", registry)
    notes = dict(grid.reported.notes)
    assert "copy of row 6" in notes["Gowal2020Uncovering_34_20"]
    rows = [ReproductionRow("Gowal2020Uncovering_34_20", "−", "PGD", 60.0, 40.0, 35.0, 45.0, False, 2000)]
    assert _summaries(rows, notes) == ["Gowal2020Uncovering_34_20: its reported values are a copy of row 6 "
                                       "(Cui2020Learnable_34_20) in the paper; not compared."]
