"""Built-in attack plugins."""

from __future__ import annotations

from harness.hookspecs import hookimpl
from harness.specs import Kind, PluginSpec, spec_from_dataclass


@hookimpl
def harness_attacks() -> list[PluginSpec]:
    from plugins.attacks.clean import CLEAN, Clean
    from plugins.attacks.pgd import CW, PGD

    return [
        spec_from_dataclass(Clean, name=CLEAN, kind=Kind.ATTACK),
        spec_from_dataclass(PGD, name="pgd", kind=Kind.ATTACK),
        spec_from_dataclass(CW, name="cw", kind=Kind.ATTACK),
    ]
