"""A grid as the harness runs it: its entries, its settings, and the identity that keys its rows.

:mod:`harness.grid.reader` reads and checks a grid file into a :class:`GridConfig`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from harness.api.code_identity import CodeIdentity
from harness.api.threat import ThreatModel
from harness.grid.naming import named
from harness.grid.presets import HONEST, Preset
from harness.grid.reported import Reported
from harness.run.precision import Compute
from harness.storage.records import ROWS_VERSION

TOP_KEYS = ("dataset", "n_examples", "norm", "eps", "models", "attacks", "defenses", "repeats", "seed", "threads",
            "batch_size", "device", "db", "votes", "save_examples", "precision", "channels_last", "compile", "preset",
            "lipschitz", "reported")
DEVICES = ("cpu", "cuda", "auto")
MAX_VOTES = 1001   # beyond this a vote costs more than it tells
MAX_REPEATS = 1000
DEFAULT_SAVED = 8    # examples saved as images per unit (Figure 2c)
AUTO_BATCH_ON_CPU = 128   # batch_size = "auto" on a CPU: memory is not what limits it there


@dataclass(frozen=True)
class Entry:
    """One plugin as the grid names it: which plugin, its display label and its parameters."""

    plugin: str
    label: str
    params: tuple[tuple[str, Any], ...] = ()
    eps: float | None = None    # attacks only: a radius of their own (ε sweeps); None = the grid's
    contents: tuple[tuple[str, str], ...] = ()   # (file, sha256) of what it reads: models' weights, the data
    suite: str | None = None    # attacks only: the suite entry it came from
    ladder: tuple[str, int] | None = None   # attacks only: (the ladder's base label, this rung's budget factor)
    code: CodeIdentity | None = None    # its plugin's distribution, version and source digest
    # what its plugin declares tables call it (harness.grid.naming); how it is shown, so not part of its identity
    display_name: str | None = field(default=None, compare=False)
    # the plugin object, built once when the grid was read (a frozen dataclass of the parameters above); the
    # loader, the planner and the evaluator use it rather than build it again
    built: Any = field(default=None, compare=False, repr=False)

    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def named(self) -> str:
        """As messages name it: the table's name, with the label in brackets where they differ."""
        return named(self.label, self.plugin, self.display_name)

    def as_json(self) -> dict[str, Any]:
        out = {"plugin": self.plugin, "label": self.label, "params": dict(self.params), "eps": self.eps,
               "contents": dict(self.contents), "code": self.code.as_json() if self.code else None}
        # only where set: an entry that is neither from a suite nor a rung keeps the identity it always had
        if self.suite is not None:
            out["suite"] = self.suite
        if self.ladder is not None:
            out["ladder"] = list(self.ladder)
        return out


@dataclass(frozen=True)
class Overrides:
    """Changes to a grid from the command line that leave its file as it is: run part of a grid (the models
    one has checkpoints for, a few attacks), on other data, under another preset, into another database."""

    db: str | None = None
    n_examples: int | None = None
    preset: str | None = None
    dataset: str | None = None           # another dataset plugin, at its defaults (e.g. its root from the environment)
    models: tuple[str, ...] = ()         # keep only the entries with these labels (the clean baseline always stays)
    attacks: tuple[str, ...] = ()
    defenses: tuple[str, ...] = ()
    threads: int | None = None           # torch's CPU threads: how fast, not what is computed
    resume_from_device: str | None = None   # continue a run recorded on this other kind of device (cpu, cuda)
    model_dir: str | None = None         # the weights folder of every model plugin that reads one (model_dir)
    remote_workers: bool = False         # --executor ray: the workers compute, so this machine needs no GPU for "cuda"


