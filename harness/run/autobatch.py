"""``batch_size = "auto"``: the largest batch the device fits, from a short probe before the run starts.

Each model of the grid runs one forward and one input-gradient backward pass at a power-of-two batch, halved on
``torch.OutOfMemoryError`` until it fits; the grid takes the smallest over its models, halved once more, since
an attack keeps a few more tensors of the batch than the probe does (and the defended scoring halves its own
chunks if it still runs out). The resolved number is part of the run's identity, like a written one: batches
draw their own random numbers, so another batch size is another run, and a device that fits a different batch
starts its own run instead of mixing rows. On a CPU, memory is not the limit: "auto" is 128 there (and under
``--executor ray`` the driver decides, before the workers start: write a number for a cluster of GPU workers).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import nn

from harness.api.errors import HarnessError
from harness.grid.config import AUTO_BATCH_ON_CPU, GridConfig

Probe = Callable[[int], None]   # runs a batch of that many rows; raises torch.OutOfMemoryError where it does not fit


def largest_batch(probe: Probe, upper: int, *, name: str = "the model") -> int:
    """The largest power of two up to ``upper`` that ``probe`` runs without running out of memory."""
    n = 1 << (max(upper, 1).bit_length() - 1)
    while True:
        try:
            probe(n)
            return n
        except torch.OutOfMemoryError:
            if n == 1:
                raise HarnessError(f"{name} does not fit on the device even one example at a time; use a smaller "
                                   "model, precision = \"bf16\", or a device with more memory") from None
            n //= 2
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def gradient_probe(model: nn.Module, shape: tuple[int, ...], device: torch.device) -> Probe:
    """One forward and one input-gradient backward pass of ``model`` on a batch of random images of ``shape``, in
    fp32 (what a bf16 grid then fits is at least this)."""
    def probe(n: int) -> None:
        x = torch.rand((n, *shape), device=device, requires_grad=True)
        (grad,) = torch.autograd.grad(model(x).logsumexp(dim=1).sum(), x)
        del grad

    return probe


def resolve_batch_size(grid: GridConfig, device: torch.device | None = None) -> GridConfig:
    """The grid with ``batch_size = "auto"`` made a number (the grid itself where it gave one), probed on ``device``
    (default: the grid's)."""
    if not grid.batch_size_auto or grid.device_type == "cpu":
        return grid
    from harness.run.runner import Runner

    runner = Runner(grid, store=None, progress=False, device=device)
    shape = tuple(runner.load_data().x.shape[1:])
    fits = []
    for index, entry in enumerate(grid.models):
        model = runner.load_model(index, eager=True).module
        fits.append(largest_batch(gradient_probe(model, shape, runner.device), grid.n_examples, name=entry.label))
    return dataclasses.replace(grid, batch_size=max(min(fits) // 2, 1))


__all__ = ["AUTO_BATCH_ON_CPU", "gradient_probe", "largest_batch", "resolve_batch_size"]
