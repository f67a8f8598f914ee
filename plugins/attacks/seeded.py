"""Run a library attack that seeds torch's global RNG, without leaking that into the caller."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


def seed_from(generator: torch.Generator) -> int:
    """A library seed drawn from the run's generator: reruns on the same device draw the same seed."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))


@contextlib.contextmanager
def isolated_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the global RNGs for a library call, and restore them afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
