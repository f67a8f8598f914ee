"""The grid's `precision`, `channels_last` and `compile` settings: parsed, applied, recorded, and close to fp32."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from conftest import digits_grid, none_and_hedge
from harness.api.errors import ConfigError
from harness.grid.reader import load_grid
from harness.run.precision import Compute, Precision
from harness.run.runner import run_grid
from harness.storage.store import Store

ATTACKS = """
[[attacks]]
plugin = "pgd"
steps = 10
step_size = 0.025
[[attacks]]
plugin = "cw"
steps = 10
step_size = 0.025
"""
DEFENSES = none_and_hedge(steps=4)


def test_precision_settings_parse_and_enter_the_run_identity(tmp_path, registry):
    plain = load_grid(digits_grid(tmp_path, attacks=ATTACKS), registry)
    assert plain.compute == Compute() and plain.identity()["compute"]["precision"] == "fp32"
    bf16 = load_grid(digits_grid(tmp_path, attacks=ATTACKS, extra='precision = "bf16"\nchannels_last = true'), registry)
    assert bf16.compute == Compute(Precision.BF16, channels_last=True)
    assert bf16.run_id != plain.run_id
    assert bf16.compute.describe() == "bf16+channels_last"
    # different units, the same random draws: the comparison isolates the arithmetic
    from harness.grid.plan import plan

    pairs = list(zip(plan(plain), plan(bf16)))
    assert all(a.key != b.key and a.stream == b.stream for a, b in pairs)


@pytest.mark.parametrize("extra,key,fragment", [
    ('precision = "fp16"', "precision", "'fp16' is not a precision; did you mean 'bf16', 'fp32'? Allowed: fp32, tf32, bf16"),
    ('channels_last = "yes"', "channels_last", "expected true or false"),
    ("compile = 1", "compile", "expected true or false"),
])
def test_bad_precision_settings_are_named(tmp_path, registry, extra, key, fragment):
    with pytest.raises(ConfigError) as err:
        load_grid(digits_grid(tmp_path, extra=extra), registry)
    assert f"key '{key}'" in str(err.value)
    assert fragment in str(err.value)


def test_context_switches_tf32_for_its_duration_only_and_autocasts_bf16(digits_robust, digits):
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with Compute(Precision.TF32).context(torch.device("cpu")):
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    with Compute(Precision.FP32).context(torch.device("cpu")):
        assert not torch.backends.cudnn.allow_tf32  # strict fp32: cuDNN's TF32 default is switched off
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    with Compute(Precision.BF16).context(torch.device("cpu")):
        assert digits_robust(digits.x[:4]).dtype == torch.bfloat16
    assert digits_robust(digits.x[:4]).dtype == torch.float32


# bf16 rounds every activation; on a robust model it flips the prediction of a few borderline examples, and
# Hedge's sign-gradient steps can carry a rounding difference into a different point. fp32 and bf16 runs
# draw the same random numbers (draws depend on where a unit sits in the grid, not on its precision), so
# the examples whose prediction changed are what the arithmetic changed. Measured on 200 digits images
# (x86-64, 2 threads): at most 1 per attack × defense cell. Tolerance: 3 % of the examples per cell, and
# none on the undefended clean inputs beyond 1 %.
CHANGED_TOLERANCE = 0.03
CLEAN_TOLERANCE = 0.01


# The attacks that leave their points at the decision boundary, where rounding could flip a verdict: RayS and
# DeepFool (minimum-norm), the clamped CW (it stops at the boundary) and Square (its margin comparisons).
BOUNDARY_ATTACKS = ATTACKS + """
[[attacks]]
plugin = "cw"
label = "cw-clamped"
steps = 10
step_size = 0.025
confidence = 0.0
[[attacks]]
plugin = "deepfool"
steps = 20
[[attacks]]
plugin = "rays"
n_queries = 300
[[attacks]]
plugin = "square"
n_queries = 300
"""


def test_bf16_channels_last_run_is_recorded_and_changes_few_predictions(tmp_path, registry):
    rows = {}
    for name, extra in (("fp32", ""), ("bf16", 'precision = "bf16"\nchannels_last = true')):
        (tmp_path / name).mkdir()
        grid = load_grid(digits_grid(tmp_path / name, attacks=BOUNDARY_ATTACKS, defenses=DEFENSES, extra=extra, n=200,
                                     batch_size=100), registry)
        store = Store(grid.db)
        run_grid(grid, store=store, progress=False)
        assert store.run().precision == grid.compute.describe()
        frame = store.results(grid.run_id)
        assert frame.linf.max() <= 0.1 + 1e-5  # projections stay in fp32: the ball holds under autocast
        rows[name] = frame.set_index(["attack", "defense", "repeat", "idx"]).sort_index()
    fp32, bf16 = rows["fp32"], rows["bf16"]
    assert (fp32.index == bf16.index).all() and (fp32.label == bf16.label).all()
    changed = (fp32.pred != bf16.pred).groupby(["attack", "defense"]).mean()
    assert (changed <= CHANGED_TOLERANCE).all(), changed
    assert changed.loc[("clean", "none")] <= CLEAN_TOLERANCE, changed


@pytest.mark.slow
def test_compiled_model_gives_the_fp32_numbers(tmp_path, registry):
    accs = []
    for name, extra in (("eager", ""), ("compiled", "compile = true")):
        (tmp_path / name).mkdir()
        grid = load_grid(digits_grid(tmp_path / name, attacks=ATTACKS.split("[[attacks]]\nplugin = \"cw\"")[0],
                                     extra=extra, n=40, batch_size=40), registry)
        store = Store(grid.db)
        run_grid(grid, store=store, progress=False)
        accs.append(store.accuracy(grid.run_id).set_index(["defense", "attack"]).acc)
    assert (accs[0] - accs[1]).abs().max() <= 0.05


def test_the_verdict_is_computed_in_fp32_whatever_the_precision(digits, digits_robust):
    """Under bf16 autocast the model's own logits are rounded; the scored prediction is not."""
    from harness.run.defended import predict_defended
    from harness_plugins.defenses.basic import NoDefense

    x = digits.x[:100]
    with torch.no_grad():
        exact = digits_robust(x).softmax(1)
    with Compute(Precision.BF16).context(torch.device("cpu")):
        scored = predict_defended(digits_robust, NoDefense(), x, 1, lambda d: torch.Generator().manual_seed(d))
        with torch.no_grad():
            rounded = digits_robust(x).float().softmax(1)
    assert torch.equal(scored.probabilities, exact) and not torch.equal(rounded, exact)


