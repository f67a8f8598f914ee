"""Every attack of tests/attack_table.py: inside its ball and [0,1], lowers accuracy, seeded, model untouched."""

from __future__ import annotations

import pytest
import torch
from attack_table import ATTACKS, EPS

from harness.api.threat import Norm, ThreatModel
from harness.run.checks import check_attack_output
from harness_plugins.attacks.autoattack_bridge import Square
from harness_plugins.attacks.rays import RayS


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _run(attack, model, x, y, threat, seed=0):
    out = attack(model, x, y, threat, generator=torch.Generator().manual_seed(seed))
    return getattr(out, "x_adv", out)


# AutoAttack's full standard budget (Square at 5,000 queries) is the slowest case by far; the default suite
# runs the ensemble on real digits in test_attack_parity.py (at most each component, per example)
DIGITS_CASES = [pytest.param(*a, id=a[0], marks=[pytest.mark.slow] if a[0] == "autoattack-linf" else [])
                for a in ATTACKS]


@pytest.mark.parametrize("name,make,norm,on_cifar", DIGITS_CASES)
def test_attack_on_digits_models(name, make, norm, on_cifar, digits, digits_robust, digits_standard):
    threat = ThreatModel(Norm(norm), EPS[("digits", norm)])
    n = 20 if name.startswith("autoattack") else 100
    x, y = digits.x[:n], digits.y[:n]
    first = {}
    for model in (digits_robust, digits_standard):
        flags = [p.requires_grad for p in model.parameters()]
        first[id(model)] = x_adv = _run(make(), model, x, y, threat)
        check_attack_output(name, x_adv, x, threat)          # in the ball, in [0,1], finite, same shape
        assert accuracy(model, x_adv, y) < accuracy(model, x, y) - 0.05
        assert not model.training and [p.requires_grad for p in model.parameters()] == flags
    assert torch.equal(_run(make(), digits_robust, x, y, threat), first[id(digits_robust)])  # same seed, same examples


# "every attack lowers the standard model's accuracy to near 0" is a claim about the attacks at their
# paper budgets; the table's small query budgets are for speed. On the standard model the query attacks
# stop early (each example as soon as it is fooled), so the full budget costs little there.
PAPER_BUDGET = {"square-linf": lambda: Square(), "square-l2": lambda: Square(), "rays-linf": lambda: RayS()}
# Measured on these 20 images (CPU, this commit): Square-L2 at ε = 0.5 with 5,000 queries leaves 4 of 20
# standard-model images correct (L∞ Square and RayS leave none). That is pyautoattack's own Square, which
# test_attack_parity.py shows ours reproduces exactly; "near 0" is a claim for L∞ at 8/255.
NEAR_ZERO = {"square-l2": 0.25}

CIFAR_CASES = [pytest.param(*a[:3], marks=() if a[3] else pytest.mark.slow, id=a[0]) for a in ATTACKS]


@pytest.mark.parametrize("name,make,norm", CIFAR_CASES)
def test_attack_on_cifar_models(name, make, norm, cifar, cifar_robust, cifar_standard):
    threat = ThreatModel(Norm(norm), EPS[("cifar", norm)])
    x, y = cifar.x, cifar.y
    x_adv = _run(make(), cifar_robust, x, y, threat)
    check_attack_output(name, x_adv, x, threat)
    assert accuracy(cifar_robust, x_adv, y) < accuracy(cifar_robust, x, y)
    x_adv = _run(PAPER_BUDGET.get(name, make)(), cifar_standard, x, y, threat)
    check_attack_output(name, x_adv, x, threat)
    assert accuracy(cifar_standard, x_adv, y) <= NEAR_ZERO.get(name, 0.1)   # the standard model falls to near 0
