"""The warnings every summary of a run carries (`harness show`, `harness run`, the reports): a transfer-only
evaluation of a test-time defense, and what the plugins printed while they ran."""

from __future__ import annotations

import json

from harness.analysis.notices import Notice
from harness.storage.store import Store


def warnings_for(store: Store, run_id: str) -> list[Notice]:
    """A grid with a test-time defense but no adaptive attack overstates that defense's robustness."""
    run = store.run(run_id)
    test_time = run.test_time_defenses
    notes = []
    if test_time and not run.adaptive_attacks:
        notes.append(Notice("transfer-only", f"no adaptive attack in this grid, so the worst case of "
                            f"{', '.join(run.named(d) for d in test_time)} is the transfer protocol only and overstates robustness (Croce "
                            "et al., ICML 2022). Add [[attacks]] plugin = \"adaptive-suite\" to attack model + "
                            "defense end to end."))
    return notes + plugin_messages(store, run_id)


def plugin_messages(store: Store, run_id: str) -> list[Notice]:
    """What the plugins printed, once per unit (harness.run.chatter), each naming the unit and the plugin."""
    units = store.units(run_id)
    if units.empty or "messages" not in units:
        return []
    run = store.run(run_id)
    out = []
    for unit in units.itertuples():
        if isinstance(unit.messages, str) and unit.messages:
            defended = (f"through {', '.join(run.named(d) for d in json.loads(unit.defenses))}" if unit.adaptive
                        else "on the bare model")
            out += [Notice("plugin-output", f"{unit.model} × {run.named(unit.attack)} {defended} × r{unit.repeat}: "
                           f"{message}") for message in json.loads(unit.messages)]
    return out
