"""Reading a grid file (TOML) into a :class:`GridConfig`, with every check done before any work starts.

Every error names the file, the key and the allowed values. Nothing in a grid file is executed: values are plain
TOML data, and ``eps = "8/255"`` is parsed as a fraction, never evaluated. Every entry's plugin is built and checked
here (e.g. a torchattacks class name and its keywords), and the files its models and data are read from are hashed
into the grid's identity.
"""

from __future__ import annotations

import dataclasses
import tomllib
import unicodedata
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from harness.api.errors import ConfigError, HarnessError, PluginError
from harness.api.interfaces import AttackSuite, Plugin, Role
from harness.api.registry import Registry, suggest
from harness.api.specs import Kind, PluginSpec
from harness.api.threat import Norm, ThreatModel
from harness.grid.config import (
    AUTO_BATCH_ON_CPU,
    DEFAULT_SAVED,
    DEVICES,
    MAX_REPEATS,
    MAX_VOTES,
    TOP_KEYS,
    Entry,
    GridConfig,
    Overrides,
    device_type,
)
from harness.grid.fingerprint import contents
from harness.grid.presets import HONEST, PRESETS, Preset
from harness.grid.reported import parse_reported
from harness.grid.values import coerce, integer, label, radius
from harness.run.precision import Compute, Precision


def load_grid(path: str | Path, registry: Registry, *, overrides: Overrides | None = None,
              db_override: str | None = None, n_override: int | None = None) -> GridConfig:
    """The grid in ``path``, its plugins looked up in ``registry`` and built, with the command line's changes."""
    return GridReader(path, registry, overrides or Overrides(db=db_override, n_examples=n_override)).read()


