"""The test-time defenses beside Hedge: each against a plain re-implementation of its released loop on real data,
its in-attack copy, and its independence of the other rows of a batch (which the scoring and chunking rely on)."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.api import PluginError
from harness.run.defended import Defended
from harness_plugins.defenses.anti_adversary import AntiAdversary
from harness_plugins.defenses.dent import Dent
from harness_plugins.defenses.tte import TTE

G = torch.Generator()


def entropy(logits: torch.Tensor) -> torch.Tensor:
    return -(logits.softmax(1) * logits.log_softmax(1)).sum(1)


# --- Anti-adversary ----------------------------------------------------------------------------------

def released_anti_adversary(model: nn.Module, x: torch.Tensor, k: int, alpha: float) -> torch.Tensor:
    """anti_adversary_wrapper.forward of the released code, without normalisation (the model normalises)."""
    pseudo = model(x).max(1)[1]
    with torch.enable_grad():
        anti = torch.zeros_like(x, requires_grad=True)
        for _ in range(k):
            loss = F.cross_entropy(model(x + anti), pseudo)
            grad = torch.autograd.grad(loss, anti)
            anti.data -= alpha * grad[0].sign()
    return model(x + anti)


@pytest.mark.parametrize("steps, alpha", [(2, 0.15), (3, 0.05)])
def test_anti_adversary_is_the_released_layer(digits_robust, digits, steps, alpha):
    x = digits.x[:64]
    with torch.no_grad():
        ours = AntiAdversary(steps=steps, step_size=alpha).logits(digits_robust, x, generator=G)
        theirs = released_anti_adversary(digits_robust, x, steps, alpha)
    torch.testing.assert_close(ours, theirs)


def test_anti_adversary_moves_away_from_the_attack_and_leaves_the_image_domain_as_released(digits_robust, digits):
    x = digits.x[:64]
    defense = AntiAdversary()
    point = defense.purify(digits_robust, x, generator=G)
    with torch.no_grad():
        own = digits_robust(x).argmax(1)
        before = F.cross_entropy(digits_robust(x), own, reduction="none")
        after = F.cross_entropy(digits_robust(point), own, reduction="none")
    assert after.mean() < before.mean()                # the loss of its own prediction goes down
    assert (point - x).abs().max() == pytest.approx(2 * 0.15)   # k·α, not projected
    assert point.min() < 0 or point.max() > 1          # not clipped to [0,1], as in the released code


# --- TTE ---------------------------------------------------------------------------------------------

def released_tte(model: nn.Module, x: torch.Tensor, offsets: list[tuple[int, int]], pad: int) -> torch.Tensor:
    """utils.AugWrapper(flip=True, n_crops=len(offsets), flip_crop=True) of the released code, mean 0 and std 1."""
    def crop(r: int, c: int):
        return lambda v: F.pad(v, (pad,) * 4)[:, :, r:r + v.shape[2], c:c + v.shape[3]]

    crops = [crop(r, c) for r, c in offsets]
    transforms = [lambda v: v, lambda v: v.flip(3)] + crops + [lambda v, f=f: f(v.flip(3)) for f in crops]
    stacked = torch.cat([t(x).unsqueeze(0) for t in transforms])
    scores = model(stacked.view(-1, *x.shape[1:])).view(len(transforms), len(x), -1)
    return scores.mean(0)


def test_tte_is_the_released_ensemble(digits_robust, digits):
    x = digits.x[:64]
    defense = TTE(pad=1)
    assert len(defense.views()) == 10 and len(set(defense.offsets())) > 1
    with torch.no_grad():
        torch.testing.assert_close(defense.logits(digits_robust, x, generator=G),
                                   released_tte(digits_robust, x, defense.offsets(), pad=1))


def test_tte_offsets_are_drawn_once_from_its_seed_in_the_released_range():
    assert TTE().offsets() == TTE().offsets() != TTE(crop_seed=1).offsets()
    assert all(0 <= r < 8 and 0 <= c < 8 for r, c in TTE(crops=50).offsets())
    with pytest.raises(PluginError, match="flip = true"):
        TTE(flip=False).check()


def test_tte_gradient_is_exact_under_bpda_and_full(digits_robust, digits):
    x = digits.x[:16].clone()
    defense = TTE(pad=1)
    grads = []
    for gradient in ("bpda", "full"):
        leaf = x.clone().requires_grad_(True)
        Defended(digits_robust, defense, torch.Generator(), gradient=gradient)(leaf).logsumexp(1).sum().backward()
        grads.append(leaf.grad)
    leaf = x.clone().requires_grad_(True)
    released_tte(digits_robust, leaf, defense.offsets(), 1).logsumexp(1).sum().backward()
    torch.testing.assert_close(grads[0], leaf.grad)
    torch.testing.assert_close(grads[1], leaf.grad)


# --- DENT --------------------------------------------------------------------------------------------

class _SampleAwareStaticBN(nn.BatchNorm2d):
    """dent.py's SampleAwareStaticBatchNorm2d: running statistics, one affine copy per example."""

    def forward(self, x):
        scale = self.weight * ((self.running_var + self.eps).rsqrt()).reshape(1, -1)
        bias = self.bias - self.running_mean.reshape(1, -1) * scale
        return x * scale[..., None, None] + bias[..., None, None]


