"""The work a prediction and an attack cost, held to what they need: counted passes, the exact sequential vote,
checks that stop drawing once a vote is decided, chunks that fit in memory; on the real digits models."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from conftest import digits_grid
from harness.api.cost import Passes
from harness.api.interfaces import Defense
from harness.api.threat import Norm, ThreatModel
from harness.grid.reader import load_grid
from harness.run.counting import PassCounter
from harness.run.defended import Defended, DrawRunner, predict_defended
from harness.run.runner import run_grid
from harness.storage.store import Store
from harness_plugins.attacks.adaptive import Adaptive
from harness_plugins.attacks.pgd import PGD
from harness_plugins.defenses.basic import RandomNoise
from harness_plugins.defenses.hedge import Hedge

LINF = ThreatModel(Norm.LINF, 0.1)
NOISE = RandomNoise(eps_d=0.3)                        # wide noise: draws disagree often near the boundary
HEDGE = Hedge(eps_d=0.1, steps=4, step_size=0.05)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def draws_of(seed: int):
    return lambda d: gen(1000 * seed + d)


@pytest.fixture(scope="module")
def near_the_boundary(digits, digits_robust):
    """PGD points of the robust digits model: where a randomised defense's draws split."""
    return PGD(steps=10, step_size=0.025)(digits_robust, digits.x, digits.y, LINF, generator=gen(0)), digits.y


@pytest.mark.parametrize("defense", [NOISE, HEDGE], ids=["noise", "hedge"])
def test_the_sequential_vote_equals_the_full_vote_example_by_example_with_fewer_passes(defense, near_the_boundary,
                                                                                        digits_robust):
    x, _ = near_the_boundary
    counted = {}
    predictions = {}
    for sequential in (False, True):
        model = PassCounter(digits_robust)
        predictions[sequential] = predict_defended(model, defense, x, 5, draws_of(1), sequential=sequential)
        counted[sequential] = model.counted()
    full, seq = predictions[False], predictions[True]
    assert torch.equal(full.pred, seq.pred)
    assert torch.equal(full.first_votes, seq.first_votes)
    assert (full.draws == 5).all() and ((seq.draws >= 3) & (seq.draws <= 5)).all()
    assert (seq.draws > 3).any() and (seq.draws == 3).any()   # some examples needed more draws, most did not
    per_draw = defense.passes().forward + 1
    assert counted[True].forward == per_draw * int(seq.draws.sum()) < counted[False].forward == per_draw * 5 * len(x)
    # the recorded share is over the draws made: 3 of 3 is 1.0, not a share of 5
    decided_early = seq.draws == 3
    assert torch.equal(seq.vote_frac[decided_early], torch.ones(int(decided_early.sum())))
    assert torch.allclose(seq.vote_frac * seq.draws, (seq.vote_frac * seq.draws).round())


@dataclass(frozen=True)
class Scripted(Defense):
    """Draw d predicts class SEQUENCE[d] for every input (a split vote on purpose)."""

    randomized = True

    def purify(self, model, x, *, generator, differentiable=False):
        return x

    def logits(self, model, x, *, generator, differentiable=False):
        draw = int(torch.randint(0, 1_000_000, (1,), generator=generator))
        return torch.nn.functional.one_hot(torch.full((len(x),), SEQUENCE[draw % 10]), 10).float()


SEQUENCE = [3, 1, 3, 1, 0]  # over 5 draws: 2 votes for class 1, 2 for class 3, 1 for class 0


def test_a_tied_vote_goes_to_the_lowest_class_index(digits_robust, digits):
    generators = {d: gen(0) for d in range(5)}
    for d in range(5):   # seed draw d so that its first random integer ends in d
        seed = next(s for s in range(10_000) if int(torch.randint(0, 1_000_000, (1,), generator=gen(s))) % 10 == d)
        generators[d] = seed
    predictions = predict_defended(digits_robust, Scripted(), digits.x[:4], 5, lambda d: gen(generators[d]))
    assert predictions.pred.tolist() == [1] * 4        # 1 and 3 tie at two votes each: the lower index wins
    assert predictions.draws.tolist() == [5] * 4 and torch.allclose(predictions.vote_frac, torch.full((4,), 0.4))


@pytest.mark.parametrize("defense", [NOISE, HEDGE], ids=["noise", "hedge"])
def test_adaptive_checks_that_stop_drawing_lose_nothing_and_cost_less(defense, digits, digits_robust):
    """The same points, example by example, as checks paying all 5 draws, and fewer passes."""
    x, y = digits.x[:100], digits.y[:100]
    out, counted = {}, {}
    for checks in ("full", "sequential"):
        model = PassCounter(digits_robust)
        attack = Adaptive(n_iter=10, n_target_classes=3, eot=2, defense_steps_in_attack=2, checks=checks)
        out[checks] = attack.attack_defended(Defended(model, defense, gen(5), votes=5), x, y, LINF, generator=gen(6))
        counted[checks] = model.counted()
    assert torch.equal(out["sequential"], out["full"])
    scored = predict_defended(digits_robust, defense, out["sequential"], 5, draws_of(7))
    assert (scored.pred != y).sum() > 10                      # the attack did break examples through the defense
    assert counted["sequential"].forward < counted["full"].forward
    assert counted["sequential"].backward <= counted["full"].backward


