"""CUDA checks, for a machine with a GPU: python3 -m pytest -m gpu (CI, which has none, skips them)."""

from __future__ import annotations

import pytest
import torch
from attack_table import ATTACKS, EPS

from conftest import DIGITS_ROBUST, digits_grid
from harness.api.threat import Norm, ThreatModel
from harness.run.checks import check_attack_output

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("name,make,norm,on_cifar", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_every_attack_runs_batched_on_cuda(name, make, norm, on_cifar, digits):
    from harness_plugins.models.checkpoint import Checkpoint

    device = torch.device("cuda")
    model = Checkpoint(arch="small-cnn", path=str(DIGITS_ROBUST), dataset="digits", in_channels=1).load(device).module
    x, y = digits.x[:64].to(device), digits.y[:64].to(device)
    threat = ThreatModel(Norm(norm), EPS[("digits", norm)])
    out = make()(model, x, y, threat, generator=torch.Generator(device=device).manual_seed(0))
    x_adv = getattr(out, "x_adv", out)
    assert x_adv.device.type == "cuda"
    check_attack_output(name, x_adv, x, threat)
    with torch.no_grad():
        assert (model(x_adv).argmax(1) == y).float().mean() < (model(x).argmax(1) == y).float().mean()


def test_grid_runs_on_cuda(tmp_path, registry):
    from harness.grid.reader import load_grid
    from harness.run.runner import run_grid
    from harness.storage.store import Store

    path = digits_grid(tmp_path, n=64, attacks='[[attacks]]\nplugin = "pgd"\n[[attacks]]\nplugin = "adaptive"\nn_iter = 5\n',
                       defenses='[[defenses]]\nplugin = "none"\n[[defenses]]\nplugin = "hedge"\neps_d = 0.1\n')
    path.write_text(path.read_text().replace('device = "cpu"', 'device = "cuda"'))
    grid = load_grid(path, registry)
    store = Store(grid.db)
    rows = store.results(run_grid(grid, store=store, progress=False))
    assert len(rows) == 64 * 2 * 2 + 64 * 2   # clean and pgd × 2 defenses, adaptive × 1 defense each
    assert store.run(grid.run_id).device == torch.cuda.get_device_name()


@pytest.mark.parametrize("extra", ['precision = "tf32"', 'precision = "bf16"\nchannels_last = true',
                                   'precision = "bf16"\nchannels_last = true\ncompile = true'])
def test_lower_precision_grids_run_on_cuda_close_to_fp32(tmp_path, registry, extra):
    from harness.grid.reader import load_grid
    from harness.run.runner import run_grid
    from harness.storage.store import Store

    accs = []
    for name, setting in (("fp32", ""), ("other", extra)):
        (tmp_path / name).mkdir()
        path = digits_grid(tmp_path / name, n=400, batch_size=200, extra=setting,
                           attacks='[[attacks]]\nplugin = "pgd"\nstep_size = 0.025\n',
                           defenses='[[defenses]]\nplugin = "none"\n[[defenses]]\nplugin = "hedge"\neps_d = 0.1\n'
                                    'step_size = 0.025\n')
        path.write_text(path.read_text().replace('device = "cpu"', 'device = "cuda"'))
        grid = load_grid(path, registry)
        store = Store(grid.db)
        run_grid(grid, store=store, progress=False)
        accs.append(store.accuracy(grid.run_id).set_index(["defense", "attack"]).acc * 100)
    assert (accs[0] - accs[1]).abs().max() <= 2.0  # 400 examples: a few borderline flips at most


GPU_SETTING = 'precision = "bf16"\nchannels_last = true\ncompile = true'


def _cuda_cifar_standard():
    from conftest import shared_file
    from harness_plugins.models.checkpoint import Checkpoint

    path = shared_file("models/cifar10-jpeg/standard.pt")
    module = Checkpoint(arch="robustbench:cifar10:Linf:Wong2020Fast", path=str(path)).load(torch.device("cuda")).module
    return module.eval().requires_grad_(False)


def test_every_attack_and_defense_plugin_runs_on_a_3_channel_model_in_bf16_channels_last_compiled(registry, cifar):
    from test_layout import HEDGE, _attacks

    from harness.api.interfaces import AttackOutput
    from harness.api.specs import Kind
    from harness.run.defended import Defended, predict_defended
    from harness.run.precision import Compute, Precision

    device = torch.device("cuda")
    setting = Compute(Precision.BF16, channels_last=True, compile=True)
    model = setting.prepare_model(_cuda_cifar_standard())
    x, y = cifar.x[:16].to(device), cifar.y[:16].to(device)
    threat = ThreatModel(Norm.LINF, 8 / 255)
    with setting.context(device):
        for name, attack in _attacks(registry):
            generator = torch.Generator(device=device).manual_seed(0)
            if attack.adaptive:
                defended = Defended(model, HEDGE, torch.Generator(device=device).manual_seed(1), votes=3)
                out = attack.attack_defended(defended, x, y, threat, generator=generator)
            else:
                out = attack(model, x, y, threat, generator=generator)
            check_attack_output(name, out.x_adv if isinstance(out, AttackOutput) else out, x, threat)
        for name in registry.ids(Kind.DEFENSE):
            defense = registry.get(Kind.DEFENSE, name).factory()
            scored = predict_defended(model, defense, x, 3, lambda d: torch.Generator(device=device).manual_seed(d),
                                      name=name, num_classes=10)
            assert scored.pred.device.type == "cuda" and scored.pred.shape == (16,)


def test_a_split_run_on_cuda_gives_the_rows_of_one_pass(tmp_path, registry):
    """Resume equality on the GPU: the examples evaluated as two batch-aligned ranges (a resumed unit) give the
    rows of one pass (cuDNN runs its deterministic algorithms under the harness)."""
    from harness.grid.reader import load_grid
    from harness.run.runner import Runner

    path = digits_grid(tmp_path, n=64, batch_size=16, attacks='[[attacks]]\nplugin = "pgd"\n',
                       defenses='[[defenses]]\nplugin = "random"\neps_d = 0.1\n[[defenses]]\nplugin = "hedge"\n'
                                'eps_d = 0.1\n')
    path.write_text(path.read_text().replace('device = "cpu"', 'device = "cuda"'))
    grid = load_grid(path, registry)
    runner = Runner(grid, progress=False)
    data, units = runner.prepare()
    loaded = runner.load_model(0)

    def rows(first: int, last: int) -> list[tuple]:
        return [(r.unit_key, r.defense, r.idx, r.pred, r.vote_frac) for unit in units
                for batch in runner.batches(unit, loaded, data, first, last) for r in batch.records["results"]]

    assert rows(0, 64) == rows(0, 32) + rows(32, 64)


def test_one_ray_shard_on_the_gpu_gives_the_local_rows(tmp_path, registry):
    ray = pytest.importorskip("ray")
    from harness.grid.reader import load_grid
    from harness.run.ray_executor import run_with_ray
    from harness.run.runner import run_grid
    from harness.storage.store import Store

    def grid_in(folder):
        folder.mkdir()
        path = digits_grid(folder, n=32, batch_size=16, attacks='[[attacks]]\nplugin = "pgd"\n')
        path.write_text(path.read_text().replace('device = "cpu"', 'device = "cuda"'))
        return load_grid(path, registry)

    local, sharded = grid_in(tmp_path / "local"), grid_in(tmp_path / "ray")
    with Store(local.db) as store:
        expected = store.results(run_grid(local, store=store, progress=False))
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        with Store(sharded.db) as store:
            got = store.results(run_with_ray(sharded, store, shard_size=16, progress=False))
    finally:
        ray.shutdown()
    columns = ["unit_key", "defense", "idx", "pred", "correct"]
    assert got[columns].sort_values(columns).values.tolist() == expected[columns].sort_values(columns).values.tolist()