def _convert(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.BatchNorm2d):
        out = _SampleAwareStaticBN(module.num_features, module.eps)
        out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
    for name, child in module.named_children():
        out.add_module(name, _convert(child))
    return out


def released_dent(model: nn.Module, x: torch.Tensor, steps: int, lr: float, betas=(0.99, 0.999), beta3=0.6,
                  loss: str = "mean") -> torch.Tensor:
    """Dent.forward of the released code (episodic, tent loss), with AdaMod's step as the adamod package makes it."""
    model = _convert(copy.deepcopy(model))
    model.requires_grad_(False)
    bns = [m for m in model.modules() if isinstance(m, _SampleAwareStaticBN)]
    for m in bns:
        m.weight = nn.Parameter(m.weight.detach().unsqueeze(0).repeat(len(x), 1))
        m.bias = nn.Parameter(m.bias.detach().unsqueeze(0).repeat(len(x), 1))
    params = [p for m in bns for p in (m.weight, m.bias)]
    state = {id(p): [torch.zeros_like(p) for _ in range(3)] for p in params}
    for t in range(1, steps + 1):
        with torch.enable_grad():
            e = entropy(model(x))
            (e.mean() if loss == "mean" else e.sum()).backward()
        with torch.no_grad():
            for p in params:
                exp_avg, exp_avg_sq, exp_avg_lr = state[id(p)]
                exp_avg.mul_(betas[0]).add_(p.grad, alpha=1 - betas[0])
                exp_avg_sq.mul_(betas[1]).addcmul_(p.grad, p.grad, value=1 - betas[1])
                denom = exp_avg_sq.sqrt().add_(1e-8)
                step_size = torch.full_like(denom, lr * math.sqrt(1 - betas[1] ** t) / (1 - betas[0] ** t))
                step_size.div_(denom)
                exp_avg_lr.mul_(beta3).add_(step_size, alpha=1 - beta3)
                p.sub_(torch.min(step_size, exp_avg_lr) * exp_avg)
                p.grad = None
    with torch.no_grad():
        return model(x)


@pytest.mark.shared
def test_dent_is_the_released_adaptation(cifar_robust, cifar):
    x = cifar.x[:8]
    with torch.no_grad():
        ours = Dent().logits(cifar_robust, x, generator=G)
    # the loss summed over the batch, as here: the same computation
    torch.testing.assert_close(ours, released_dent(cifar_robust, x, 6, 6e-3, loss="sum"), atol=2e-4, rtol=1e-4)
    # averaged, as released: AdaMod's steps do not see the loss's scale but for its ε
    released = released_dent(cifar_robust, x, 6, 6e-3)
    assert (ours - released).abs().max() < 1e-3 * released.abs().max() and (ours.argmax(1) == released.argmax(1)).all()
    # and it adapts: the prediction is more confident than the bare model's, and the weights are untouched
    before = {k: v.clone() for k, v in cifar_robust.state_dict().items()}
    with torch.no_grad():
        assert (entropy(ours) < entropy(cifar_robust(x))).all()
    assert all(torch.equal(v, cifar_robust.state_dict()[k]) for k, v in before.items())


@pytest.mark.shared
def test_dent_full_gradient_runs_through_the_adaptation_and_bpda_holds_it_constant(cifar_robust, cifar):
    x = cifar.x[:4]
    defense = Dent(steps=2)
    grads = {}
    for gradient in ("bpda", "full"):
        leaf = x.clone().requires_grad_(True)
        Defended(cifar_robust, defense, torch.Generator(), gradient=gradient)(leaf)[:, 0].sum().backward()
        grads[gradient] = leaf.grad
    # BPDA: the gradient of the adapted model at x, its parameters held at their adapted values
    leaf = x.clone().requires_grad_(True)
    with torch.no_grad():
        params = defense.adapt(cifar_robust, x)
    Dent._predict(cifar_robust, params, leaf)[:, 0].sum().backward()
    torch.testing.assert_close(grads["bpda"], leaf.grad)
    # the full gradient also differentiates the adaptation: it differs from BPDA's, except with no steps
    assert torch.isfinite(grads["full"]).all() and not torch.allclose(grads["full"], grads["bpda"])
    no_steps = {}
    for gradient in ("bpda", "full"):
        leaf = x.clone().requires_grad_(True)
        Defended(cifar_robust, Dent(steps=0), torch.Generator(), gradient=gradient)(leaf)[:, 0].sum().backward()
        no_steps[gradient] = leaf.grad
    torch.testing.assert_close(no_steps["full"], no_steps["bpda"])