@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
def test_draws_in_chunks_give_the_rows_of_one_pass(chunk, near_the_boundary, digits_robust):
    x, _ = near_the_boundary
    whole = predict_defended(digits_robust, HEDGE, x[:40], 5, draws_of(2))
    chunked = predict_defended(digits_robust, HEDGE, x[:40], 5, draws_of(2), runner=DrawRunner(chunk))
    assert torch.equal(whole.pred, chunked.pred) and torch.equal(whole.draws, chunked.draws)
    assert torch.allclose(whole.probabilities, chunked.probabilities, atol=1e-6)
    bpda = [Defended(digits_robust, HEDGE, gen(3), runner=DrawRunner(size))(x[:40]) for size in (None, chunk)]
    assert torch.allclose(bpda[0], bpda[1], atol=1e-5)


class RunsOutOfMemory(nn.Module):
    """The model, raising CUDA's out-of-memory error on more than ``limit`` rows at once, as a full GPU would."""

    def __init__(self, model: nn.Module, limit: int):
        super().__init__()
        self.model, self.limit, self.refused = model, limit, 0

    def forward(self, x):
        if len(x) > self.limit:
            self.refused += 1
            raise torch.OutOfMemoryError(f"CUDA out of memory: {len(x)} rows")
        return self.model(x)


def test_running_out_of_memory_halves_the_chunk_and_gives_the_same_prediction(near_the_boundary, digits_robust):
    x, _ = near_the_boundary
    expected = predict_defended(digits_robust, HEDGE, x[:40], 5, draws_of(4))
    tight, runner = RunsOutOfMemory(digits_robust, limit=8), DrawRunner()
    got = predict_defended(tight, HEDGE, x[:40], 5, draws_of(4), runner=runner)
    assert tight.refused > 0 and runner.smallest_chunk is not None and runner.smallest_chunk <= 8
    assert torch.equal(got.pred, expected.pred) and torch.equal(got.draws, expected.draws)


def _full_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, runner: DrawRunner, defense: Defense = HEDGE):
    """Logits and the input gradient of the summed cross-entropy, through the unrolled defense, and where the
    defended model's generator ends."""
    generator = gen(8)
    leaf = x.clone().requires_grad_(True)
    logits = Defended(model, defense, generator, gradient="full", runner=runner)(leaf)
    (grad,) = torch.autograd.grad(nn.functional.cross_entropy(logits, y, reduction="sum"), leaf)
    return logits.detach(), grad, torch.rand(3, generator=generator)


@pytest.mark.parametrize("defense", [HEDGE, Hedge(eps_d=0.1, steps=3, step_size=0.05, predict="released"),
                                     RandomNoise(eps_d=0.1)], ids=["hedge", "hedge-released", "noise"])
@pytest.mark.parametrize("chunk", [1, 3, 16])
def test_the_full_gradient_in_chunks_is_the_gradient_of_one_pass(chunk, defense, near_the_boundary, digits_robust):
    """Rows a chunk at a time, recomputed in the backward pass: the same logits, the same input gradient (Hedge
    unrolled, random start included) and the same random stream afterwards as the whole batch in one graph."""
    x, y = near_the_boundary
    x, y = x[:20], y[:20]
    whole = _full_gradient(digits_robust, x, y, DrawRunner())
    chunked = _full_gradient(digits_robust, x, y, DrawRunner(chunk))
    assert torch.allclose(whole[0], chunked[0], atol=1e-5)
    assert torch.allclose(whole[1], chunked[1], atol=1e-6) and whole[1].abs().sum() > 0
    assert torch.equal(whole[2], chunked[2])


def test_the_full_gradient_out_of_memory_is_taken_in_chunks_with_the_same_result(near_the_boundary, digits_robust):
    x, y = near_the_boundary
    x, y = x[:40], y[:40]
    expected = _full_gradient(digits_robust, x, y, DrawRunner())
    tight, runner = RunsOutOfMemory(digits_robust, limit=8), DrawRunner()
    got = _full_gradient(tight, x, y, runner)
    assert tight.refused > 0 and runner.smallest_chunk is not None and runner.smallest_chunk <= 8
    assert torch.allclose(got[0], expected[0], atol=1e-5) and torch.allclose(got[1], expected[1], atol=1e-6)
    assert torch.equal(got[2], expected[2])


def test_a_unit_records_the_passes_it_made_and_its_floor(tmp_path, registry):
    """PGD-K against the bare model, scored without a defense: K forward and backward passes per example, plus
    the prediction; counted where they happen and recorded with the unit beside its floor."""
    grid = load_grid(digits_grid(tmp_path, n=40, attacks='[[attacks]]\nplugin = "pgd"\nsteps = 7\nstep_size = 0.02\n',
                                 extra="save_examples = 0"), registry)
    with Store(grid.db) as store:
        run_grid(grid, store=store, progress=False)
        units = store.units(grid.run_id).set_index("attack")
    pgd, clean = units.loc["pgd"], units.loc["clean"]
    assert (pgd.counted_forward, pgd.counted_backward) == (40 * 8, 40 * 7)
    assert (pgd.floor_forward, pgd.floor_backward) == (40 * 8, 40 * 7)
    # the clean unit's one prediction, and the gradient-norm check the reports use (one more of each)
    assert (clean.counted_forward, clean.counted_backward) == (40 * 2, 40 * 1)
    assert (clean.floor_forward, clean.floor_backward) == (40 * 1, 0)


