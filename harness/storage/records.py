"""The rows the harness stores, declared once. The store derives its tables from these dataclasses.

A database carries SQLite's ``application_id`` (this is ours) and ``user_version`` (the schema
version of these records); the store refuses a file that is not ours or of another version.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from typing import Any

from harness.grid.naming import named, table_name

SCHEMA_VERSION = 6
# What the core computes for a row, in every unit's identity: raised whenever the runner's own part of a row
# changes (how draws are seeded, how a vote is decided), so that no unit mixes rows of two versions.
ROWS_VERSION = 2
# Older versions this one reads as they are and upgrades on the first write: it only added nullable columns
# (3: runs.reported; 4: the units' counted passes, floor and smallest chunk, results.draws; 5: units.reused_from;
# 6: units.messages). Their missing fields read as the dataclass defaults.
UPGRADES_FROM = (2, 3, 4, 5)
APPLICATION_ID = 0x52484152   # "RHAR": robustness-harness results


@dataclass(frozen=True)
class RunRecord:
    """One grid run: what it evaluated (its identity), with what, and how."""

    run_id: str
    config_path: str
    config_text: str
    identity: str            # JSON: everything that determines the rows
    plugins: str             # JSON: every entry with its resolved parameters and what its plugin declares
    dataset: str             # the dataset entry's label
    dataset_display: str     # e.g. "CIFAR-10 (JPEG)"
    dataset_caveat: str | None
    classes: str             # JSON list of class names
    n_examples: int
    norm: str
    eps: float
    repeats: int
    votes: int
    preset: str              # harness.grid.presets: "honest" or "paper"
    precision: str
    device: str
    harness_version: str
    harness_commit: str
    versions: str            # JSON: package → version
    started: float
    ended: float | None = None
    reported: str | None = None   # JSON (harness.grid.reported.Reported): a paper's numbers for the grid's cells

    def entries(self, kind: str) -> list[dict[str, Any]]:
        """The recorded entries of one kind ("attacks", "defenses", "models"), in grid order."""
        return json.loads(self.plugins)[kind]

    def labels(self, kind: str) -> list[str]:
        return [e["label"] for e in self.entries(kind)]

    @property
    def rows_per_cell(self) -> int:
        """The per-example rows a finished model × attack × defense cell holds: every example, every repeat."""
        return self.n_examples * self.repeats

    # --- what the recorded plugins declared, read here once (roles are harness.api.interfaces.Role values) ------
    def with_role(self, kind: str, role: str) -> list[str]:
        """Labels of the entries of ``kind`` whose plugins declared ``role``, in grid order."""
        return [e["label"] for e in self.entries(kind) if e.get("role") == role]

    @property
    def reference_defense(self) -> str | None:
        """The defense every other is compared with (no defense), if the grid has it."""
        return next(iter(self.with_role("defenses", "reference")), None)

    @property
    def test_time_defenses(self) -> list[str]:
        return [d["label"] for d in self.entries("defenses") if d.get("role") != "reference"]

    @property
    def baseline_attacks(self) -> list[str]:
        """The attack that leaves inputs alone (clean accuracy)."""
        return self.with_role("attacks", "baseline")

    @property
    def adaptive_attacks(self) -> list[str]:
        """The attacks that target each defense rather than the bare model."""
        return [a["label"] for a in self.entries("attacks") if a.get("adaptive")]

    def table_names(self) -> dict[str, str]:
        """Attack and defense label → the name tables print (harness.grid.naming)."""
        return {e["label"]: table_name(e["label"], e["plugin"], e.get("display_name"))
                for kind in ("attacks", "defenses") for e in self.entries(kind)}

    def named(self, label: str) -> str:
        """An attack or defense as messages name it: the table's name, the label in brackets where they differ."""
        for kind in ("attacks", "defenses"):
            for e in self.entries(kind):
                if e["label"] == label:
                    return named(e["label"], e["plugin"], e.get("display_name"))
        return label


