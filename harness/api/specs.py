"""What a plugin declares: name, kind, typed parameters with defaults, a one-line description."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Literal, get_args, get_origin

from harness.api.code_identity import CodeIdentity


class Kind(str, Enum):
    ATTACK = "attack"
    DEFENSE = "defense"
    MODEL = "model"
    DATASET = "dataset"

    @property
    def plural(self) -> str:
        return f"{self.value}s"


@dataclass(frozen=True)
class Param:
    """One parameter of a plugin: what the grid file may set, checked before any work starts."""

    name: str
    type: Any
    default: Any
    help: str = ""
    minimum: float | None = None     # numeric parameters: the allowed range, checked when a grid is loaded
    maximum: float | None = None

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING

    def type_name(self) -> str:
        origin = get_origin(self.type)
        if origin is Literal:
            return " | ".join(repr(a) for a in get_args(self.type))
        if origin in (typing.Union, types.UnionType):
            return " | ".join(_plain_name(a) for a in get_args(self.type))
        return _plain_name(self.type)

    def default_text(self) -> str:
        return "required" if self.required else repr(self.default)

    def range_text(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f"a number in [{self.minimum:g}, {self.maximum:g}]"
        return f"a number >= {self.minimum:g}" if self.minimum is not None else f"a number <= {self.maximum:g}"


def _plain_name(tp: Any) -> str:
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))


@dataclass(frozen=True)
class PluginSpec:
    """A discovered plugin. ``factory(**params)`` builds the object the grid uses; ``id`` is what it is registered
    as (``class PGD(Attack, name="pgd")``), which a grid entry's ``plugin = "pgd"`` names."""

    id: str
    kind: Kind
    factory: Callable[..., Any]
    params: tuple[Param, ...]
    description: str
    distribution: str = field(default="", compare=False)   # how messages name where it comes from
    code: CodeIdentity | None = field(default=None, compare=False)   # what enters the identity of its units

    @property
    def name(self) -> str:
        """The plugin's id, under its old name; kept for one release."""
        import warnings

        warnings.warn("PluginSpec.name is now PluginSpec.id", DeprecationWarning, stacklevel=2)
        return self.id

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def declared(self, attribute: str, default: Any = None) -> Any:
        """A class-level declaration of the plugin (its role, its presets), read without building it."""
        return getattr(self.factory, attribute, default)

    def with_code(self, distribution: str, code: CodeIdentity) -> PluginSpec:
        return dataclasses.replace(self, distribution=distribution, code=code)


@dataclass(frozen=True)
class Command:
    """A ``harness`` sub-command that a plugin package adds (e.g. ``harness train``)."""

    name: str
    help: str
    configure: Callable[[Any], None]     # adds its arguments to an argparse parser
    run: Callable[[Any, Any], int]       # (parsed arguments, the plugin registry) -> exit code


def param(default: Any = dataclasses.MISSING, help: str = "", *, minimum: float | None = None,
          maximum: float | None = None) -> Any:
    """A dataclass field that carries its help text (and, for numbers, its allowed range) into the plugin's
    declared parameters."""
    return field(default=default, metadata={"help": help, "minimum": minimum, "maximum": maximum})


def spec_from_dataclass(cls: type, *, name: str, kind: Kind, description: str | None = None) -> PluginSpec:
    """Declare a plugin whose hyper-parameters are the fields of a dataclass (foolbox style)."""
    hints = typing.get_type_hints(cls)
    params = tuple(
        Param(f.name, hints[f.name], f.default if f.default_factory is dataclasses.MISSING else f.default_factory(),
              f.metadata.get("help", ""), f.metadata.get("minimum"), f.metadata.get("maximum"))
        for f in dataclasses.fields(cls) if f.init
    )
    doc = description or (cls.__doc__ or "").strip().splitlines()[0]
    return PluginSpec(id=name, kind=kind, factory=cls, params=params, description=doc)
