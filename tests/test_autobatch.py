"""batch_size = "auto": the probe that finds the largest batch a device fits, shown on the CPU with a model that runs
out of memory above a set number of rows, as a full GPU does."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from conftest import digits_grid, harness_cli
from harness.api.errors import ConfigError, HarnessError
from harness.grid.reader import load_grid
from harness.run.autobatch import gradient_probe, largest_batch, resolve_batch_size


class FitsUpTo(nn.Module):
    def __init__(self, model: nn.Module, limit: int):
        super().__init__()
        self.model, self.limit, self.tried = model, limit, []

    def forward(self, x):
        self.tried.append(len(x))
        if len(x) > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory: {len(x)} rows")
        return self.model(x)


@pytest.mark.parametrize("limit, upper, expected", [(37, 1000, 32), (512, 1000, 512), (1000, 300, 256), (1, 64, 1)])
def test_the_probe_finds_the_largest_power_of_two_that_fits(digits_robust, limit, upper, expected):
    model = FitsUpTo(digits_robust, limit)
    assert largest_batch(gradient_probe(model, (1, 8, 8), torch.device("cpu")), upper) == expected
    assert model.tried[-1] == expected and all(n > limit for n in model.tried[:-1])


def test_a_model_that_fits_no_batch_is_one_clear_error(digits_robust):
    with pytest.raises(HarnessError, match="robust does not fit on the device even one example"):
        largest_batch(gradient_probe(FitsUpTo(digits_robust, 0), (1, 8, 8), torch.device("cpu")), 64, name="robust")


def test_auto_resolves_to_a_number_in_the_identity(tmp_path, registry, monkeypatch):
    path = digits_grid(tmp_path, n=60)
    path.write_text(path.read_text().replace("batch_size = 20", 'batch_size = "auto"'))
    grid = load_grid(path, registry)
    assert grid.batch_size_auto and grid.batch_size == 128 and resolve_batch_size(grid) is grid  # CPU
    # on a GPU the probe decides, taking the smallest fit over the models, halved for the attacks' own tensors
    monkeypatch.setattr("harness.run.autobatch.largest_batch", lambda probe, upper, name="": 32)
    on_gpu = resolve_batch_size(dataclasses.replace(grid, device_type="cuda"), device=torch.device("cpu"))
    assert on_gpu.batch_size == 16 and on_gpu.run_id != grid.run_id
    written = load_grid(digits_grid(tmp_path, n=60, batch_size=16), registry)
    assert dataclasses.replace(written, device_type="cuda").run_id == on_gpu.run_id   # the same run as writing 16


def test_a_batch_size_that_is_neither_a_number_nor_auto_is_named(tmp_path, registry):
    path = digits_grid(tmp_path, n=60)
    path.write_text(path.read_text().replace("batch_size = 20", 'batch_size = "big"'))
    with pytest.raises(ConfigError, match="batch_size.*\"auto\""):
        load_grid(path, registry)


def test_a_run_with_auto_says_what_it_chose(tmp_path):
    path = digits_grid(tmp_path, n=20)
    path.write_text(path.read_text().replace("batch_size = 20", 'batch_size = "auto"'))
    done = harness_cli("run", "--grid", str(path))
    assert 'batch_size = "auto": 128 on cpu' in done.stderr