def test_dent_needs_batchnorm_and_says_so(digits_robust, digits):
    with pytest.raises(PluginError, match="BatchNorm"):
        Dent().logits(digits_robust, digits.x[:4], generator=G)


# --- what all of them share --------------------------------------------------------------------------

DEFENSES = [AntiAdversary(), TTE(pad=1)]


@pytest.mark.parametrize("defense", DEFENSES, ids=lambda d: d.id if hasattr(d, "id") else type(d).__name__)
def test_a_row_is_predicted_the_same_whoever_shares_its_batch(digits_robust, digits, defense):
    x = digits.x[:24]
    with torch.no_grad():
        whole = defense.logits(digits_robust, x, generator=G)
        parts = torch.cat([defense.logits(digits_robust, x[i:i + 5], generator=G) for i in range(0, 24, 5)])
    torch.testing.assert_close(whole, parts)


@pytest.mark.shared
def test_dent_predicts_a_row_the_same_whoever_shares_its_batch(cifar_robust, cifar):
    x = cifar.x[:6]
    with torch.no_grad():
        whole = Dent(steps=3).logits(cifar_robust, x, generator=G)
        parts = torch.cat([Dent(steps=3).logits(cifar_robust, x[i:i + 2], generator=G) for i in (0, 2, 4)])
    torch.testing.assert_close(whole, parts, atol=1e-4, rtol=1e-4)


def test_the_in_attack_copies_differ_only_in_their_steps():
    for defense in (AntiAdversary(steps=4), Dent(steps=6)):
        assert defense.for_attack(2) == dataclasses.replace(defense, steps=2)
        assert defense.for_attack(None) is defense and defense.for_attack(99) == defense
    assert TTE().for_attack(1) == TTE()     # deterministic and cheap: the attack meets the defense itself


def test_each_declares_its_randomness_and_its_cost():
    assert not any(d.randomized for d in (AntiAdversary(), TTE(), Dent()))
    assert AntiAdversary(steps=2).passes().forward == 3 and AntiAdversary(steps=2).passes().backward == 2
    assert TTE().passes().forward == 9 and TTE(flip=False, flip_crops=False, crops=2).passes().forward == 2
    assert Dent(steps=6).passes().backward == 6


@pytest.mark.shared
def test_the_adaptive_suite_takes_dent_to_at_most_its_transfer_worst_case(tmp_path):
    """DENT needs BatchNorm, so on the CIFAR-10 (JPEG) PreActResNet-18 rather than the digits model."""
    from conftest import harness_cli, shared_file
    from harness.analysis.aggregate import WORST_ADAPTIVE, WORST_TRANSFER, per_example, worst_columns
    from harness.storage.store import Store

    grid = tmp_path / "grid.toml"
    grid.write_text(f"""
dataset = {{ plugin = "cifar10-jpeg", root = "{shared_file('data/cifar10-jpeg/test.npz').parent}" }}
n_examples = 10
norm = "Linf"
eps = "8/255"
seed = 0
batch_size = 10
device = "cpu"
db = "{tmp_path / 'results.sqlite'}"
models = [{{ plugin = "checkpoint", label = "fastat40", arch = "robustbench:cifar10:Linf:Wong2020Fast", path = "{shared_file('models/cifar10-jpeg/fastat40.pt')}" }}]
attacks = [
    {{ plugin = "pgd", steps = 3 }},
    {{ plugin = "adaptive-suite", label = "suite", n_iter = 3, n_target_classes = 1, pgd_steps = 3, eot = 1, defense_steps_in_attack = 1, full_gradient_steps = 1, algorithm6_steps = 1 }},
]
defenses = [{{ plugin = "none" }}, {{ plugin = "dent", steps = 2 }}]
""")
    harness_cli("run", "--grid", str(grid), "--quiet")
    store = Store(str(tmp_path / "results.sqlite"), readonly=True)
    run = store.run()
    columns = worst_columns(run)
    frames = {key: per_example(store, run.run_id, columns[key]).set_index(["defense", "repeat", "idx"]).correct
              for key in (WORST_TRANSFER, WORST_ADAPTIVE)}
    suite = per_example(store, run.run_id, [a for a in run.labels("attacks") if a.startswith("suite: ")])
    suite = suite.set_index(["defense", "repeat", "idx"]).correct
    assert (frames[WORST_ADAPTIVE].loc["dent"] == (frames[WORST_TRANSFER].loc["dent"] & suite.loc["dent"])).all()
    assert suite.loc["dent"].mean() <= frames[WORST_TRANSFER].loc["dent"].mean()
