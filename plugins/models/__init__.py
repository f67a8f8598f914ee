"""Built-in model plugins."""

from __future__ import annotations

from harness.hookspecs import hookimpl
from harness.specs import Kind, PluginSpec, spec_from_dataclass


@hookimpl
def harness_models() -> list[PluginSpec]:
    from plugins.models.checkpoint import Checkpoint
    from plugins.models.zoo import AutoAttackExample, RobustBenchModel

    return [
        spec_from_dataclass(Checkpoint, name="checkpoint", kind=Kind.MODEL),
        spec_from_dataclass(RobustBenchModel, name="robustbench", kind=Kind.MODEL),
        spec_from_dataclass(AutoAttackExample, name="autoattack-example", kind=Kind.MODEL),
    ]