def test_attacks_that_stop_on_the_boundary_run_in_fp32_under_a_bf16_grid(tmp_path, registry):
    """A point on the decision boundary of the bf16 model is a coin flip for the fp32 verdict: RayS and DeepFool
    declare it (full_precision), and the runner runs them without autocast; the others keep the grid's precision."""
    import sys

    from harness.api.interfaces import Attack
    from harness.api.registry import Registry
    from harness.api.specs import Kind

    seen = {}

    @dataclass(frozen=True)
    class Probe(Attack, name="probe"):
        full_precision: ClassVar[bool] = True

        def __call__(self, model, x, y, threat, *, generator):
            seen["autocast"] = torch.is_autocast_enabled("cpu")
            seen["logits"] = model(x).dtype
            return x.clone()

    plus = Registry(extra_modules=(sys.modules[__name__],))   # this module, registered in code: Probe
    assert plus.skipped == []
    grid = load_grid(digits_grid(tmp_path, n=20, attacks='[[attacks]]\nplugin = "probe"\n',
                                 extra='precision = "bf16"'), plus)
    run_grid(grid, store=Store(grid.db), progress=False)
    assert seen == {"autocast": False, "logits": torch.float32}
    exact = {name for name in registry.ids(Kind.ATTACK) if registry.get(Kind.ATTACK, name).declared("full_precision")}
    assert {"rays", "deepfool"} <= exact and "pgd" not in exact
