"""The numbers a paper reports for a grid's cells, carried in the grid's ``[reported]`` table.

They are recorded in the run (not in its identity: they change no row) so that a report can set the
measured accuracies beside them::

    [reported]
    source = "Wu et al., Table 5"         # where the numbers come from
    measured_on = "CIFAR-10"              # the data they were measured on (the report compares it to the run's)

    [reported.accuracy.Wong2020Fast]      # model label → defense label → attack label (or "worst case") → %
    none = { clean = 83.34, pgd = 47.57, "worst case" = 43.71 }
    hedge = { clean = 81.76, pgd = 52.31 }

"worst case" is the paper's worst case: over the attacks generated against the bare model (the transfer
worst case where a grid has adaptive attacks). ``[reported.notes]`` (model label → text) says what a model's
reported values are when they are not its own measurements (e.g. a row the paper printed twice); such a model
is described by its note and not compared.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from harness.api.errors import ConfigError
from harness.api.registry import suggest

REPORTED_WORST = "worst case"
KEYS = ("source", "measured_on", "accuracy", "notes")


@dataclass(frozen=True)
class ReportedValue:
    model: str
    defense: str
    attack: str        # an attack label, or REPORTED_WORST
    accuracy: float    # %


@dataclass(frozen=True)
class Reported:
    source: str
    measured_on: str
    values: tuple[ReportedValue, ...]
    notes: tuple[tuple[str, str], ...] = ()     # (model label, what its reported values are)

    def as_json(self) -> str:
        return json.dumps({"source": self.source, "measured_on": self.measured_on,
                           "values": [[v.model, v.defense, v.attack, v.accuracy] for v in self.values],
                           "notes": [list(n) for n in self.notes]})

    @classmethod
    def from_json(cls, text: str) -> Reported:
        data = json.loads(text)
        return cls(data["source"], data["measured_on"], tuple(ReportedValue(*v) for v in data["values"]),
                   tuple(tuple(n) for n in data.get("notes", [])))


def _label(value: Any, known: list[str], file: str, key: str, what: str) -> str:
    if value not in known:
        raise ConfigError(file, key, f"the grid has no {what} labelled {value!r}{suggest(str(value), known)}",
                          ", ".join(known))
    return value


def parse_reported(raw: Any, file: str, models: list[str], attacks: list[str], defenses: list[str],
                   kept: tuple[list[str], list[str], list[str]]) -> Reported | None:
    """The ``[reported]`` table, checked against every label of the grid file. Values of the models, attacks
    and defenses a command line left out (``kept``: the labels that stay) are dropped, and so is the reported
    worst case once attacks are left out: it was taken over all of them."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(file, "reported", f"expected a table, got {raw!r}", "[reported] with source, measured_on, accuracy")
    for key in raw:
        if key not in KEYS:
            raise ConfigError(file, f"reported.{key}", f"unknown key{suggest(key, list(KEYS))}", ", ".join(KEYS))
    for key in ("source", "measured_on"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise ConfigError(file, f"reported.{key}", "missing or empty",
                              "a string, e.g. source = \"Wu et al., Table 5\", measured_on = \"CIFAR-10\"")
    accuracy = raw.get("accuracy", {})
    if not isinstance(accuracy, dict):
        raise ConfigError(file, "reported.accuracy", f"expected a table, got {accuracy!r}",
                          "[reported.accuracy.MODEL] with DEFENSE = { ATTACK = % }")
    values = []
    for model, by_defense in accuracy.items():
        where = f"reported.accuracy.{model}"
        _label(model, models, file, where, "model")
        if not isinstance(by_defense, dict):
            raise ConfigError(file, where, f"expected a table, got {by_defense!r}", "DEFENSE = { ATTACK = % }")
        for defense, by_attack in by_defense.items():
            _label(defense, defenses, file, f"{where}.{defense}", "defense")
            if not isinstance(by_attack, dict):
                raise ConfigError(file, f"{where}.{defense}", f"expected a table, got {by_attack!r}", "{ ATTACK = % }")
            for attack, value in by_attack.items():
                key = f"{where}.{defense}.{attack}"
                _label(attack, attacks + [REPORTED_WORST], file, key, "attack")
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                        or not 0 <= value <= 100:
                    raise ConfigError(file, key, f"expected an accuracy in % (0 to 100), got {value!r}", "e.g. 47.57")
                if model in kept[0] and defense in kept[2] and attack in kept[1] + (
                        [REPORTED_WORST] if kept[1] == attacks else []):
                    values.append(ReportedValue(model, defense, attack, float(value)))
    notes = raw.get("notes", {})
    if not isinstance(notes, dict):
        raise ConfigError(file, "reported.notes", f"expected a table, got {notes!r}", "MODEL = \"what its values are\"")
    for model, note in notes.items():
        _label(model, models, file, f"reported.notes.{model}", "model")
        if not isinstance(note, str) or not note.strip():
            raise ConfigError(file, f"reported.notes.{model}", f"expected a sentence, got {note!r}", "a string")
    return Reported(raw["source"].strip(), raw["measured_on"].strip(), tuple(values),
                    tuple((m, n.strip()) for m, n in notes.items() if m in kept[0]))
