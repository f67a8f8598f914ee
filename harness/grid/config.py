"""Grid files (TOML): parsing and validation before any work starts.

Every error names the file, the key and the allowed values. Nothing in a grid file is executed:
values are plain TOML data, and ``eps = "8/255"`` is parsed as a fraction, never evaluated. Every
entry's plugin is built and checked here (e.g. a torchattacks class name and its keywords), and the
files its models and data are read from are hashed into the grid's identity.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import unicodedata
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from harness.api.code_identity import CodeIdentity
from harness.api.errors import ConfigError, HarnessError, PluginError
from harness.api.interfaces import AttackSuite, Plugin, Role
from harness.api.registry import Registry, suggest
from harness.api.specs import Kind, PluginSpec
from harness.api.threat import Norm, ThreatModel
from harness.grid.fingerprint import contents
from harness.grid.naming import named
from harness.grid.presets import HONEST, PRESETS, Preset
from harness.grid.reported import Reported, parse_reported
from harness.grid.values import coerce, integer, label, radius
from harness.run.precision import Compute, Precision
from harness.storage.records import ROWS_VERSION

TOP_KEYS = ("dataset", "n_examples", "norm", "eps", "models", "attacks", "defenses", "repeats", "seed", "threads",
            "batch_size", "device", "db", "votes", "save_examples", "precision", "channels_last", "compile", "preset",
            "lipschitz", "reported")
DEVICES = ("cpu", "cuda", "auto")
MAX_VOTES = 1001   # beyond this a vote costs more than it tells
MAX_REPEATS = 1000
DEFAULT_SAVED = 8    # examples saved as images per unit (Figure 2c)


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
    display: str | None = field(default=None, compare=False)
    # the plugin object, built once when the grid was read (a frozen dataclass of the parameters above); the
    # loader, the planner and the evaluator use it rather than build it again
    built: Any = field(default=None, compare=False, repr=False)

    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def named(self) -> str:
        """As messages name it: the table's name, with the label in brackets where they differ."""
        return named(self.label, self.plugin, self.display)

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
    device_kind: str = "cpu"   # what the rows are computed on: CPU and CUDA draw different random numbers
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
                "device": self.resumed_from or self.device_kind,
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


def _read(path: str | Path) -> tuple[str, dict[str, Any]]:
    file = str(path)
    if Path(path).exists() and not Path(path).is_file() and not Path(path).is_dir():  # a FIFO would block forever
        raise ConfigError(file, "(file)", "not a regular file (a pipe, socket or device); pass the grid's TOML file")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(file, "(file)", "file not found; pass an existing grid with --grid") from None
    except IsADirectoryError:
        raise ConfigError(file, "(file)", "is a directory; pass the grid's TOML file with --grid") from None
    except UnicodeDecodeError:
        raise ConfigError(file, "(file)", "not a text file (it is not UTF-8); pass the grid's TOML file") from None
    except OSError as exc:
        raise ConfigError(file, "(file)", f"cannot be read: {exc.strerror}") from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "(syntax)", f"not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(file, "(syntax)", "arrays or tables are nested too deeply to be a grid") from None


