"""The Hedge paper's own attacks, the adaptive evaluation, and the paper's analytics, on real models."""

from __future__ import annotations

import json

import pandas as pd
import torch

from conftest import digits_grid, harness_cli, shared_file
from harness.analysis.analytics import flip_counts
from harness.api.threat import Norm, ThreatModel
from harness.grid.reader import load_grid
from harness.run.checks import check_attack_output
from harness.run.defended import Defended
from harness.run.runner import run_grid
from harness.storage.store import Store
from harness_plugins.attacks.adaptive import Adaptive
from harness_plugins.attacks.hedge_attacks import DAABlack, ReverseHedge
from harness_plugins.defenses.hedge import Hedge, HedgeRandomClass

LINF = ThreatModel(Norm.LINF, 0.1)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_reverse_hedge_needs_no_labels_and_lowers_accuracy(digits, digits_standard, cifar, cifar_standard):
    x, y = digits.x[:100], digits.y[:100]
    attack = ReverseHedge(steps=10, step_size=0.02)
    with_labels = attack(digits_standard, x, y, LINF, generator=gen())
    without = attack(digits_standard, x, torch.zeros_like(y), LINF, generator=gen())
    assert torch.equal(with_labels, without)                 # the labels are never read
    check_attack_output("reverse-hedge", with_labels, x, LINF)
    assert accuracy(digits_standard, with_labels, y) < accuracy(digits_standard, x, y) - 0.05
    threat = ThreatModel(Norm.LINF, 8 / 255)
    x_adv = ReverseHedge(steps=5, step_size=2 / 255)(cifar_standard, cifar.x, torch.zeros_like(cifar.y), threat,
                                                    generator=gen())
    check_attack_output("reverse-hedge", x_adv, cifar.x, threat)
    assert accuracy(cifar_standard, x_adv, cifar.y) < accuracy(cifar_standard, cifar.x, cifar.y) - 0.3


def test_daa_black_is_square_through_the_released_one_step_hedge(digits, digits_robust):
    """Not Square on the bare model: Square against the released InternalDefense (one KL step of 0.045 from
    x + U(−0.09, 0.09)), which the wrapper reproduces exactly. Algorithm 6 and DAA-white are held to their
    reference loops in test_paper.py."""
    from benchmarks.reference_loops import released_internal_defense
    from harness_plugins.attacks.autoattack_bridge import Square
    from harness_plugins.attacks.hedge_attacks import _OneStepHedge

    x, y = digits.x[:40], digits.y[:40]
    wrapper = _OneStepHedge(digits_robust, 0.045, 0.09, gen(2))
    reference = released_internal_defense(digits_robust, x, gen(2))
    with torch.no_grad():
        assert torch.equal(wrapper(x), reference)
    ours = DAABlack(n_queries=100)(digits_robust, x, y, LINF, generator=gen())
    shared = gen()  # DAABlack draws Square's seed and the wrapper's noise from one generator
    through = Square(n_queries=100)(_OneStepHedge(digits_robust, 0.045, 0.09, shared), x, y, LINF, generator=shared)
    bare = Square(n_queries=100)(digits_robust, x, y, LINF, generator=gen())
    assert torch.equal(ours.x_adv, through.x_adv) and not torch.equal(ours.x_adv, bare.x_adv)
    check_attack_output("daa-black", ours.x_adv, x, LINF)


def test_hedge_random_class_stays_in_its_ball_and_differs_from_hedge(digits, digits_robust):
    x = digits.x[:30]
    out = HedgeRandomClass(eps_d=0.1, steps=5, step_size=0.05).purify(digits_robust, x, generator=gen())
    assert ThreatModel(Norm.LINF, 0.1).contains(out, x).all()
    assert not torch.equal(out, Hedge(eps_d=0.1, steps=5, step_size=0.05).purify(digits_robust, x, generator=gen()))


def test_full_gradient_flows_through_the_unrolled_defense(digits, digits_robust):
    for p in digits_robust.parameters():  # the fixture is shared; library attacks (FAB) call backward() on it
        p.grad = None
    x, y = digits.x[:8].clone().requires_grad_(True), digits.y[:8]
    hedge = Hedge(eps_d=0.1, steps=3, step_size=0.05)
    grads = {}
    for mode in ("bpda", "full"):
        model = Defended(digits_robust, hedge, gen(2), gradient=mode)   # the same draw of Hedge for both
        (grads[mode],) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y), x)
        assert grads[mode].abs().sum() > 0, mode
    assert all(p.grad is None for p in digits_robust.parameters())
    # the full gradient passes through Hedge's projections: zero where a pixel sits on the edge of the defense's
    # ball or of [0,1], unlike BPDA's identity; a "full" that fell back to BPDA would give the same gradient
    assert not torch.allclose(grads["bpda"], grads["full"])
    assert ((grads["full"] == 0) & (grads["bpda"] != 0)).any()