class GridReader:
    """One grid file being read: the file every error names, the registry its plugins come from, the command
    line's overrides, and what the file's top keys fix for every entry (its preset and threat model)."""

    def __init__(self, path: str | Path, registry: Registry, overrides: Overrides):
        self.file, self.registry, self.over = str(path), registry, overrides
        self.text, self.raw = self._read(path)
        for key in self.raw:
            if key not in TOP_KEYS:
                raise self.error(key, f"unknown key{suggest(key, list(TOP_KEYS))}", ", ".join(TOP_KEYS))
        self.preset = self._preset()
        self.threat = self._threat()

    def error(self, key: str, problem: str, allowed: str | None = None) -> ConfigError:
        return ConfigError(self.file, key, problem, allowed)

    # --- the file and its top keys ---------------------------------------------------------------------------------
    def _read(self, path: str | Path) -> tuple[str, dict[str, Any]]:
        if Path(path).exists() and not Path(path).is_file() and not Path(path).is_dir():  # a FIFO would block forever
            raise self.error("(file)", "not a regular file (a pipe, socket or device); pass the grid's TOML file")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise self.error("(file)", "file not found; pass an existing grid with --grid") from None
        except IsADirectoryError:
            raise self.error("(file)", "is a directory; pass the grid's TOML file with --grid") from None
        except UnicodeDecodeError:
            raise self.error("(file)", "not a text file (it is not UTF-8); pass the grid's TOML file") from None
        except OSError as exc:
            raise self.error("(file)", f"cannot be read: {exc.strerror}") from None
        try:
            return text, tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise self.error("(syntax)", f"not valid TOML: {exc}") from None
        except RecursionError:
            raise self.error("(syntax)", "arrays or tables are nested too deeply to be a grid") from None

    def _preset(self) -> Preset:
        name = self.over.preset or self.raw.get("preset", HONEST.name)
        if not isinstance(name, str) or name not in PRESETS:
            key = "preset" if self.over.preset is None else "(--preset)"
            raise self.error(key, f"{name!r} is not a preset{suggest(str(name), list(PRESETS))}", ", ".join(PRESETS))
        return PRESETS[name]

    def _threat(self) -> ThreatModel:
        raw, norms = self.raw, [n.value for n in Norm]
        norm_text = raw.get("norm", "Linf")
        if norm_text not in norms:
            raise self.error("norm", f"{norm_text!r} is not a norm{suggest(str(norm_text), norms)}", ", ".join(norms))
        if "dataset" not in raw and self.over.dataset is None:
            raise self.error("dataset", "missing", ", ".join(self.registry.ids(Kind.DATASET)))
        if "eps" not in raw:
            raise self.error("eps", "missing; the radius of the threat model", "a number >= 0, e.g. \"8/255\"")
        norm = Norm(norm_text)
        return ThreatModel(norm, self.preset.radius(radius(raw["eps"], norm, self.file, "eps")))

    def integer(self, key: str, default: int | None, minimum: int, maximum: int | None = None) -> int:
        return integer(self.raw, key, default, self.file, minimum, maximum)

    def flag(self, key: str) -> bool:
        value = self.raw.get(key, False)
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {value!r}", "true, false")
        return value

    # --- the whole grid --------------------------------------------------------------------------------------------
    def read(self) -> GridConfig:
        raw, over = self.raw, self.over
        n_examples = over.n_examples or self.integer("n_examples", None, 1)
        dataset = self.entry(over.dataset if over.dataset is not None else raw["dataset"], Kind.DATASET,
                             "dataset" if over.dataset is None else "(--dataset)")
        dataset = self.with_contents(dataset, lambda d: d.source_files(n_examples))
        attacks, baselines = self.attacks()
        every_attack = [a.label for a in attacks]
        attacks = self.select(attacks, over.attacks, "(--attacks)", keep=baselines)
        if "defenses" in raw:
            defenses = self.entries(raw["defenses"], "defenses", Kind.DEFENSE)
        else:
            reference = self.with_role(Kind.DEFENSE, Role.REFERENCE, "defenses")
            defenses = (self.entry(reference.id, Kind.DEFENSE, "defenses"),)
        every_defense = [d.label for d in defenses]
        defenses = self.select(defenses, over.defenses, "(--defenses)")
        every_model = self.entries(self.models_with_model_dir(), "models", Kind.MODEL)
        models = self.select(every_model, over.models, "(--models)")
        reported = parse_reported(raw.get("reported"), self.file, [m.label for m in every_model], every_attack,
                                  every_defense, ([m.label for m in models], [a.label for a in attacks],
                                                  [d.label for d in defenses]))
        models = tuple(self.with_contents(m, lambda source: source.source_files()) for m in models)
        device = self.device()
        computes_on = device_type(device)
        db = over.db or raw.get("db", "results.sqlite")
        if not isinstance(db, str) or not db:
            raise self.error("db", f"expected a file path, got {db!r}", "a path such as \"results/run.sqlite\"")
        return GridConfig(
            path=self.file, dataset=dataset, n_examples=n_examples, threat=self.threat, models=models,
            attacks=attacks, defenses=defenses, repeats=self.integer("repeats", 1, 1, MAX_REPEATS),
            seed=self.integer("seed", 0, 0), batch_size=self.batch_size(), batch_size_auto=raw.get("batch_size") == "auto",
            device=device, device_type=computes_on, db=db, votes=self.votes(),
            adaptive_votes=None if "votes" in raw or self.preset.votes == HONEST.votes else HONEST.votes,
            resumed_from=self.resumed_from(computes_on),
            save_examples=self.integer("save_examples", DEFAULT_SAVED, 0), compute=self.compute(), preset=self.preset,
            lipschitz=self.flag("lipschitz"), reported=reported, text=self.text,
            threads=over.threads or (self.integer("threads", 1, 1, 1024) if "threads" in raw else None),
        )

    def attacks(self) -> tuple[tuple[Entry, ...], tuple[Entry, ...]]:
        """The grid's attacks with the clean baseline first (added where the grid does not list it), and the
        baseline entries."""
        attacks = self.entries(self.raw["attacks"], "attacks", Kind.ATTACK) if "attacks" in self.raw else ()
        baselines = tuple(a for a in attacks if isinstance(a.built, Plugin) and a.built.role is Role.BASELINE)
        if baselines:
            return attacks, baselines
        baseline = self.with_role(Kind.ATTACK, Role.BASELINE, "attacks")
        built = baseline.factory()
        baselines = (Entry(plugin=baseline.id, label=baseline.id, code=baseline.code,
                           display_name=built.display_name, built=built),)
        attacks = baselines + attacks  # clean accuracy, always evaluated
        self.distinct(attacks, "attacks", added=f" (the clean baseline, {baseline.id!r}, is added to every grid "
                      "under that label)", shift=1)
        return attacks, baselines

    # --- entries ---------------------------------------------------------------------------------------------------
    def entries(self, items: Any, key: str, kind: Kind) -> tuple[Entry, ...]:
        if items is None:
            raise self.error(key, f"missing; list at least one {kind.value}", f"[[{key}]] tables naming one of: "
                             + ", ".join(self.registry.ids(kind)))
        if not isinstance(items, list) or not items:
            raise self.error(key, f"expected a non-empty list of {kind.value} tables, got {items!r}")
        entries = tuple(e for i, item in enumerate(items)
                        for e in self.expand(self.entry(item, kind, f"{key}[{i}]"), item, kind, f"{key}[{i}]"))
        self.distinct(entries, key)
        return entries

    def entry(self, raw: Any, kind: Kind, key: str) -> Entry:
        """One ``[[attacks]]`` (or other) table: its plugin looked up, its parameters checked and the plugin built."""
        registry = self.registry
        if isinstance(raw, str):
            raw = {"plugin": raw}
        if not isinstance(raw, dict):
            raise self.error(key, f"expected a table such as {{plugin = \"...\"}}, got {raw!r}")
        if "plugin" not in raw:
            raise self.error(f"{key}.plugin", "missing; every entry names its plugin", ", ".join(registry.ids(kind)))
        plugin_id = raw["plugin"]
        if not isinstance(plugin_id, str):
            raise self.error(f"{key}.plugin", f"expected a plugin name (a string), got {plugin_id!r}",
                             ", ".join(registry.ids(kind)))
        try:
            spec = registry.get(kind, plugin_id)
        except PluginError:
            raise self.error(f"{key}.plugin", f"unknown {kind.value} plugin {plugin_id!r}"
                             f"{suggest(plugin_id, registry.ids(kind))}", ", ".join(registry.ids(kind))) from None
        # default label: the value of the parameter the plugin names for it (a RobustBench ID, a torchattacks class)
        named_by = spec.declared("label_param")
        entry_label = label(raw.get("label", raw[named_by] if named_by and isinstance(raw.get(named_by), str)
                                    else plugin_id), self.file, f"{key}.label")
        eps = None
        if kind is Kind.ATTACK and "eps" in raw:  # reserved: the attack's own radius, for ε sweeps (Figure 3)
            eps = self.preset.radius(radius(raw["eps"], self.threat.norm, self.file, f"{key}.eps"))
        reserved = ("plugin", "label", "eps", "ladder") if kind is Kind.ATTACK else ("plugin", "label")
        params = self.params(spec, {k: v for k, v in raw.items() if k not in reserved}, key)
        preset_params = dict(self.checked_presets(spec).get(self.preset.name, {}))   # what the entry sets itself wins
        params = tuple(sorted({**preset_params, **dict(params)}.items()))
        entry = Entry(plugin=plugin_id, label=entry_label, params=params, eps=eps, code=spec.code)
        plugin = self.built(spec, entry, key, self.threat if eps is None else ThreatModel(self.threat.norm, eps))
        return replace(entry, display_name=plugin.display_name if isinstance(plugin, Plugin) else None, built=plugin)

    def checked_presets(self, spec: PluginSpec) -> dict[str, Any]:
        """A plugin's declared presets, each naming a preset that exists and setting only its parameters: a typo
        there would otherwise be ignored, and the preset would silently not be the released setting."""
        presets = dict(spec.declared("presets", {}))
        names = {p.name for p in spec.params}
        for name, values in presets.items():
            if name not in PRESETS:
                raise PluginError(f"{spec.kind.value} plugin {spec.id!r} from {spec.distribution} declares a preset "
                                  f"{name!r}; the presets are {', '.join(sorted(PRESETS))}")
            unknown = sorted(set(values) - names)
            if unknown:
                raise PluginError(f"{spec.kind.value} plugin {spec.id!r} from {spec.distribution}: its {name!r} preset "
                                  f"sets {', '.join(unknown)}, which it has no parameter of; its parameters are "
                                  f"{', '.join(sorted(names)) or '(none)'}")
        return presets

    def built(self, spec: PluginSpec, entry: Entry, key: str, threat: ThreatModel) -> Any:
        """Build the plugin with the entry's parameters and run its own checks, before any work starts."""
        try:
            plugin = spec.factory(**entry.kwargs())
            plugin.check()
            if spec.kind is Kind.ATTACK:
                plugin.check_threat(threat)
            return plugin
        except HarnessError as exc:
            raise self.error(key, str(exc)) from None
        except (TypeError, ValueError) as exc:
            raise self.error(key, f"plugin {spec.id!r} rejected its parameters: {exc}") from None

    def params(self, spec: PluginSpec, given: dict[str, Any], key: str) -> tuple[tuple[str, Any], ...]:
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
                raise self.error(f"{key}.{name}", f"plugin {spec.id!r} has no parameter {name!r}{suggest(name, names)}",
                                 ", ".join(names) or "(none)")
            out.append((name, coerce(value, param, self.file, f"{key}.{name}")))
        for param in spec.params:
            if param.required and param.name not in given:
                raise self.error(f"{key}.{param.name}", f"plugin {spec.id!r} needs this parameter: {param.help}")
        return tuple(sorted(out))

    def distinct(self, entries: tuple[Entry, ...], key: str, added: str = "", shift: int = 0) -> None:
        """Labels key the rows, so no two entries may share one, nor two that Unicode shows alike (NFKC)."""
        seen: dict[str, str] = {}
        for i, entry in enumerate(entries):
            folded = unicodedata.normalize("NFKC", entry.label)
            if folded in seen:
                same = "the label" if seen[folded] == entry.label else f"a label that reads as {seen[folded]!r}:"
                raise self.error(f"{key}[{i - shift}].label", f"two {key} share {same} {entry.label!r}{added}; give "
                                 "each a distinct label = \"...\"")
            seen[folded] = entry.label

    def expand(self, entry: Entry, raw: Any, kind: Kind, key: str) -> list[Entry]:
        """A suite becomes one entry per member; ``ladder = k`` becomes k rungs of doubling budget (1×, 2×, 4×, …)."""
        if kind is not Kind.ATTACK:
            return [entry]
        built = entry.built
        attacks = [(entry.label, built)]
        if isinstance(built, AttackSuite):
            attacks = [(f"{entry.label}: {member_name}", member) for member_name, member in built.members()]
        rungs = integer(raw, "ladder", 1, self.file, 1, 8) if isinstance(raw, dict) else 1
        out = []
        for rung_label, attack in attacks:
            for rung in range(rungs):
                factor = 2 ** rung
                try:
                    scaled = attack.scaled(factor) if factor > 1 else attack
                except HarnessError as exc:
                    raise self.error(f"{key}.ladder", str(exc)) from None
                spec = self.registry.spec_of(kind, type(scaled))
                out.append(Entry(plugin=spec.id, label=rung_label if factor == 1 else f"{rung_label} ×{factor}",
                                 params=entry.params if scaled is built else _params_of(scaled), eps=entry.eps,
                                 suite=entry.label if isinstance(built, AttackSuite) else None,
                                 ladder=(rung_label, factor) if rungs > 1 else None, code=spec.code,
                                 display_name=scaled.display_name, built=scaled))
        return out

    def with_role(self, kind: Kind, role: Role, key: str) -> PluginSpec:
        """The one installed plugin that plays a role the grid needs (the clean baseline, the reference defense)."""
        specs = self.registry.with_role(kind, role)
        if len(specs) != 1:
            found = ", ".join(f"{s.id!r} ({s.distribution})" for s in specs) or "no such plugin"
            raise self.error(key, f"the grid needs exactly one installed {kind.value} plugin with role "
                             f"{role.value!r} to use by default; found {found}",
                             f"list the one to use under [[{kind.plural}]]")
        return specs[0]

    def with_contents(self, entry: Entry, files: Callable[[Any], Any]) -> Entry:
        """The entry with the sha256 of the files its plugin reads; a file not there yet is "missing"."""
        try:
            paths = files(entry.built)
        except HarnessError:
            paths = []  # e.g. no data folder configured: loading it reports that, with the fix
        return replace(entry, contents=contents(paths))

    def models_with_model_dir(self) -> Any:
        """The models' tables, with ``--model-dir`` as the weights folder of every entry whose plugin reads one (a
        ``model_dir`` parameter)."""
        items, model_dir, registry = self.raw.get("models"), self.over.model_dir, self.registry
        if model_dir is None or not isinstance(items, list):
            return items
        models = []
        for item in items:
            item = {"plugin": item} if isinstance(item, str) else item
            if isinstance(item, dict) and isinstance(item.get("plugin"), str) and \
                    item["plugin"] in registry.ids(Kind.MODEL) and \
                    registry.get(Kind.MODEL, item["plugin"]).param("model_dir") is not None:
                item = {**item, "model_dir": model_dir}
            models.append(item)
        return models

    def select(self, entries: tuple[Entry, ...], labels: tuple[str, ...], option: str,
               keep: tuple[Entry, ...] = ()) -> tuple[Entry, ...]:
        """Only the entries with these labels (in grid order), plus ``keep``; an unknown label is named."""
        if not labels:
            return entries
        known = [e.label for e in entries]
        for wanted in labels:
            if wanted not in known:
                raise self.error(option, f"the grid has no entry labelled {wanted!r}{suggest(wanted, known)}",
                                 ", ".join(known))
        return tuple(e for e in entries if e.label in labels or e in keep)

    # --- how it runs -----------------------------------------------------------------------------------------------
    def device(self) -> str:
        device = self.raw.get("device", "auto")
        if device not in DEVICES:
            raise self.error("device", f"{device!r} is not a device", ", ".join(DEVICES))
        import torch

        if device == "cuda" and not self.over.remote_workers and not torch.cuda.is_available():
            raise self.error("device", "'cuda' was asked for but torch sees no GPU here", "cpu, auto")
        return str(device)

    def resumed_from(self, here: str) -> str | None:
        other = self.over.resume_from_device
        if other is None or other == here:
            return None
        if other not in ("cpu", "cuda"):
            raise self.error("(--resume-from-device)", f"{other!r} is not a type of device", "cpu, cuda")
        return other

    def batch_size(self) -> int:
        if self.raw.get("batch_size") == "auto":
            return AUTO_BATCH_ON_CPU
        try:
            return self.integer("batch_size", 128, 1)
        except ConfigError as exc:
            raise self.error("batch_size", f"expected an integer >= 1 or \"auto\", got {self.raw['batch_size']!r}",
                             "an integer >= 1, or \"auto\" (the largest batch the GPU fits)") from exc

    def compute(self) -> Compute:
        precision = self.raw.get("precision", "fp32")
        allowed = [p.value for p in Precision]
        if precision not in allowed:
            raise self.error("precision", f"{precision!r} is not a precision{suggest(str(precision), allowed)}",
                             ", ".join(allowed))
        return Compute(Precision(precision), **{key: self.flag(key) for key in ("channels_last", "compile")})

    def votes(self) -> int:
        votes = self.integer("votes", self.preset.votes, 1, MAX_VOTES)
        if votes % 2 == 0:
            raise self.error("votes", f"{votes} is even: a tied majority would go to the lowest class index",
                             f"an odd number from 1 to {MAX_VOTES}")
        return votes


def _params_of(plugin: Any) -> tuple[tuple[str, Any], ...]:
    """A built plugin's parameters, as an entry holds them."""
    return tuple(sorted((f.name, getattr(plugin, f.name)) for f in dataclasses.fields(plugin) if f.init))
