"""A grid becomes keyed work units. A unit's key hashes everything that determines its rows."""

from __future__ import annotations

import json
from dataclasses import dataclass

from harness.api.interfaces import Attack, Defense, Passes
from harness.grid.config import Entry, GridConfig, identity_hash


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
        defended = f"through {self.defenses[0].named}" if self.adaptive else "on the bare model"
        return f"{self.model.label} × {self.attack.named} {defended} × r{self.repeat}"

    @property
    def stream(self) -> str:
        """The unit's place in the grid, which seeds its random draws (with the grid's seed and the batch).

        Not the key: runs that differ only in precision, a file's bytes or a plugin's parameters draw the
        same noise (common random numbers), so that comparing them example by example isolates the change.
        The rungs of a budget ladder share their base entry's stream for the same reason."""
        defenses = [d.label for d in self.defenses] if self.adaptive else []
        attack = self.attack.ladder[0] if self.attack.ladder else self.attack.label
        return json.dumps([self.model.label, attack, defenses, self.repeat])


def plan(grid: GridConfig) -> list[Unit]:
    units = []
    for model in grid.models:
        for attack in grid.attacks:
            adaptive = attack.built.adaptive
            groups = [(d,) for d in grid.defenses] if adaptive else [grid.defenses]
            for repeat in range(grid.repeats):
                for defenses in groups:
                    key = identity_hash(grid.unit_identity(model, attack, defenses, repeat))[:16]
                    units.append(Unit(key, model, attack, defenses, repeat, adaptive))
    return units


def unit_cost(unit: Unit, grid: GridConfig) -> Passes:
    """Forward/backward passes of the whole unit: the attack once, then each defense's scored prediction."""
    attack: Attack = unit.attack.built
    threat = grid.threat_for(unit.attack)
    defenses: list[Defense] = [entry.built for entry in unit.defenses]
    votes = grid.votes_for(unit.adaptive)
    total = attack.defended_cost(threat, defenses[0], votes) if unit.adaptive else attack.passes(threat)
    for defense in defenses:
        total = total + (defense.passes() + Passes(1, 0)) * defense.draws(votes)
    return total * grid.n_examples
