"""Built-in model plugins: each class registers itself (`class Checkpoint(ModelSource, name="checkpoint")`), found
through this package's entry point exactly as a third party's are; and the ``harness train`` command."""

from __future__ import annotations

from harness.api import Command, hookimpl


@hookimpl
def harness_commands() -> list[Command]:
    from harness_plugins.models.train import TRAIN

    return [TRAIN]
