"""The one warning every summary of a run carries (`harness show`, `harness run`, the reports)."""

from __future__ import annotations

from harness.aggregate import adaptive_attacks, test_time_defenses
from harness.store import Store


def warnings_for(store: Store, run_id: str) -> list[str]:
    """A grid with a test-time defense but no adaptive attack overstates that defense's robustness."""
    run = store.run(run_id)
    test_time = test_time_defenses(run)
    if test_time and not adaptive_attacks(run):
        return [f"warning: no adaptive attack in this grid, so the worst case of {', '.join(test_time)} is the "
                "transfer protocol only and overstates robustness (Croce et al., ICML 2022). "
                "Add [[attacks]] plugin = \"adaptive-suite\" to attack model + defense end to end."]
    return []