@dataclass(frozen=True)
class UnitRecord:
    """A work unit and its progress: ``done`` examples (a prefix) are committed."""

    run_id: str
    unit_key: str
    model: str
    attack: str
    defenses: str            # JSON list of defense labels
    repeat: int
    adaptive: int
    total: int
    forward: float           # planned cost, in forward passes of one image
    backward: float
    done: int = 0
    finished: int = 0
    seconds: float = 0.0
    updated: float = 0.0
    counted_forward: float | None = None    # passes the unit made through the model, in images (harness.run.counting)
    counted_backward: float | None = None
    floor_forward: float | None = None      # what its attack's loop and its scored draws cannot avoid
    floor_backward: float | None = None
    smallest_chunk: int | None = None       # rows per defense draw where memory ran out at the batch size
    reused_from: str | None = None          # the run of this database whose identical unit (same key) it copied
    messages: str | None = None             # JSON list: what its plugins printed, once each (harness.run.chatter)


@dataclass(frozen=True)
class ExampleKey:
    """Which example of which unit under which defense a row is about."""

    run_id: str
    unit_key: str
    model: str
    attack: str
    defense: str
    repeat: int
    idx: int


@dataclass(frozen=True)
class ResultRow(ExampleKey):
    """One example of one unit under one defense: the runner's verdict."""

    adaptive: int
    label: int
    pred: int
    correct: int
    vote_frac: float         # share of the defense's draws that agree with the majority
    attack_s: float          # seconds per example
    defense_s: float
    linf: float
    l2: float
    queries: int | None = None
    grad_norm: float | None = None   # ‖∇ₓCE‖₁ at the clean input (baseline units only)
    draws: int | None = None         # draws the vote took: a randomised defense stops once its majority is certain


@dataclass(frozen=True)
class ExampleRow(ExampleKey):
    """A saved image triple (clean, adversarial, defended) of a unit's first examples (Figure 2c)."""

    label: int
    pred_adv: int
    pred_defended: int
    ssim_adv: float
    ssim_defended: float
    clean_png: bytes
    adv_png: bytes
    defended_png: bytes


@dataclass(frozen=True)
class GapRow(ExampleKey):
    """The local-Lipschitz gap of an example a defense flipped (the paper's Section 4.2.2, Figure 2b):
    L(false class) − L(true class) at the adversarial example, the false class being the wrong prediction on
    whichever side is wrong: the bare model's for FtoT, the defended one's for TtoF."""

    kind: str                # the flip, "FtoT" or "TtoF", against the reference defense (a recorded column)
    label: int
    false_class: int
    l_false: float
    l_true: float
    gap: float


@dataclass(frozen=True)
class ShardRecord:
    """An example range [start, stop) of a unit whose rows are committed, and which process computed it."""

    run_id: str
    unit_key: str
    start: int
    stop: int
    owner: str = ""


@dataclass(frozen=True)
class ClaimRecord:
    """A unit one process is computing. Another process takes it over only once the claim is stale: its
    process is gone (same host) or its heartbeat stopped."""

    run_id: str
    unit_key: str
    owner: str               # host:pid:random, unique per process
    host: str
    pid: int
    heartbeat: float


RESULT_KEY = ("run_id", "model", "attack", "defense", "repeat", "idx")   # unit_key follows from the rest
TABLES: dict[str, tuple[type, tuple[str, ...]]] = {
    "runs": (RunRecord, ("run_id",)),
    "units": (UnitRecord, ("run_id", "unit_key")),
    "results": (ResultRow, RESULT_KEY),
    "examples": (ExampleRow, RESULT_KEY),
    "gaps": (GapRow, RESULT_KEY),
    "shards": (ShardRecord, ("run_id", "unit_key", "start")),
    "claims": (ClaimRecord, ("run_id", "unit_key")),
}


def columns(record: type) -> dict[str, type]:
    """A record's fields as sqlite-utils column types (``X | None`` is a nullable X)."""
    hints = typing.get_type_hints(record)
    out = {}
    for f in dataclasses.fields(record):
        tp = hints[f.name]
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        out[f.name] = tp
    return out


def required_columns(record: type) -> list[str]:
    """The columns every schema version this harness reads has: upgrades only ever add nullable columns."""
    hints = typing.get_type_hints(record)
    return [f.name for f in dataclasses.fields(record)
            if typing.get_origin(hints[f.name]) not in (typing.Union, types.UnionType)]


def as_row(record: Any) -> dict[str, Any]:
    return dict(vars(record))


def from_row(record: type, row: dict[str, Any]) -> Any:
    """A record from a stored row; a column an older schema lacks takes the field's default."""
    return record(**{f.name: row[f.name] for f in dataclasses.fields(record) if f.name in row})
