"""Built-in model plugins."""

from __future__ import annotations

from harness.hookspecs import hookimpl
from harness.specs import Command, Kind, PluginSpec, spec_from_dataclass


@hookimpl
def harness_models() -> list[PluginSpec]:
    from harness_plugins.models.checkpoint import Checkpoint
    from harness_plugins.models.zoo import AutoAttackExample, RobustBenchModel

    return [
        spec_from_dataclass(Checkpoint, name="checkpoint", kind=Kind.MODEL),
        spec_from_dataclass(RobustBenchModel, name="robustbench", kind=Kind.MODEL),
        spec_from_dataclass(AutoAttackExample, name="autoattack-example", kind=Kind.MODEL),
    ]


@hookimpl
def harness_commands() -> list[Command]:
    from harness_plugins.models.train import TRAIN

    return [TRAIN]
