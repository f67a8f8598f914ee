"""Hedge Defense (Algorithm 1) and random noise, on real models and real data."""

from __future__ import annotations

import torch

from benchmarks.reference_loops import released_hedge
from harness.api.losses import kl_uniform, sum_ce
from harness.api.threat import Norm, ThreatModel
from harness_plugins.defenses.basic import RandomNoise
from harness_plugins.defenses.hedge import Hedge


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_hedge_stays_in_its_ball_and_in_the_box(digits, digits_robust, cifar, cifar_robust):
    for data, model, eps_d in [(digits, digits_robust, 0.1), (cifar, cifar_robust, 8 / 255)]:
        x = data.x[:20]
        hedge = Hedge(eps_d=eps_d, steps=5, step_size=eps_d / 2)
        out = hedge.purify(model, x, generator=gen())
        assert ThreatModel(Norm.LINF, eps_d).contains(out, x, tol=1e-6).all()
        assert (out - x).abs().max() > 0.5 * eps_d  # it moved


def test_hedge_raises_the_summed_cross_entropy(digits, digits_robust, cifar, cifar_robust):
    for data, model, eps_d, steps in [(digits, digits_robust, 0.1, 10), (cifar, cifar_robust, 8 / 255, 5)]:
        x = data.x[:100] if data is digits else data.x
        hedge = Hedge(eps_d=eps_d, steps=steps, step_size=eps_d / 4)
        start = hedge.ball.random_start(x, gen(3))      # the same draw purify() starts from
        out = hedge.purify(model, x, generator=gen(3))
        with torch.no_grad():
            before, after = sum_ce(model(start)), sum_ce(model(out))
        assert (after > before).float().mean() >= 0.95, (after > before).float().mean()


def test_kl_uniform_and_sum_ce_give_identical_iterates(digits, digits_robust):
    x = digits.x[:50]
    a = Hedge(eps_d=0.1, steps=10, step_size=0.02, loss="sum-ce").purify(digits_robust, x, generator=gen(1))
    b = Hedge(eps_d=0.1, steps=10, step_size=0.02, loss="kl-uniform").purify(digits_robust, x, generator=gen(1))
    assert torch.equal(a, b)
    logits = digits_robust(x)
    assert torch.allclose(kl_uniform(logits), sum_ce(logits) / 10 - torch.log(torch.tensor(10.0)), atol=1e-5)


def test_one_examples_result_does_not_depend_on_its_batch(cifar, cifar_robust):
    x = cifar.x[:12]
    hedge = Hedge(steps=4, random_init=False)
    together = hedge.purify(cifar_robust, x, generator=gen())
    alone = torch.cat([hedge.purify(cifar_robust, x[i:i + 1], generator=gen()) for i in range(len(x))])
    shuffled = hedge.purify(cifar_robust, x.flip(0), generator=gen()).flip(0)
    # batched convolutions may round differently; a sign flip of a ~0 gradient moves a pixel by ≤ 2η
    for other in (alone, shuffled):
        differs = (together - other).abs() > 1e-6
        assert differs.float().mean() < 1e-3, differs.float().mean()
    with torch.no_grad():
        assert torch.equal(cifar_robust(together).argmax(1), cifar_robust(alone).argmax(1))


def test_hedge_leaves_the_model_untouched(digits, digits_robust):
    for p in digits_robust.parameters():  # the fixture is shared; library attacks (FAB) call backward() on it
        p.grad = None
    flags = [p.requires_grad for p in digits_robust.parameters()]
    Hedge(steps=3, eps_d=0.1).purify(digits_robust, digits.x[:10], generator=gen())
    assert not digits_robust.training
    assert [p.requires_grad for p in digits_robust.parameters()] == flags
    assert all(p.grad is None for p in digits_robust.parameters())


def test_released_mode_matches_the_released_loop(cifar, cifar_robust):
    x = cifar.x[:20]
    reference = released_hedge(cifar_robust, x, gen(5), steps=6)
    for p in cifar_robust.parameters():  # the reference loop's backward() left .grad on the weights
        p.grad = None
    hedge = Hedge(predict="released", steps=6, loss="kl-uniform")
    assert hedge.ball.eps == 0.031 and hedge.eta == 0.007
    with torch.no_grad():
        ours = hedge.logits(cifar_robust, x, generator=gen(5)).argmax(1)
    assert torch.equal(ours, reference)


def test_random_noise_is_uniform_in_the_ball(cifar):
    x = cifar.x
    out = RandomNoise(eps_d=8 / 255).purify(None, x, generator=gen())
    delta = out - x
    inner = (x > 0.05) & (x < 0.95)  # where clipping cannot act
    assert delta.abs().max() <= 8 / 255 + 1e-6
    assert abs(float(delta[inner].mean())) < 1e-3
    assert abs(float(delta[inner].abs().mean()) - 4 / 255) < 2e-3  # E|U(−ε, ε)| = ε/2
