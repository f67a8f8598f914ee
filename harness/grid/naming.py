"""How an entry is named: tables print its plugin's declared display name where the grid kept the default
label (the plugin's own name) and the grid's label otherwise; messages (dry runs, progress, warnings) name it
as the tables do, with the label in brackets where the two differ, so either can be searched for."""

from __future__ import annotations


def table_name(label: str, plugin: str, display_name: str | None) -> str:
    """The name tables print, e.g. "PGD" for an entry ``plugin = "pgd"`` and "PGD-50" for ``label = "PGD-50"``."""
    return (display_name or label) if label == plugin else label


def named(label: str, plugin: str, display_name: str | None) -> str:
    """The name messages print, e.g. "Nat-Acc. [clean]", "Hedge [hedge]", or "PGD-50" where the grid chose it."""
    shown = table_name(label, plugin, display_name)
    return shown if shown == label else f"{shown} [{label}]"
