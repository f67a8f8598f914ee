"""pluggy hook specifications: one hook per plugin kind, in the entry-point group ``harness``.

A plugin module (built-in or third party) implements any of these and lists itself under
``[project.entry-points.harness]`` in its ``pyproject.toml``.
"""

from __future__ import annotations

import pluggy

from harness.api.specs import Command, PluginSpec

PROJECT = "harness"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def harness_attacks() -> list[PluginSpec]:
    """Attack plugins (``harness.api.interfaces.Attack``): ``(model, x, y, threat, *, generator) -> x_adv``."""


@hookspec
def harness_defenses() -> list[PluginSpec]:
    """Defense plugins (``harness.api.interfaces.Defense``): ``purify(model, x, *, generator) -> x``."""


@hookspec
def harness_models() -> list[PluginSpec]:
    """Model plugins (``harness.api.interfaces.ModelSource``): ``load(device) -> LoadedModel``."""


@hookspec
def harness_datasets() -> list[PluginSpec]:
    """Dataset plugins (``harness.api.interfaces.DataSource``): ``load(n) -> LabelledData``."""


@hookspec
def harness_commands() -> list[Command]:
    """Sub-commands of ``harness`` that a plugin package adds, e.g. a trainer for its architectures."""