def _bpda(model: nn.Module, x: torch.Tensor, y: torch.Tensor, runner: DrawRunner, defense: Defense):
    leaf = x.clone().requires_grad_(True)
    logits = Defended(model, defense, gen(3), runner=runner)(leaf)
    (grad,) = torch.autograd.grad(nn.functional.cross_entropy(logits, y, reduction="sum"), leaf)
    return logits.detach(), grad


def test_bpda_through_the_released_hedge_holds_one_graph_at_a_time_with_the_same_gradient(near_the_boundary,
                                                                                          digits_robust):
    """The released Hedge predicts from K − 1 iterates: BPDA's surrogate sums the model at each. Once a chunk is
    set (by hand, or on running out of memory) the points are taken a chunk of rows at a time in the backward
    pass: the same logits and the same input gradient as one graph per point."""
    released = Hedge(eps_d=0.1, steps=4, step_size=0.05, predict="released")
    x, y = near_the_boundary
    x, y = x[:40], y[:40]
    whole = _bpda(digits_robust, x, y, DrawRunner(), released)
    for runner in (DrawRunner(7), DrawRunner(40)):
        got = _bpda(digits_robust, x, y, runner, released)
        assert torch.allclose(got[0], whole[0], atol=1e-5) and torch.allclose(got[1], whole[1], atol=1e-6)
    tight, runner = RunsOutOfMemory(digits_robust, limit=8), DrawRunner()
    got = _bpda(tight, x, y, runner, released)
    assert tight.refused > 0 and runner.smallest_chunk is not None and runner.smallest_chunk <= 8
    assert torch.allclose(got[0], whole[0], atol=1e-5) and torch.allclose(got[1], whole[1], atol=1e-6)
    assert whole[1].abs().sum() > 0


def test_dent_adapting_under_vmap_is_counted_a_pass_per_example(cifar_robust, cifar):
    """DENT adapts each example under vmap(grad(...)), where the model sees one row per call: the counter still
    counts every example, ``steps`` forward and backward passes to adapt and one forward pass to predict."""
    from harness_plugins.defenses.dent import Dent

    x = cifar.x[:6]
    model = PassCounter(cifar_robust)
    Dent(steps=3).logits(model, x, generator=gen(0))
    assert model.counted().forward == 6 * (3 + 1)
    assert model.counted().backward == 6 * 3


def test_a_vmapped_batch_is_counted_by_its_rows_whoever_is_batched(digits_robust, digits):
    """vmap over the inputs (one row per call) and over parameters with one shared batch count the same rows
    as a plain batch of that many rows."""
    from torch.func import functional_call, vmap

    x = digits.x[:5]
    model = PassCounter(digits_robust)
    vmap(lambda xi: model(xi[None]))(x)
    assert model.counted() == Passes(5, 0)
    params = {f"model.{k}": v.detach()[None].expand(3, *v.shape) for k, v in digits_robust.named_parameters()}
    vmap(lambda p: functional_call(model, p, (x,)))(params)
    assert model.counted() == Passes(5 + 3 * 5, 0)


def _defenses_attacked_through() -> list[Defense]:
    from harness_plugins.defenses.anti_adversary import AntiAdversary
    from harness_plugins.defenses.basic import NoDefense
    from harness_plugins.defenses.dent import Dent
    from harness_plugins.defenses.tte import TTE

    return [NoDefense(), NOISE, HEDGE, Hedge(eps_d=0.1, steps=4, predict="released"), AntiAdversary(steps=2),
            TTE(crops=2), Dent(steps=2)]


@pytest.mark.parametrize("defense", _defenses_attacked_through(),
                         ids=["none", "random", "hedge", "hedge-released", "anti-adversary", "tte", "dent"])
def test_an_attack_through_each_defense_makes_the_passes_its_plan_counts(defense, cifar_robust, cifar):
    """BPDA-PGD through a defense, counted where the model runs, makes exactly the passes that
    ``defended_cost`` (so the plan, the estimate and the unit's floor) gives it: the defense's own passes on
    every forward pass, and the backward passes of its surrogate, one per view of TTE's ensemble and one per
    iterate of the released Hedge, not one per step."""
    from harness_plugins.attacks.suite import BPDAPGD

    x, y = cifar.x[:4], cifar.y[:4]
    threat = ThreatModel(Norm.LINF, 8 / 255)
    attack = BPDAPGD(steps=2, eot=2)
    counter = PassCounter(cifar_robust)
    attack.attack_defended(Defended(counter, defense, gen(5)), x, y, threat, generator=gen(6))
    assert counter.counted() == attack.defended_cost(threat, defense, votes=1) * len(x)
