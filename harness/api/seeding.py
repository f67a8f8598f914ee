"""Reproducible randomness: every batch draws from its own generator, seeded from what it is.

Seeding per (run seed, unit, batch start, purpose) rather than carrying one generator through a
unit makes a resumed unit draw exactly what an uninterrupted one would have drawn, and any split of
a unit into batch-aligned ranges (Ray shards) draw what one pass would.
"""

from __future__ import annotations

import hashlib

import torch


def generator_for(seed: int, *parts: object, device: torch.device) -> torch.Generator:
    digest = hashlib.sha256(":".join(map(str, (seed, *parts))).encode()).digest()
    generator = torch.Generator(device=device)
    generator.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return generator
