"""What work costs, counted in passes of one image through the model (no torch here: the store reads it too)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Passes:
    """Cost per example, in forward and backward passes of the model (for --dry-run and estimates)."""

    forward: float
    backward: float

    def __add__(self, other: Passes) -> Passes:
        return Passes(self.forward + other.forward, self.backward + other.backward)

    def __mul__(self, k: float) -> Passes:
        return Passes(self.forward * k, self.backward * k)


def through_defense(attack: Passes, defense: Passes) -> Passes:
    """An attack's passes when every forward pass runs the defense first (backward: BPDA, the model only)."""
    return Passes(attack.forward * (1 + defense.forward), attack.backward + attack.forward * defense.backward)


def ratio(counted: Passes, floor: Passes) -> float:
    """How far a unit's counted passes lie above its floor: the larger of the forward and the backward ratio."""
    def one(made: float, needed: float) -> float:
        return made / needed if needed else (1.0 if not made else float("inf"))

    return max(one(counted.forward, floor.forward), one(counted.backward, floor.backward))
