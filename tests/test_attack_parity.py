"""Our attacks against their peers on the same model, data and seed budget."""

from __future__ import annotations

import pytest
import torch
import torchattacks

from conftest import shared_file
from harness.api.threat import Norm, ThreatModel
from harness_plugins.attacks.autoattack_bridge import APGD, APGDTargeted, AutoAttackEnsemble, FABTargeted, Square
from harness_plugins.attacks.deepfool import DeepFool
from harness_plugins.attacks.pgd import PGD
from harness_plugins.attacks.rays import RayS
from harness_plugins.attacks.seeded import isolated_rng, seed_from


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def correct(model, x, y):
    with torch.no_grad():
        return model(x).argmax(1) == y


def _pgd_parity(model, x, y, eps, steps, alpha):
    threat = ThreatModel(Norm.LINF, eps)
    ours = correct(model, PGD(steps=steps, step_size=alpha)(model, x, y, threat, generator=gen()), y).float().mean()
    torch.manual_seed(0)
    theirs = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)(x, y)
    theirs = correct(model, theirs, y).float().mean()
    return float(ours) * 100, float(theirs) * 100


def test_pgd_matches_torchattacks_on_the_digits_test_set(digits_robust):
    from harness_plugins.datasets.digits import Digits

    data = Digits().load(497)
    ours, theirs = _pgd_parity(digits_robust, data.x, data.y, 0.1, 20, 0.025)
    assert abs(ours - theirs) <= 1.5, (ours, theirs)


@pytest.mark.slow
def test_pgd_matches_torchattacks_on_500_cifar_images(cifar_robust):
    from harness_plugins.datasets.cifar10_jpeg import Cifar10Jpeg

    data = Cifar10Jpeg(root=str(shared_file("data/cifar10-jpeg/test.npz").parent)).load(500)
    ours, theirs = _pgd_parity(cifar_robust, data.x, data.y, 8 / 255, 20, 2 / 255)
    assert abs(ours - theirs) <= 1.5, (ours, theirs)


def test_bridge_apgd_and_autoattack_give_the_rows_of_pyautoattack_called_directly(digits, digits_robust):
    """With ``unbroken = "clean"`` (the paper preset) the bridges are the library's perturb, exactly; by default an
    example the attack did not break keeps the attack's own point, and every other example is the library's."""
    from pyautoattack import AutoAttack
    from pyautoattack.autopgd_base import APGDAttack

    x, y = digits.x[:60], digits.y[:60]
    threat = ThreatModel(Norm.LINF, 0.1)
    seed = seed_from(gen(4))
    direct = APGDAttack(digits_robust, n_iter=20, norm="Linf", eps=0.1, seed=seed, loss="ce", n_restarts=1,
                        device=x.device).perturb(x, y)
    assert torch.equal(APGD(n_iter=20, unbroken="clean")(digits_robust, x, y, threat, generator=gen(4)), direct)
    _the_library_where_broken_an_attack_point_where_not(APGD(n_iter=20)(digits_robust, x, y, threat, generator=gen(4)),
                                                        direct, x, y, digits_robust, threat)
    adversary = AutoAttack(digits_robust, norm="Linf", eps=0.1, version="standard", seed=seed, device=x.device)
    adversary.verbose = False
    direct, _ = adversary.run_standard_evaluation(x[:12], y[:12], batch_size=12)
    ours = AutoAttackEnsemble(unbroken="clean")(digits_robust, x[:12], y[:12], threat, generator=gen(4))
    assert torch.equal(ours, direct)
    _the_library_where_broken_an_attack_point_where_not(
        AutoAttackEnsemble()(digits_robust, x[:12], y[:12], threat, generator=gen(4)), direct, x[:12], y[:12],
        digits_robust, threat)


def _the_library_where_broken_an_attack_point_where_not(ours, library, x, y, model, threat):
    broken = ~correct(model, library, y)
    assert torch.equal(ours[broken], library[broken]) and torch.equal(correct(model, ours, y), ~broken)
    attacked = correct(model, x, y) & ~broken            # the clean x is what the library gives them
    assert attacked.any() and torch.equal(library[attacked], x[attacked])
    assert not torch.equal(ours[attacked], x[attacked]) and threat.contains(ours, x).all()


@pytest.mark.parametrize("name", ["apgd-t", "fab-t"])
def test_targeted_bridges_keep_their_own_point_for_what_they_did_not_break(name, digits, digits_robust):
    from pyautoattack.autopgd_base import APGDAttack_targeted
    from pyautoattack.fab_pt import FABAttack_PT

    x, y, threat = digits.x[:40], digits.y[:40], ThreatModel(Norm.LINF, 0.1)
    seed = seed_from(gen(5))
    if name == "apgd-t":
        make = lambda unbroken: APGDTargeted(n_iter=10, n_target_classes=3, unbroken=unbroken)  # noqa: E731
        library = APGDAttack_targeted(digits_robust, n_iter=10, norm="Linf", eps=0.1, seed=seed, n_target_classes=3,
                                      device=x.device)
    else:
        make = lambda unbroken: FABTargeted(n_iter=10, n_target_classes=3, unbroken=unbroken)  # noqa: E731
        library = FABAttack_PT(digits_robust, norm="Linf", n_iter=10, eps=0.1, seed=seed, targeted=True,
                               n_target_classes=3, device=x.device)
    with isolated_rng(seed, x.device):
        direct = library.perturb(x, y)
    assert torch.equal(make("clean")(digits_robust, x, y, threat, generator=gen(5)), direct)
    _the_library_where_broken_an_attack_point_where_not(make("last")(digits_robust, x, y, threat, generator=gen(5)),
                                                        direct, x, y, digits_robust, threat)


