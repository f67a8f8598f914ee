"""How reports name things: every attack and defense by what its plugin declared, recorded in the run."""

from __future__ import annotations

from harness.analysis.aggregate import WORST, WORST_ADAPTIVE, WORST_TRANSFER
from harness.storage.records import RunRecord

COLUMN_NAMES = {WORST: "Worst Case", WORST_TRANSFER: "Worst Case (transfer)", WORST_ADAPTIVE: "Worst Case (adaptive)"}


def display_names(run: RunRecord) -> dict[str, str]:
    """Label → the name tables print (harness.grid.naming): the plugin's declared name where the grid kept the
    default label (the plugin's own name), the grid's label otherwise."""
    return run.table_names()

