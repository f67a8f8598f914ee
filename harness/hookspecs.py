"""pluggy hook specifications: one hook per plugin kind, in the entry-point group ``harness``.

A plugin module (built-in or third party) implements any of these and lists itself under
``[project.entry-points.harness]`` in its ``pyproject.toml``.
"""

from __future__ import annotations

import pluggy

from harness.specs import PluginSpec

PROJECT = "harness"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def harness_attacks() -> list[PluginSpec]:
    """Attack plugins: ``(model, x, y, threat, *, generator) -> x_adv``."""


@hookspec
def harness_defenses() -> list[PluginSpec]:
    """Defense plugins: ``purify(model, x, *, generator) -> x`` applied before the model predicts."""


@hookspec
def harness_models() -> list[PluginSpec]:
    """Model plugins: ``load(device) -> LoadedModel`` (eval mode, inputs in [0,1])."""


@hookspec
def harness_datasets() -> list[PluginSpec]:
    """Dataset plugins: ``load(n) -> LabelledData``, the first n test examples in a fixed order."""