def _entry(raw: Any, kind: Kind, registry: Registry, file: str, key: str, threat: ThreatModel,
           preset: Preset) -> Entry:
    if isinstance(raw, str):
        raw = {"plugin": raw}
    if not isinstance(raw, dict):
        raise ConfigError(file, key, f"expected a table such as {{plugin = \"...\"}}, got {raw!r}")
    if "plugin" not in raw:
        raise ConfigError(file, f"{key}.plugin", "missing; every entry names its plugin",
                          ", ".join(registry.names(kind)))
    name = raw["plugin"]
    if not isinstance(name, str):
        raise ConfigError(file, f"{key}.plugin", f"expected a plugin name (a string), got {name!r}",
                          ", ".join(registry.names(kind)))
    try:
        spec = registry.get(kind, name)
    except PluginError:
        raise ConfigError(file, f"{key}.plugin", f"unknown {kind.value} plugin {name!r}"
                          f"{suggest(str(name), registry.names(kind))}", ", ".join(registry.names(kind))) from None
    # default label: the value of the parameter the plugin names for it (a RobustBench ID, a torchattacks class)
    named_by = spec.declared("label_param")
    shown = label(raw.get("label", raw[named_by] if named_by and isinstance(raw.get(named_by), str) else name),
                  file, f"{key}.label")
    eps = None
    if kind is Kind.ATTACK and "eps" in raw:  # reserved: the attack's own radius, for ε sweeps (Figure 3)
        eps = preset.radius(radius(raw["eps"], threat.norm, file, f"{key}.eps"))
    reserved = ("plugin", "label", "eps", "ladder") if kind is Kind.ATTACK else ("plugin", "label")
    params = _params(spec, {k: v for k, v in raw.items() if k not in reserved}, file, key)
    preset_params = dict(_checked_presets(spec).get(preset.name, {}))   # what the entry sets itself wins
    params = tuple(sorted({**preset_params, **dict(params)}.items()))
    entry = Entry(plugin=name, label=shown, params=params, eps=eps, code=spec.code)
    plugin = _check(spec, entry, file, key, threat if eps is None else ThreatModel(threat.norm, eps))
    return replace(entry, display=plugin.shown_name() if isinstance(plugin, Plugin) else None, built=plugin)


def _checked_presets(spec: PluginSpec) -> dict[str, Any]:
    """A plugin's declared presets, each naming a preset that exists and setting only its parameters: a typo
    there would otherwise be ignored, and the preset would silently not be the released setting."""
    presets = dict(spec.declared("presets", {}))
    names = {p.name for p in spec.params}
    for name, values in presets.items():
        if name not in PRESETS:
            raise PluginError(f"{spec.kind.value} plugin {spec.name!r} from {spec.distribution} declares a preset "
                              f"{name!r}; the presets are {', '.join(sorted(PRESETS))}")
        unknown = sorted(set(values) - names)
        if unknown:
            raise PluginError(f"{spec.kind.value} plugin {spec.name!r} from {spec.distribution}: its {name!r} preset sets "
                              f"{', '.join(unknown)}, which it has no parameter of; its parameters are "
                              f"{', '.join(sorted(names)) or '(none)'}")
    return presets