@dataclass(frozen=True)
class GridConfig:
    path: str
    dataset: Entry
    n_examples: int
    threat: ThreatModel
    models: tuple[Entry, ...]
    attacks: tuple[Entry, ...]      # the clean baseline first, always
    defenses: tuple[Entry, ...]
    repeats: int
    seed: int
    batch_size: int
    device: str
    db: str
    votes: int
    save_examples: int = DEFAULT_SAVED
    compute: Compute = Compute()
    preset: Preset = HONEST
    lipschitz: bool = False    # record the local-Lipschitz gap of every flipped example (Figure 2b); costs gradients
    reported: Reported | None = field(default=None, compare=False)   # a paper's numbers; recorded, not identity
    text: str = field(default="", compare=False)
    # batch_size = "auto": the largest batch the device fits, found by harness.run.autobatch before the run starts
    # (the resolved number is in the identity); until then batch_size holds the CPU's choice
    batch_size_auto: bool = field(default=False, compare=False)
    device_type: str = "cpu"   # what the rows are computed on: CPU and CUDA draw different random numbers
    # a run recorded on another kind of device that this one continues, asked for explicitly (--resume-from-device)
    resumed_from: str | None = None
    # draws per prediction of a randomised defense in adaptive units: the honest majority even under the paper
    # preset, whose one draw is what its released code did for the transfer columns (None: as ``votes``)
    adaptive_votes: int | None = None

    def votes_for(self, adaptive: bool) -> int:
        """The draws a unit's randomised predictions vote over (and its adaptive attack checks with)."""
        return self.adaptive_votes if adaptive and self.adaptive_votes is not None else self.votes
    threads: int | None = field(default=None, compare=False)   # torch's CPU threads; None: torch's default

    def apply_threads(self) -> None:
        """Set torch's CPU thread count for this process (two runs sharing two cores each with two threads slow
        each other down far more than twice)."""
        if self.threads is not None:
            import torch

            torch.set_num_threads(self.threads)

    def __post_init__(self) -> None:
        self.run_id  # fixed now: nothing a plugin does to the objects it is handed later can move a row

    def _shared_identity(self) -> dict[str, Any]:
        """What every unit of the grid shares. A new grid key that changes results belongs here, once."""
        return {"dataset": self.dataset.as_json(), "n": self.n_examples, "norm": self.threat.norm.value,
                "eps": self.threat.eps, "seed": self.seed, "batch_size": self.batch_size, "votes": self.votes,
                "compute": self.compute.as_json(), "preset": self.preset.name,
                "device": self.resumed_from or self.device_type,
                "rows": ROWS_VERSION} | ({"adaptive_votes": self.adaptive_votes} if self.adaptive_votes else {})

    def identity(self) -> dict[str, Any]:
        """Everything that determines the run's rows (not where they are stored or on which device)."""
        return {**self._shared_identity(), "models": [m.as_json() for m in self.models],
                "attacks": [a.as_json() for a in self.attacks], "defenses": [d.as_json() for d in self.defenses],
                "repeats": self.repeats, "save_examples": self.save_examples, "lipschitz": self.lipschitz}

    def unit_identity(self, model: Entry, attack: Entry, defenses: tuple[Entry, ...], repeat: int) -> dict[str, Any]:
        """Everything that determines one work unit's rows: the grid's shared part and the unit's own entries. The
        saved examples and the Lipschitz gaps enter only where they differ from the defaults, so that units that
        always had the same rows keep their keys (runs of one database share finished units by key)."""
        extra = {"save_examples": self.save_examples} if self.save_examples != DEFAULT_SAVED else {}
        extra |= {"lipschitz": True} if self.lipschitz else {}
        return {**self._shared_identity(), "model": model.as_json(), "attack": attack.as_json(),
                "defenses": [d.as_json() for d in defenses], "repeat": repeat, **extra}

    def threat_for(self, attack: Entry) -> ThreatModel:
        """The threat model an attack entry is generated and checked under."""
        return self.threat if attack.eps is None else ThreatModel(self.threat.norm, attack.eps)

    @cached_property
    def run_id(self) -> str:
        return identity_hash(self.identity())[:12]


def identity_hash(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def device_type(device: str) -> str:
    """What "auto" means on this machine: cuda where torch sees a GPU, else cpu."""
    import torch

    return "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"


def __getattr__(name: str) -> Any:
    """``load_grid`` moved to :mod:`harness.grid.reader`; the old import works for one release, with a warning."""
    if name == "load_grid":
        import warnings

        from harness.grid.reader import load_grid

        warnings.warn("harness.grid.config.load_grid moved to harness.grid.reader.load_grid", DeprecationWarning,
                      stacklevel=2)
        return load_grid
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
