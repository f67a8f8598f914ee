"""Built-in defense plugins."""

from __future__ import annotations

from harness.hookspecs import hookimpl
from harness.specs import Kind, PluginSpec, spec_from_dataclass


@hookimpl
def harness_defenses() -> list[PluginSpec]:
    from harness_plugins.defenses.basic import NoDefense, RandomNoise
    from harness_plugins.defenses.hedge import Hedge, HedgeRandomClass

    return [
        spec_from_dataclass(NoDefense, name="none", kind=Kind.DEFENSE),
        spec_from_dataclass(RandomNoise, name="random", kind=Kind.DEFENSE),
        spec_from_dataclass(Hedge, name="hedge", kind=Kind.DEFENSE),
        spec_from_dataclass(HedgeRandomClass, name="hedge-random-class", kind=Kind.DEFENSE),
    ]
