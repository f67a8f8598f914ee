"""One batch of one work unit: what it is evaluated with, and what it yields."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from harness.api.interfaces import Attack, Defense, Passes
from harness.api.seeding import generator_for
from harness.api.threat import ThreatModel
from harness.grid.config import Entry
from harness.grid.plan import Unit
from harness.run.chatter import Chatter
from harness.run.defended import DrawRunner


@dataclass
class BatchContext:
    """Everything one batch of one unit is evaluated with."""

    run_id: str
    seed: int
    unit: Unit
    model: nn.Module
    attack: Attack
    defenses: list[tuple[Entry, Defense]]
    threat: ThreatModel
    start: int
    x: Tensor
    y: Tensor
    num_classes: int
    draws: DrawRunner          # runs the defenses' draws, in chunks that fit in memory
    chatter: Chatter = field(default_factory=Chatter)   # what its plugins print

    def generator(self, *purpose: object) -> torch.Generator:
        """This batch's own random stream for one purpose: a resumed unit draws what an uninterrupted one would."""
        return generator_for(self.seed, self.unit.stream, self.start, *purpose, device=self.x.device)


@dataclass
class Batch:
    """One evaluated batch of a unit: its records by table (``results``: one row per example and defense;
    what observers add, e.g. ``examples``, ``gaps``)."""

    start: int
    stop: int
    records: dict[str, list]
    seconds: float
    counted: Passes = Passes(0, 0)      # passes made through the model, in images
    floor: Passes = Passes(0, 0)        # the passes the attack's loop and the scored draws cannot avoid
    smallest_chunk: int | None = None   # rows per defense draw, where memory ran out at the batch's size
    messages: tuple[str, ...] = ()      # what its plugins printed
