"""The GPU settings, made to work on the CPU first: channels_last on 3-channel data for every attack plugin, and
torch.compile (the aot_eager backend) through the attacks that keep a graph or take subsets."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from harness.api.interfaces import AttackOutput, AttackSuite
from harness.api.specs import Kind
from harness.api.threat import Norm, ThreatModel
from harness.run.checks import check_attack_output
from harness.run.defended import Defended
from harness.run.precision import Compute
from harness_plugins.attacks.adaptive import Adaptive
from harness_plugins.attacks.autoattack_bridge import APGD
from harness_plugins.attacks.deepfool import DeepFool
from harness_plugins.defenses.hedge import Hedge

LINF = ThreatModel(Norm.LINF, 8 / 255)
HEDGE = Hedge(steps=2)
# Every attack plugin at a budget small enough for the CPU; a plugin added without a line here fails the test
# below, so that each new attack is checked under channels_last too.
BUDGETS = {
    "adaptive": {"n_iter": 3, "n_target_classes": 2, "eot": 1, "defense_steps_in_attack": 1},
    "adaptive-suite": {"n_iter": 3, "n_target_classes": 2, "pgd_steps": 3, "eot": 1, "defense_steps_in_attack": 1,
                       "full_gradient_steps": 1, "algorithm6_steps": 2},
    "apgd-ce": {"n_iter": 3}, "apgd-t": {"n_iter": 3, "n_target_classes": 2}, "autoattack": {"version": "standard"},
    "bpda-pgd": {"steps": 3, "eot": 1, "defense_steps_in_attack": 1}, "clean": {}, "cw": {"steps": 3},
    "daa-black": {"n_queries": 30}, "daa-white": {"steps": 2, "inner": 2}, "deepfool": {"steps": 5},
    "fab-t": {"n_iter": 3, "n_target_classes": 2}, "hedge-aware": {"steps": 2, "hedge_steps": 2}, "pgd": {"steps": 3},
    "rays": {"n_queries": 40}, "reverse-hedge": {"steps": 3}, "square": {"n_queries": 30},
    "torchattacks": {"name": "PGD", "kwargs": {"steps": 3}},
}


def _attacks(registry):
    for name in registry.ids(Kind.ATTACK):
        assert name in BUDGETS, f"attack plugin {name!r} has no budget in tests/test_layout.py"
        attack = registry.get(Kind.ATTACK, name).factory(**BUDGETS[name])
        members = attack.members() if isinstance(attack, AttackSuite) else [(name, attack)]
        for label, member in members:
            yield f"{name}: {label}", member


def test_every_attack_plugin_runs_on_3_channel_data_under_channels_last(registry, cifar, cifar_standard):
    model = Compute(channels_last=True).prepare_model(cifar_standard)
    assert next(cifar_standard.parameters()).is_contiguous()            # the caller's model is left as it was
    x, y = cifar.x[:4], cifar.y[:4]
    for name, attack in _attacks(registry):
        generator = torch.Generator().manual_seed(0)
        if attack.adaptive:
            defended = Defended(model, HEDGE, torch.Generator().manual_seed(1), votes=3)
            out = attack.attack_defended(defended, x, y, LINF, generator=generator)
        else:
            out = attack(model, x, y, LINF, generator=generator)
        check_attack_output(name, out.x_adv if isinstance(out, AttackOutput) else out, x, LINF)


@pytest.fixture(scope="module")
def compiled(cifar_standard):
    import torch._dynamo

    torch._dynamo.reset()
    return Compute(compile=True, backend="aot_eager").prepare_model(cifar_standard)


@pytest.mark.parametrize("name", ["deepfool", "apgd", "adaptive-full-gradient-hedge"])
def test_compiled_models_keep_graphs_for_second_backwards_and_do_not_recompile_per_subset(name, compiled, cifar):
    """DeepFool keeps its graph for one backward per class, APGD attacks shrinking subsets, the full gradient
    through Hedge differentiates a graph that took gradients inside it: each compiles a small fixed number of
    graphs, not one per batch size, and none fails on a donated buffer."""
    from torch._dynamo.utils import counters

    x, y = cifar.x[:12], cifar.y[:12]
    generator = torch.Generator().manual_seed(0)
    counters.clear()
    if name == "deepfool":
        out = DeepFool(steps=5)(compiled, x, y, LINF, generator=generator)
    elif name == "apgd":
        out = APGD(n_iter=5)(compiled, x, y, LINF, generator=generator)
    else:
        attack = Adaptive(loss="ce", gradient="full", n_iter=3, defense_steps_in_attack=2, eot=1)
        out = attack.attack_defended(Defended(compiled, HEDGE, torch.Generator().manual_seed(1)), x, y, LINF,
                                     generator=generator)
    check_attack_output(name, out, x, LINF)
    assert counters["stats"]["unique_graphs"] <= 3, dict(counters["stats"])


def test_a_compilation_failure_is_one_error_naming_compile(cifar_standard, cifar):
    from harness.api.errors import HarnessError

    def failing_backend(graph, example_inputs):
        raise RuntimeError("no kernel for this operator")

    with pytest.raises(HarnessError, match=r"compile = true: torch.compile could not compile the model.*compile = false"):
        dataclasses.replace(Compute(compile=True), backend=failing_backend).prepare_model(cifar_standard)(cifar.x[:2])
    with pytest.raises(HarnessError, match=r"compile = true: .*no-such-backend"):
        dataclasses.replace(Compute(compile=True), backend="no-such-backend").prepare_model(cifar_standard)


def test_a_channels_last_grid_on_3_channel_data_runs_library_attacks_end_to_end(tmp_path, registry):
    """The runner's own path: data loaded, models prepared, pyautoattack's APGD-T and Square and the adaptive
    attack (whose library loop flattens with .view) on CIFAR-10 (JPEG) under channels_last = true."""
    from conftest import shared_file
    from harness.grid.reader import load_grid
    from harness.run.runner import run_grid
    from harness.storage.store import Store

    grid_file = tmp_path / "grid.toml"
    grid_file.write_text(f"""
dataset = {{ plugin = "cifar10-jpeg", root = "{shared_file('data/cifar10-jpeg/test.npz').parent}" }}
n_examples = 4
eps = "8/255"
batch_size = 4
device = "cpu"
votes = 3
save_examples = 0
channels_last = true
db = "{tmp_path / 'out.sqlite'}"
models = [{{ plugin = "checkpoint", label = "standard", arch = "robustbench:cifar10:Linf:Wong2020Fast", path = "{shared_file('models/cifar10-jpeg/standard.pt')}" }}]
attacks = [{{ plugin = "apgd-t", n_iter = 2, n_target_classes = 2 }}, {{ plugin = "square", n_queries = 20 }},
           {{ plugin = "adaptive", n_iter = 2, n_target_classes = 2, eot = 1, defense_steps_in_attack = 1 }}]
defenses = [{{ plugin = "none" }}, {{ plugin = "hedge", steps = 2 }}]
""")
    grid = load_grid(grid_file, registry)
    with Store(grid.db) as store:
        run_grid(grid, store=store, progress=False)
        assert store.units(grid.run_id).finished.all() and len(store.results(grid.run_id)) == 4 * (2 * 3 + 2)
