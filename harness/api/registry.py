"""Plugin discovery through pluggy and the ``harness`` entry-point group."""

from __future__ import annotations

import difflib
import warnings
from importlib import metadata
from types import ModuleType

import pluggy

from harness.api import hookspecs
from harness.api.code_identity import code_identity
from harness.api.errors import PluginError
from harness.api.interfaces import Attack, DataSource, Defense, ModelSource
from harness.api.registration import declared_under
from harness.api.specs import Command, Kind, PluginSpec, spec_from_dataclass

# a registered class's kind is its base's
_KINDS = ((Attack, Kind.ATTACK), (Defense, Kind.DEFENSE), (ModelSource, Kind.MODEL), (DataSource, Kind.DATASET))
# the hooks plugin modules returned their specs from before classes registered themselves: still read, deprecated
_LEGACY_HOOKS = {
    Kind.ATTACK: "harness_attacks",
    Kind.DEFENSE: "harness_defenses",
    Kind.MODEL: "harness_models",
    Kind.DATASET: "harness_datasets",
}


class Registry:
    """Every discovered plugin, by kind and name. Two plugins with one name is an error.

    A plugin package that fails to import, or whose hook fails, is skipped, and ``skipped`` says which and why in
    one line each: the other plugins, and the commands that only read a database, keep working."""

    def __init__(self, extra_modules: tuple[ModuleType, ...] = (), entry_points: bool = True):
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._dists: dict[int, metadata.Distribution] = {}
        self._modules: list[tuple[ModuleType, metadata.Distribution | None, str, str]] = []  # with entry point
        self.skipped: list[str] = []
        if entry_points:
            self._load_entry_points()
        for module in extra_modules:
            self._pm.register(module)
            self._modules.append((module, None, module.__name__, module.__name__))
        self._specs: dict[Kind, dict[str, PluginSpec]] = {kind: {} for kind in Kind}
        self._commands: dict[str, Command] = {}
        self._collect()

    def _load_entry_points(self) -> None:
        """pluggy's ``load_setuptools_entrypoints``, one entry point at a time, so that one broken package is one
        line instead of a traceback from every command."""
        for dist in metadata.distributions():
            for ep in dist.entry_points:
                if ep.group != hookspecs.PROJECT or self._pm.get_plugin(ep.name) or self._pm.is_blocked(ep.name):
                    continue
                try:
                    plugin = ep.load()
                    self._pm.register(plugin, name=ep.name)
                except Exception as exc:  # noqa: BLE001 - whatever a third party's import raises, it is skipped
                    self._skip(dist, ep.name, ep.value, exc)
                    continue
                self._dists[id(plugin)] = dist
                self._modules.append((plugin, dist, ep.name, ep.value))

    def _skip(self, dist: metadata.Distribution | None, name: str, value: str, exc: BaseException) -> None:
        where = f"{dist.metadata['name']} {dist.version}" if dist is not None else "(registered in code)"
        detail = str(exc).splitlines()[0] if str(exc) else ""
        self.skipped.append(f"skipped plugin package {where}, entry point {name} = {value}: "
                            f"{type(exc).__name__}: {detail}")

    def _implementations(self, hook_name: str):
        """(hook implementation, what it returned); an implementation that raises is skipped with one line."""
        for impl in getattr(self._pm.hook, hook_name).get_hookimpls():
            try:
                yield impl, impl.function() or []
            except Exception as exc:  # noqa: BLE001 - a third party's hook
                self._skip(self._dists.get(id(impl.plugin)), impl.plugin_name, f"{hook_name}()", exc)

    def _collect(self) -> None:
        for module, installed, name, value in self._modules:
            try:
                declared = declared_under(module)
            except Exception as exc:  # noqa: BLE001 - a module inside a third party's package that fails to import
                self._skip(installed, name, value, exc)
                continue
            for cls, plugin_id in declared:
                self._add(spec_from_dataclass(cls, name=plugin_id, kind=_kind_of(cls)), installed, name)
        for kind, hook_name in _LEGACY_HOOKS.items():
            for impl, returned in self._implementations(hook_name):
                warnings.warn(f"{impl.plugin_name}: {hook_name}() is deprecated and will be removed in the next "
                              f"release; register each class in its class statement instead, e.g. "
                              f"class MyAttack(Attack, name=\"my-attack\")", DeprecationWarning, stacklevel=2)
                for spec in returned:
                    if spec.kind is not kind:
                        raise PluginError(f"{impl.plugin_name} returned {spec.kind.value} plugin {spec.id!r} from "
                                          f"{hook_name}")
                    self._add(spec, self._dists.get(id(impl.plugin)), impl.plugin_name)
        for impl, returned in self._implementations("harness_commands"):
            for command in returned:
                if command.name in self._commands:
                    raise PluginError(f"two plugin packages add the command {command.name!r}; uninstall one of them")
                self._commands[command.name] = command

    def _add(self, spec: PluginSpec, installed: metadata.Distribution | None, registered_as: str) -> None:
        code = code_identity(spec.factory.__module__, installed)
        dist = code.describe() if installed is not None else f"(registered in code: {registered_as})"
        spec = spec.with_code(dist, code)
        if spec.id in self._specs[spec.kind]:
            other = self._specs[spec.kind][spec.id].distribution
            raise PluginError(f"two {spec.kind.value} plugins are named {spec.id!r}: one from {other}, one from "
                              f"{dist}. Uninstall one of them or rename the plugin.")
        self._specs[spec.kind][spec.id] = spec

    def get(self, kind: Kind, plugin_id: str) -> PluginSpec:
        try:
            return self._specs[kind][plugin_id]
        except KeyError:
            raise PluginError(f"unknown {kind.value} plugin {plugin_id!r}{suggest(plugin_id, self.ids(kind))}") from None

    def ids(self, kind: Kind) -> list[str]:
        """The ids of the installed plugins of a kind, sorted."""
        return sorted(self._specs[kind])

    def names(self, kind: Kind) -> list[str]:
        """The plugins' ids, under their old name; kept for one release."""
        import warnings

        warnings.warn("Registry.names is now Registry.ids", DeprecationWarning, stacklevel=2)
        return self.ids(kind)

    def with_role(self, kind: Kind, role: object) -> list[PluginSpec]:
        """The plugins of a kind that declare this role (e.g. the clean baseline, the reference defense)."""
        return [spec for _, spec in sorted(self._specs[kind].items()) if spec.declared("role") == role]

    def spec_of(self, kind: Kind, factory: type) -> PluginSpec:
        """The registered plugin whose factory is this class (a suite names its members by class, not by name)."""
        found = [spec for spec in self._specs[kind].values() if spec.factory is factory]
        if len(found) != 1:
            raise PluginError(f"{factory.__name__} is registered as {len(found)} {kind.value} plugins; a suite's "
                              "member must be registered exactly once")
        return found[0]

    def all(self) -> list[PluginSpec]:
        return [spec for kind in Kind for spec in sorted(self._specs[kind].values(), key=lambda s: s.id)]

    def commands(self) -> list[Command]:
        return [self._commands[name] for name in sorted(self._commands)]


def _kind_of(cls: type) -> Kind:
    for base, kind in _KINDS:
        if issubclass(cls, base):
            return kind
    raise PluginError(f"{cls.__module__}.{cls.__qualname__} names itself a plugin but derives from none of Attack, "
                      "Defense, ModelSource, DataSource (harness.api); derive from the one it is")


def suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