def test_adaptive_attack_beats_the_transfer_protocol_on_hedge(tmp_path, registry):
    """Croce et al.'s result in small: on the robust CIFAR-10 (JPEG) model, attacking through Hedge removes its gain."""
    root = shared_file("data/cifar10-jpeg/test.npz").parent
    model = shared_file("models/cifar10-jpeg/fastat40.pt")
    (tmp_path / "grid.toml").write_text(f"""
dataset = {{ plugin = "cifar10-jpeg", root = "{root}" }}
n_examples = 20
norm = "Linf"
eps = "8/255"
batch_size = 20
device = "cpu"
votes = 3
save_examples = 0
db = "{tmp_path / 'results.sqlite'}"
models = [{{ plugin = "checkpoint", label = "fastat40", arch = "robustbench:cifar10:Linf:Wong2020Fast", path = "{model}" }}]
attacks = [{{ plugin = "pgd", steps = 5, step_size = "2/255" }},
           {{ plugin = "adaptive", n_iter = 10, n_target_classes = 3, defense_steps_in_attack = 2, eot = 1 }}]
defenses = [{{ plugin = "none" }}, {{ plugin = "hedge", steps = 5 }}]
""")
    grid = load_grid(tmp_path / "grid.toml", registry)
    store = Store(grid.db)
    run_id = run_grid(grid, store=store, progress=False)
    acc = store.accuracy(run_id).set_index(["defense", "attack"])["acc"]
    assert acc[("hedge", "adaptive")] < acc[("hedge", "pgd")]            # through the defense beats transfer
    from harness.analysis.aggregate import WORST_ADAPTIVE, WORST_TRANSFER

    cells = json.loads(harness_cli("show", "--db", str(tmp_path / "results.sqlite"), "--format", "json").stdout)
    worst = {c["key"]: c["accuracy"] for c in cells if c["defense"] == "Hedge"}
    assert worst[WORST_ADAPTIVE] < worst[WORST_TRANSFER]
    out = harness_cli("show", "--db", str(tmp_path / "results.sqlite")).stdout
    assert "Worst Case (transfer)" in out and "Worst Case (adaptive)" in out
    assert "[transfer-only]" not in out


def test_adaptive_attack_with_fewer_defense_steps_and_full_gradient(digits, digits_robust):
    x, y = digits.x[:30], digits.y[:30]
    hedge = Hedge(eps_d=0.1, steps=6, step_size=0.05)
    attack = Adaptive(n_iter=8, n_target_classes=2, gradient="full", defense_steps_in_attack=2)
    assert hedge.for_attack(2).steps == 2 and hedge.for_attack(10).steps == 6  # cut, never raised
    x_adv = attack.attack_defended(Defended(digits_robust, hedge, gen(3)), x, y, LINF, generator=gen())
    check_attack_output("adaptive", x_adv, x, LINF)
    with torch.no_grad():
        assert (hedge.logits(digits_robust, x_adv, generator=gen(4)).argmax(1) == y).float().mean() < \
               (hedge.logits(digits_robust, x, generator=gen(4)).argmax(1) == y).float().mean()


def test_adaptive_attack_checks_success_by_the_majority_vote(digits, digits_robust):
    """Against a random defense, pyautoattack's loop drops an example after one lucky draw; ours asks the vote."""
    from harness.run.defended import predict_defended
    from harness_plugins.defenses.basic import RandomNoise

    noise = RandomNoise(eps_d=0.3)  # single draws disagree often: where a lucky draw misleads most
    x, y = digits.x, digits.y
    survivors = {"single-draw": 0, "vote": 0}
    for seed in range(3):
        for success in survivors:
            attack = Adaptive(n_iter=10, n_target_classes=3, success=success)
            x_adv = attack.attack_defended(Defended(digits_robust, noise, gen(seed + 10), votes=5), x, y, LINF,
                                           generator=gen(seed))
            check_attack_output("adaptive", x_adv, x, LINF)
            scored = predict_defended(digits_robust, noise, x_adv, 5, lambda d: gen(99 + d))  # as the runner scores
            survivors[success] += int((scored.pred == y).sum())
    assert survivors["vote"] < survivors["single-draw"], survivors


def test_full_grid_flip_counts_add_up_to_the_accuracy_differences(tmp_path, registry):
    attacks = ('[[attacks]]\nplugin = "pgd"\nsteps = 10\nstep_size = 0.02\n'
               '[[attacks]]\nplugin = "cw"\nsteps = 10\nstep_size = 0.02\n')
    defenses = ('[[defenses]]\nplugin = "none"\n[[defenses]]\nplugin = "random"\neps_d = 0.1\n'
                '[[defenses]]\nplugin = "hedge"\nsteps = 5\neps_d = 0.1\nstep_size = 0.04\n')
    grid = load_grid(digits_grid(tmp_path, n=100, batch_size=50, attacks=attacks, defenses=defenses,
                                 extra="save_examples = 4"), registry)
    store = Store(grid.db)
    run_id = run_grid(grid, store=store, progress=False)
    flips = flip_counts(store, run_id)
    assert set(flips.defense) == {"random", "hedge"} and set(flips.attack) == {"clean", "pgd", "cw"}
    acc = store.accuracy(run_id).set_index(["model", "defense", "attack", "repeat"])["acc"]
    for row in flips.itertuples():
        gain = acc[(row.model, row.defense, row.attack, row.repeat)] - acc[(row.model, "none", row.attack, row.repeat)]
        assert abs(gain - (row.FtoT - row.TtoF) / row.n) < 1e-12
        assert row.FtoT + row.TtoF + row.FtoF + row.FtoSame + row.TtoT == row.n == 100
    assert flips.loc[flips.attack == "pgd", "FtoT"].sum() > 0           # the paper's effect exists here
    examples = pd.read_sql_query("SELECT * FROM examples", store.db.conn)
    assert len(examples) == 3 * 3 * 4                                    # attacks × defenses × saved
    clean = examples[examples.attack == "clean"]
    assert (clean.ssim_adv > 0.999).all()
    pgd = examples[examples.attack == "pgd"]
    assert (pgd.ssim_adv < 0.999).all() and (pgd.ssim_adv > -1).all()
    assert (examples[examples.defense == "hedge"].ssim_defended < 0.999).all()
    assert all(png.startswith(b"\x89PNG") for png in examples.adv_png)