def _check(spec: PluginSpec, entry: Entry, file: str, key: str, threat: ThreatModel) -> Any:
    """Build the plugin with the entry's parameters and run its own checks, before any work starts."""
    try:
        plugin = spec.factory(**entry.kwargs())
        plugin.check()
        if spec.kind is Kind.ATTACK:
            plugin.check_threat(threat)
        return plugin
    except HarnessError as exc:
        raise ConfigError(file, key, str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(file, key, f"plugin {spec.name!r} rejected its parameters: {exc}") from None


def _params(spec: PluginSpec, given: dict[str, Any], file: str, key: str) -> tuple[tuple[str, Any], ...]:
    out = []
    names = [p.name for p in spec.params]
    open_param = spec.declared("open_param")
    if open_param is not None:  # e.g. a bridge: the keys it does not declare go to its open parameter
        extra = {k: v for k, v in given.items() if k not in names}
        given = {k: v for k, v in given.items() if k in names}
        if extra:
            given[open_param] = {**(given.get(open_param) or {}), **extra}
    for name, value in given.items():
        param = spec.param(name)
        if param is None:
            raise ConfigError(file, f"{key}.{name}", f"plugin {spec.name!r} has no parameter {name!r}{suggest(name, names)}",
                              ", ".join(names) or "(none)")
        out.append((name, coerce(value, param, file, f"{key}.{name}")))
    for param in spec.params:
        if param.required and param.name not in given:
            raise ConfigError(file, f"{key}.{param.name}", f"plugin {spec.name!r} needs this parameter: {param.help}")
    return tuple(sorted(out))


def _entries(raw: dict, key: str, kind: Kind, registry: Registry, file: str, threat: ThreatModel,
             preset: Preset) -> tuple[Entry, ...]:
    items = raw.get(key)
    if items is None:
        raise ConfigError(file, key, f"missing; list at least one {kind.value}", f"[[{key}]] tables naming one of: "
                          + ", ".join(registry.names(kind)))
    if not isinstance(items, list) or not items:
        raise ConfigError(file, key, f"expected a non-empty list of {kind.value} tables, got {items!r}")
    entries = tuple(e for i, item in enumerate(items)
                    for e in _expand(_entry(item, kind, registry, file, f"{key}[{i}]", threat, preset), item, kind, registry,
                                     file, f"{key}[{i}]"))
    _distinct(entries, key, file)
    return entries


def _distinct(entries: tuple[Entry, ...], key: str, file: str, added: str = "", shift: int = 0) -> None:
    """Labels key the rows, so no two entries may share one, nor two that Unicode shows alike (NFKC)."""
    seen: dict[str, str] = {}
    for i, entry in enumerate(entries):
        folded = unicodedata.normalize("NFKC", entry.label)
        if folded in seen:
            same = "the label" if seen[folded] == entry.label else f"a label that reads as {seen[folded]!r}:"
            raise ConfigError(file, f"{key}[{i - shift}].label", f"two {key} share {same} {entry.label!r}{added}; give each "
                              "a distinct label = \"...\"")
        seen[folded] = entry.label


def _expand(entry: Entry, raw: Any, kind: Kind, registry: Registry, file: str, key: str) -> list[Entry]:
    """A suite becomes one entry per member; ``ladder = k`` becomes k rungs of doubling budget (1×, 2×, 4×, …)."""
    if kind is not Kind.ATTACK:
        return [entry]
    built = registry.get(kind, entry.plugin).factory(**entry.kwargs())
    attacks = [(entry.label, built)]
    if isinstance(built, AttackSuite):
        attacks = [(f"{entry.label}: {name}", member) for name, member in built.members()]
    rungs = integer(raw, "ladder", 1, file, 1, 8) if isinstance(raw, dict) else 1
    out = []
    for shown, attack in attacks:
        for rung in range(rungs):
            factor = 2 ** rung
            try:
                scaled = attack.scaled(factor) if factor > 1 else attack
            except HarnessError as exc:
                raise ConfigError(file, f"{key}.ladder", str(exc)) from None
            spec = registry.spec_of(kind, type(scaled))
            out.append(Entry(plugin=spec.name, label=shown if factor == 1 else f"{shown} ×{factor}",
                             params=entry.params if scaled is built else _params_of(scaled), eps=entry.eps,
                             suite=entry.label if isinstance(built, AttackSuite) else None,
                             ladder=(shown, factor) if rungs > 1 else None, code=spec.code,
                             display=scaled.shown_name(), built=scaled))
    return out


def _params_of(plugin: Any) -> tuple[tuple[str, Any], ...]:
    """A built plugin's parameters, as an entry holds them."""
    return tuple(sorted((f.name, getattr(plugin, f.name)) for f in dataclasses.fields(plugin) if f.init))


def _with_role(registry: Registry, kind: Kind, role: Role, file: str, key: str) -> PluginSpec:
    """The one installed plugin that plays a role the grid needs (the clean baseline, the reference defense)."""
    specs = registry.with_role(kind, role)
    if len(specs) != 1:
        found = ", ".join(f"{s.name!r} ({s.distribution})" for s in specs) or "no such plugin"
        raise ConfigError(file, key, f"the grid needs exactly one installed {kind.value} plugin with role "
                          f"{role.value!r} to use by default; found {found}",
                          f"list the one to use under [[{kind.plural}]]")
    return specs[0]


def _device(raw: dict, file: str, remote_workers: bool = False) -> str:
    device = raw.get("device", "auto")
    if device not in DEVICES:
        raise ConfigError(file, "device", f"{device!r} is not a device", ", ".join(DEVICES))
    import torch

    if device == "cuda" and not remote_workers and not torch.cuda.is_available():
        raise ConfigError(file, "device", "'cuda' was asked for but torch sees no GPU here", "cpu, auto")
    return device


def _resumed_from(kind: str | None, here: str, file: str) -> str | None:
    if kind is None or kind == here:
        return None
    if kind not in ("cpu", "cuda"):
        raise ConfigError(file, "(--resume-from-device)", f"{kind!r} is not a kind of device", "cpu, cuda")
    return kind


AUTO_BATCH_ON_CPU = 128   # batch_size = "auto" on a CPU: memory is not what limits it there


def _batch_size(raw: dict, file: str) -> int:
    if raw.get("batch_size") == "auto":
        return AUTO_BATCH_ON_CPU
    try:
        return integer(raw, "batch_size", 128, file, 1)
    except ConfigError as exc:
        raise ConfigError(file, "batch_size", f"expected an integer >= 1 or \"auto\", got {raw['batch_size']!r}",
                          "an integer >= 1, or \"auto\" (the largest batch the GPU fits)") from exc


def device_kind(device: str) -> str:
    """What "auto" means on this machine: cuda where torch sees a GPU, else cpu."""
    import torch

    return "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"


def _flag(raw: dict, key: str, file: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(file, key, f"expected true or false, got {value!r}", "true, false")
    return value


def _compute(raw: dict, file: str) -> Compute:
    precision = raw.get("precision", "fp32")
    allowed = [p.value for p in Precision]
    if precision not in allowed:
        raise ConfigError(file, "precision", f"{precision!r} is not a precision{suggest(str(precision), allowed)}",
                          ", ".join(allowed))
    return Compute(Precision(precision), **{key: _flag(raw, key, file) for key in ("channels_last", "compile")})


def _votes(raw: dict, file: str, preset: Preset) -> int:
    votes = integer(raw, "votes", preset.votes, file, 1, MAX_VOTES)
    if votes % 2 == 0:
        raise ConfigError(file, "votes", f"{votes} is even: a tied majority would go to the lowest class index",
                          f"an odd number from 1 to {MAX_VOTES}")
    return votes


def _with_contents(entry: Entry, spec: PluginSpec, files: Any) -> Entry:
    """The entry with the sha256 of the files its plugin reads; a file not there yet is "missing"."""
    try:
        paths = files(entry.built if entry.built is not None else spec.factory(**entry.kwargs()))
    except HarnessError:
        paths = []  # e.g. no data folder configured: loading it reports that, with the fix
    return replace(entry, contents=contents(paths))


def _preset(raw: dict, file: str, override: str | None) -> Preset:
    name = override or raw.get("preset", HONEST.name)
    if not isinstance(name, str) or name not in PRESETS:
        key = "preset" if override is None else "(--preset)"
        raise ConfigError(file, key, f"{name!r} is not a preset{suggest(str(name), list(PRESETS))}", ", ".join(PRESETS))
    return PRESETS[name]


def _with_model_dir(raw: dict, model_dir: str | None, registry: Registry) -> dict:
    """``--model-dir``: the weights folder of every model entry whose plugin reads one (a ``model_dir`` parameter)."""
    if model_dir is None or not isinstance(raw.get("models"), list):
        return raw
    models = []
    for item in raw["models"]:
        item = {"plugin": item} if isinstance(item, str) else item
        if isinstance(item, dict) and isinstance(item.get("plugin"), str) and item["plugin"] in registry.names(Kind.MODEL) \
                and registry.get(Kind.MODEL, item["plugin"]).param("model_dir") is not None:
            item = {**item, "model_dir": model_dir}
        models.append(item)
    return {**raw, "models": models}


def _select(entries: tuple[Entry, ...], labels: tuple[str, ...], file: str, option: str,
            keep: tuple[Entry, ...] = ()) -> tuple[Entry, ...]:
    """Only the entries with these labels (in grid order), plus ``keep``; an unknown label is named."""
    if not labels:
        return entries
    known = [e.label for e in entries]
    for wanted in labels:
        if wanted not in known:
            raise ConfigError(file, option, f"the grid has no entry labelled {wanted!r}{suggest(wanted, known)}",
                              ", ".join(known))
    return tuple(e for e in entries if e.label in labels or e in keep)


def load_grid(path: str | Path, registry: Registry, *, overrides: Overrides | None = None,
              db_override: str | None = None, n_override: int | None = None) -> GridConfig:
    over = overrides or Overrides(db=db_override, n_examples=n_override)
    file = str(path)
    text, raw = _read(path)
    for key in raw:
        if key not in TOP_KEYS:
            raise ConfigError(file, key, f"unknown key{suggest(key, list(TOP_KEYS))}", ", ".join(TOP_KEYS))
    preset = _preset(raw, file, over.preset)
    norm_text = raw.get("norm", "Linf")
    if norm_text not in [n.value for n in Norm]:
        raise ConfigError(file, "norm", f"{norm_text!r} is not a norm{suggest(str(norm_text), [n.value for n in Norm])}",
                          ", ".join(n.value for n in Norm))
    norm = Norm(norm_text)
    if "dataset" not in raw and over.dataset is None:
        raise ConfigError(file, "dataset", "missing", ", ".join(registry.names(Kind.DATASET)))
    n_examples = over.n_examples or integer(raw, "n_examples", None, file, 1)
    if "eps" not in raw:
        raise ConfigError(file, "eps", "missing; the radius of the threat model", "a number >= 0, e.g. \"8/255\"")
    threat = ThreatModel(norm, preset.radius(radius(raw["eps"], norm, file, "eps")))
    dataset_raw = over.dataset if over.dataset is not None else raw["dataset"]
    dataset = _entry(dataset_raw, Kind.DATASET, registry, file, "dataset" if over.dataset is None else "(--dataset)",
                     threat, preset)
    dataset = _with_contents(dataset, registry.get(Kind.DATASET, dataset.plugin), lambda d: d.source_files(n_examples))
    attacks = _entries(raw, "attacks", Kind.ATTACK, registry, file, threat, preset) if "attacks" in raw else ()
    baselines = tuple(a for a in attacks if registry.get(Kind.ATTACK, a.plugin).declared("role") is Role.BASELINE)
    if not baselines:
        baseline = _with_role(registry, Kind.ATTACK, Role.BASELINE, file, "attacks")
        built = baseline.factory()
        baselines = (Entry(plugin=baseline.name, label=baseline.name, code=baseline.code,
                           display=built.shown_name(), built=built),)
        attacks = baselines + attacks  # clean accuracy, always evaluated
        _distinct(attacks, "attacks", file, added=f" (the clean baseline, {baseline.name!r}, is added to every grid "
                  "under that label)", shift=1)
    every_attack = [a.label for a in attacks]
    attacks = _select(attacks, over.attacks, file, "(--attacks)", keep=baselines)
    if "defenses" in raw:
        defenses = _entries(raw, "defenses", Kind.DEFENSE, registry, file, threat, preset)
    else:
        reference = _with_role(registry, Kind.DEFENSE, Role.REFERENCE, file, "defenses")
        defenses = (_entry(reference.name, Kind.DEFENSE, registry, file, "defenses", threat, preset),)
    every_defense = [d.label for d in defenses]
    defenses = _select(defenses, over.defenses, file, "(--defenses)")
    every_model = _entries(_with_model_dir(raw, over.model_dir, registry), "models", Kind.MODEL, registry, file, threat,
                           preset)
    models = _select(every_model, over.models, file, "(--models)")
    reported = parse_reported(raw.get("reported"), file, [m.label for m in every_model], every_attack, every_defense,
                              ([m.label for m in models], [a.label for a in attacks], [d.label for d in defenses]))
    models = tuple(_with_contents(m, registry.get(Kind.MODEL, m.plugin), lambda source: source.source_files())
                   for m in models)
    device = _device(raw, file, over.remote_workers)
    db = over.db or raw.get("db", "results.sqlite")
    if not isinstance(db, str) or not db:
        raise ConfigError(file, "db", f"expected a file path, got {db!r}", "a path such as \"results/run.sqlite\"")
    return GridConfig(
        path=file, dataset=dataset, n_examples=n_examples, threat=threat, models=models,
        attacks=attacks, defenses=defenses, repeats=integer(raw, "repeats", 1, file, 1, MAX_REPEATS),
        seed=integer(raw, "seed", 0, file, 0), batch_size=_batch_size(raw, file), batch_size_auto=raw.get("batch_size") == "auto",
        device=device, device_kind=device_kind(device), db=db, votes=_votes(raw, file, preset),
        adaptive_votes=None if "votes" in raw or preset.votes == HONEST.votes else HONEST.votes,
        resumed_from=_resumed_from(over.resume_from_device, device_kind(device), file),
        save_examples=integer(raw, "save_examples", DEFAULT_SAVED, file, 0), compute=_compute(raw, file), preset=preset,
        lipschitz=_flag(raw, "lipschitz", file), reported=reported, text=text,
        threads=over.threads or (integer(raw, "threads", 1, file, 1, 1024) if "threads" in raw else None),
    )