def test_autoattack_is_at_most_each_component_per_example(digits, digits_robust):
    x, y = digits.x[:20], digits.y[:20]
    threat = ThreatModel(Norm.LINF, 0.1)
    ensemble = correct(digits_robust, AutoAttackEnsemble()(digits_robust, x, y, threat, generator=gen(1)), y)
    for attack in (APGD(), APGDTargeted(), FABTargeted(), Square()):
        out = attack(digits_robust, x, y, threat, generator=gen(1))
        component = correct(digits_robust, getattr(out, "x_adv", out), y)
        assert not (ensemble & ~component).any(), type(attack).__name__  # robust to AA ⇒ robust to each part


class CountingModel(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.images = model, 0

    def forward(self, x):
        self.images += len(x)
        return self.model(x)


def test_rays_counts_queries_exactly_and_stays_in_the_ball(digits, digits_standard):
    x, y = digits.x[:60], digits.y[:60]
    threat = ThreatModel(Norm.LINF, 0.1)
    counted = CountingModel(digits_standard)
    out = RayS(n_queries=400)(counted, x, y, threat, generator=gen())
    assert int(out.queries.sum()) == counted.images      # every image through the model is one counted query
    assert int(out.queries.max()) <= 400
    fooled = ~correct(digits_standard, out.x_adv, y)
    assert fooled.float().mean() > 0.3
    assert ((out.x_adv - x).flatten(1).abs().amax(1) <= 0.1 + 1e-6).all()   # projected, as released


def test_rays_stores_queries_per_example_through_the_runner(tmp_path, registry):
    from conftest import digits_grid
    from harness.grid.reader import load_grid
    from harness.run.runner import run_grid
    from harness.storage.store import Store

    grid = load_grid(digits_grid(tmp_path, n=20, attacks='[[attacks]]\nplugin = "rays"\nn_queries = 200\n'), registry)
    store = Store(grid.db)
    rows = store.results(run_grid(grid, store=store, progress=False))
    rays = rows[rows.attack == "rays"]
    assert rays.queries.notna().all() and (rays.queries >= 1).all() and (rays.queries <= 200).all()
    assert (rows[rows.attack == "clean"].linf == 0).all() and (rays.linf <= 0.1 + 1e-6).all()


@pytest.mark.slow
def test_rays_fools_the_standard_cifar_model(cifar_standard):
    from harness_plugins.datasets.cifar10_jpeg import Cifar10Jpeg

    data = Cifar10Jpeg(root=str(shared_file("data/cifar10-jpeg/test.npz").parent)).load(50)  # ~10 min on 2 cores
    keep = correct(cifar_standard, data.x, data.y)
    out = RayS(n_queries=10_000)(cifar_standard, data.x[keep], data.y[keep], ThreatModel(Norm.LINF, 8 / 255),
                                 generator=gen())
    assert (~correct(cifar_standard, out.x_adv, data.y[keep])).float().mean() >= 0.95


def deepfool_reference(model, x, y, steps=50, overshoot=0.02, candidates=10):
    """One example at a time, the L∞ DeepFool loop written out plainly (foolbox's formulation)."""
    with torch.no_grad():
        logits = model(x[None])[0]
    others = [int(c) for c in logits.argsort(descending=True) if int(c) != int(y)][: candidates - 1]
    total, x_adv = torch.zeros_like(x), x.clone()
    if int(logits.argmax()) != int(y):
        return x_adv
    for _ in range(steps):
        xi = x_adv.clone().requires_grad_(True)
        out = model(xi[None])[0]
        if int(out.argmax()) != int(y):
            break
        best_d, best_g = None, None
        for k in others:
            g = torch.autograd.grad(out[k] - out[y], xi, retain_graph=True)[0]
            d = (out[k] - out[y]).detach().abs() / (g.abs().sum() + 1e-8)
            if best_d is None or d < best_d:
                best_d, best_g = d, g
        total = total + (best_d + 1e-4) * best_g.sign()
        x_adv = (x + (1 + overshoot) * total).clamp(0, 1)
    return x_adv.detach()


def test_batched_deepfool_matches_the_per_example_loop(digits, digits_robust):
    x, y = digits.x[:50], digits.y[:50]
    batched = DeepFool().minimal(digits_robust, x, y, Norm.LINF)
    single = torch.stack([deepfool_reference(digits_robust, x[i], y[i]) for i in range(len(x))])
    close = (batched - single).flatten(1).abs().amax(1) < 1e-4
    assert close.float().mean() >= 0.96, close.float().mean()   # batched BLAS may round a near-tie differently
    assert torch.equal(correct(digits_robust, batched, y), correct(digits_robust, single, y))
