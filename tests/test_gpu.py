"""CUDA checks, for a machine with a GPU: python3 -m pytest -m gpu (CI, which has none, skips them)."""

from __future__ import annotations

import pytest
import torch

from attack_table import ATTACKS, EPS
from conftest import DIGITS_ROBUST, digits_grid
from harness.checks import check_attack_output
from harness.threat import Norm, ThreatModel

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
    from harness.config import load_grid
    from harness.runner import run_grid
    from harness.store import Store

    path = digits_grid(tmp_path, n=64, attacks='[[attacks]]\nplugin = "pgd"\n[[attacks]]\nplugin = "adaptive"\nn_iter = 5\n',
                       defenses='[[defenses]]\nplugin = "none"\n[[defenses]]\nplugin = "hedge"\neps_d = 0.1\n')
    path.write_text(path.read_text().replace('device = "cpu"', 'device = "cuda"'))
    grid = load_grid(path, registry)
    store = Store(grid.db)
    rows = store.results(run_grid(grid, registry, store=store, progress=False))
    assert len(rows) == 64 * 2 * 2 + 64 * 2   # clean and pgd × 2 defenses, adaptive × 1 defense each
    assert store.run(grid.run_id).device == torch.cuda.get_device_name()


@pytest.mark.parametrize("extra", ['precision = "tf32"', 'precision = "bf16"\nchannels_last = true',
                                   'precision = "bf16"\nchannels_last = true\ncompile = true'])
def test_lower_precision_grids_run_on_cuda_close_to_fp32(tmp_path, registry, extra):
    from harness.config import load_grid
    from harness.runner import run_grid
    from harness.store import Store

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
        run_grid(grid, registry, store=store, progress=False)
        accs.append(store.accuracy(grid.run_id).set_index(["defense", "attack"]).acc * 100)
    assert (accs[0] - accs[1]).abs().max() <= 2.0  # 400 examples: a few borderline flips at most
