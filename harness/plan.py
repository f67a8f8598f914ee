"""A grid becomes keyed work units. A unit's key hashes everything that determines its rows."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from harness.config import Entry, GridConfig
from harness.interfaces import Attack, Defense, Passes
from harness.registry import Registry
from harness.specs import Kind


@dataclass(frozen=True)
class Unit:
    """Adversarial examples of one (model, attack, repeat), evaluated under every defense in ``defenses``.

    A transfer attack (the paper's protocol) makes one unit for all defenses: its examples are
    generated once and reused. An adaptive attack (target = "defended") makes one unit per defense.
    """

    key: str
    model: Entry
    attack: Entry
    defenses: tuple[Entry, ...]
    repeat: int
    adaptive: bool

    def describe(self) -> str:
        defended = self.defenses[0].label if self.adaptive else "bare model"
        return f"{self.model.label} × {self.attack.label} [{defended}] × r{self.repeat}"


def build(registry: Registry, plugin: Entry, kind: Kind) -> Any:
    return registry.get(kind, plugin.plugin).factory(**plugin.kwargs())


def _key(grid: GridConfig, model: Entry, attack: Entry, defenses: tuple[Entry, ...], repeat: int) -> str:
    identity = {
        "dataset": grid.dataset.as_json(), "n": grid.n_examples, "norm": grid.threat.norm.value, "eps": grid.threat.eps,
        "model": model.as_json(), "attack": attack.as_json(), "defenses": [d.as_json() for d in defenses],
        "repeat": repeat, "seed": grid.seed, "batch_size": grid.batch_size, "votes": grid.votes,
        **({} if grid.compute.is_default else {"compute": grid.compute.as_json()}),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def plan(grid: GridConfig, registry: Registry) -> list[Unit]:
    units = []
    for model in grid.models:
        for attack in grid.attacks:
            adaptive = build(registry, attack, Kind.ATTACK).target == "defended"
            groups = [(d,) for d in grid.defenses] if adaptive else [grid.defenses]
            for repeat in range(grid.repeats):
                for defenses in groups:
                    units.append(Unit(_key(grid, model, attack, defenses, repeat), model, attack, defenses,
                                      repeat, adaptive))
    return units


def unit_cost(unit: Unit, grid: GridConfig, registry: Registry) -> Passes:
    """Forward/backward passes of the whole unit: the attack once, then each defense's prediction."""
    attack: Attack = build(registry, unit.attack, Kind.ATTACK)
    total = attack.passes(grid.threat_for(unit.attack))
    if unit.adaptive:  # the attack runs through the defense at every step
        defended: Defense = build(registry, unit.defenses[0], Kind.DEFENSE)
        defense_cost = attack.defense_in_attack(defended).passes()
        total = Passes(total.forward * (1 + defense_cost.forward), total.backward * (1 + defense_cost.forward))
        checks = defended.draws(grid.votes) * attack.scored_predictions(defended.randomized)  # upper bound: all examples
        total = total + (defended.passes() + Passes(1, 0)) * checks
    for entry in unit.defenses:
        defense: Defense = build(registry, entry, Kind.DEFENSE)
        total = total + (defense.passes() + Passes(1, 0)) * defense.draws(grid.votes)
    return total * grid.n_examples
