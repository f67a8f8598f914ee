"""The leaderboard of test-time defenses: every model × defense ranked by its adaptive worst case, never by the
transfer number, with the attacks that set it, its paired difference against no defense, whether the adaptive
attacks converged, and what a prediction costs.

A run in progress has cells with part of their examples: such a number is shown with how many it covers
("58.0 (50 of 100)"), and so is a paired verdict; a cell is ranked only on its adaptive worst case over every
example, a budget ladder speaks only where every rung has every example, and masking is flagged only where both
attacks compared have every example."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from harness.analysis.aggregate import WORST_ADAPTIVE, WORST_TRANSFER, per_example, worst_columns
from harness.analysis.pairing import PairedRow, pair_examples
from harness.api.interfaces import Access
from harness.storage.records import RunRecord
from harness.storage.store import Store
from harness_reports.comparisons import Convergence
from harness_reports.naming import COLUMN_NAMES, display_names


@dataclass(frozen=True)
class Strongest:
    """The adaptive attack of one access (gradient or black-box) that left the fewest examples right, and that accuracy (%)."""

    attack: str
    accuracy: float
    examples: int = 0     # the verdicts it rests on (examples × repeats)
    expected: int = 0     # those of a complete cell

    @property
    def complete(self) -> bool:
        return self.examples >= self.expected

    @property
    def coverage(self) -> str:
        return _part(self.examples, self.expected)


@dataclass(frozen=True)
class LeaderRow:
    model: str
    defense: str
    reference: bool                  # the grid's reference defense (no defense): the row every other is paired with
    clean: float | None              # %
    transfer: float | None           # worst case over the transfer attacks, %
    adaptive: float | None           # worst case over every attack, adaptive ones included, %; None: not evaluated
    gradient: Strongest | None       # the strongest gradient-based adaptive attack
    black_box: Strongest | None      # the strongest gradient-free adaptive attack
    versus_reference: PairedRow | None   # adaptive worst case against the reference's, paired by example
    converged: bool | None           # every budget ladder on this cell converged; None: no ladder, or one not complete
    forward: int | None              # passes per prediction (every draw of a random defense's vote)
    backward: int | None
    adaptive_examples: int = 0       # the verdicts the adaptive worst case rests on (examples × repeats)
    expected: int = 0                # those of a complete cell

    @property
    def ranked(self) -> bool:
        """Ranked only on an adaptive worst case over every example: a run in progress ranks no partial cell."""
        return self.adaptive is not None and self.adaptive_examples >= self.expected

    @property
    def adaptive_coverage(self) -> str:
        return "" if self.adaptive is None else _part(self.adaptive_examples, self.expected)

    @property
    def versus_coverage(self) -> str:
        """The pairs a paired difference rests on, where a run in progress has not all of them."""
        row = self.versus_reference
        return "" if row is None else _part(row.n * row.repeats, self.expected)

    @property
    def masking(self) -> bool:
        """A gradient-free attack beat every gradient-based one: the gradients point the attacks astray (judged
        only where both have every example: a partial cell is another set of examples)."""
        return self.gradient is not None and self.black_box is not None and self.gradient.complete and \
            self.black_box.complete and self.black_box.accuracy < self.gradient.accuracy

    @property
    def verdict(self) -> str:
        row = self.versus_reference
        if row is None:
            return "—"
        if not row.distinguishable:
            said = f"no evidence of a gain (p = {row.p_value:.3g})" if row.difference >= 0 else \
                f"no evidence of a loss (p = {row.p_value:.3g})"
        else:
            said = f"{'gain' if row.difference > 0 else 'loss'} (p = {row.p_value:.3g})"
        return said + self.versus_coverage


def _part(verdicts: int, expected: int) -> str:
    """"" for a complete cell, else " (50 of 100)": no partial number passes for a whole one."""
    return "" if verdicts >= expected else f" ({verdicts} of {expected})"


def _accuracy(frame: pd.DataFrame, model: str, defense: str) -> float | None:
    cell = frame[(frame.model == model) & (frame.defense == defense)]
    return None if cell.empty else float(cell.groupby("repeat").correct.mean().mean() * 100)


def _cell(frame: pd.DataFrame, model: str, defense: str) -> pd.DataFrame:
    return frame[(frame.model == model) & (frame.defense == defense)][["repeat", "idx", "correct"]]


def _strongest(frames: dict[str, pd.DataFrame], model: str, defense: str, names: dict[str, str],
               expected: int) -> Strongest | None:
    """Among the attacks whose per-example frames are given, the one that left the fewest right on this cell."""
    found = [(acc, a) for a, frame in frames.items() if (acc := _accuracy(frame, model, defense)) is not None]
    if not found:
        return None
    accuracy, attack = min(found, key=lambda pair: pair[0])
    return Strongest(names.get(attack, attack), accuracy, len(_cell(frames[attack], model, defense)), expected)


def _cost(run: RunRecord, entry: dict) -> tuple[int | None, int | None]:
    passes = entry.get("passes")
    if passes is None:        # recorded before defenses declared their cost
        return None, None
    draws = run.votes if entry.get("randomized") else 1
    return int(round((passes[0] + 1) * draws)), int(round(passes[1] * draws))


def leaderboard(store: Store, run: RunRecord, ladders: list[Convergence] | None = None) -> list[LeaderRow]:
    """One row per model × defense of a run with a test-time defense, best adaptive worst case first (rows not
    evaluated adaptively last, unranked)."""
    names = display_names(run)
    defenses = run.entries("defenses")
    if not run.test_time_defenses:
        return []
    columns = worst_columns(run)
    reference = run.reference_defense
    baseline = next(iter(run.baseline_attacks), None)
    adaptive = set(run.adaptive_attacks)
    access_of = {a["label"]: a.get("access") for a in run.entries("attacks") if a["label"] in adaptive}
    gradient = [a for a, access in access_of.items() if access == Access.WHITE_BOX.value]
    black_box = [a for a, access in access_of.items() if access == Access.BLACK_BOX.value]
    ladder_bases = {a["ladder"][0] for a in run.entries("attacks") if a.get("ladder")}
    transfer = per_example(store, run.run_id, columns[WORST_TRANSFER] or [])
    worst = per_example(store, run.run_id, columns[WORST_ADAPTIVE]) if columns.get(WORST_ADAPTIVE) else None
    clean = per_example(store, run.run_id, [baseline]) if baseline else None
    # each adaptive attack's verdicts, read once for every model and defense
    by_access = {access: {a: per_example(store, run.run_id, [a]) for a in attacks}
                 for access, attacks in (("gradient", gradient), ("black-box", black_box))}
    expected = run.rows_per_cell
    rows = []
    for model in run.labels("models"):
        for entry in defenses:
            defense = entry["label"]
            versus = None
            if worst is not None and reference is not None and defense != reference:
                versus = pair_examples(_cell(worst, model, defense), _cell(worst, model, reference), model,
                                       COLUMN_NAMES[WORST_ADAPTIVE], names.get(defense, defense),
                                       names.get(reference, reference))
            shown = names.get(defense, defense)
            cell_ladders = [c for c in ladders or () if c.model == model and c.defense == shown]
            # a ladder with a rung still to run has no verdict: the others' "yes" would speak for it
            complete = bool(cell_ladders) and len(cell_ladders) == len(ladder_bases)
            forward, backward = _cost(run, entry)
            rows.append(LeaderRow(
                model=model, defense=shown, reference=defense == reference,
                clean=_accuracy(clean, model, defense) if clean is not None else None,
                transfer=_accuracy(transfer, model, defense),
                adaptive=_accuracy(worst, model, defense) if worst is not None else None,
                gradient=_strongest(by_access["gradient"], model, defense, names, expected),
                black_box=_strongest(by_access["black-box"], model, defense, names, expected),
                versus_reference=versus,
                converged=all(c.converged for c in cell_ladders) if complete else None,
                forward=forward, backward=backward,
                adaptive_examples=len(_cell(worst, model, defense)) if worst is not None else 0, expected=expected))
    return sorted(rows, key=lambda r: (not r.ranked, r.adaptive is None, -(r.adaptive or 0.0)))


def leaderboard_frame(rows: list[LeaderRow]) -> pd.DataFrame:
    """The leaderboard as a table for the terminal (rank by the adaptive worst case only)."""
    def number(value: float | None) -> str:
        return "—" if value is None else f"{value:.1f}"

    def strongest(s: Strongest | None) -> str:
        return "—" if s is None else f"{s.attack} {s.accuracy:.1f}{s.coverage}"

    out = []
    for rank, r in enumerate(rows, start=1):
        out.append({
            "rank": str(rank) if r.ranked else "—", "model": r.model,
            "defense": r.defense + (" (reference)" if r.reference else ""),
            "clean %": number(r.clean), "transfer %": number(r.transfer),
            "adaptive %": number(r.adaptive) + r.adaptive_coverage,
            "gradient-based": strongest(r.gradient), "black-box": strongest(r.black_box) + (" masking?" if r.masking else ""),
            "vs reference": "—" if r.versus_reference is None else
            f"{r.versus_reference.difference:+.1f} ({r.versus_reference.low:+.1f} to {r.versus_reference.high:+.1f})"
            + r.versus_coverage,
            "verdict": r.verdict,
            "converged": {None: "—", True: "yes", False: "no"}[r.converged],
            "passes/prediction": "—" if r.forward is None else f"{r.forward} fwd + {r.backward} bwd",
        })
    return pd.DataFrame(out)
