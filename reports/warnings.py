"""Automatic checks on a run, in the spirit of AutoAttack's: signs that an evaluation overstates robustness.

Each check reads only the database and returns notices (harness.analysis.notices: a stable id, documented in
docs/warnings.md, and a sentence that names the model, defense or attack concerned and says what to do).
"""

from __future__ import annotations

import pandas as pd

from harness.analysis.aggregate import WORST, WORST_ADAPTIVE, WORST_TRANSFER
from harness.analysis.notices import Notice
from harness.analysis.pairing import PairedRow
from harness.analysis.stats import wilson
from harness.analysis.summary import warnings_for
from harness.storage.queries import (
    adaptively_attacked_defenses,
    broken_at_zero_gradient,
    clean_gradient_norms,
    varying_defenses,
)
from harness.storage.records import RunRecord
from harness.storage.store import Store
from harness_reports.comparisons import Convergence
from harness_reports.naming import COLUMN_NAMES
from harness_reports.reproduction import VERDICT_HALF_WIDTH, Reproduction, benchmark_above_reported, examples_for


def black_box_beats_white_box(cells: pd.DataFrame, attacks: list[dict]) -> list[Notice]:
    """A score- or label-only attack that does better than every gradient attack points at gradient masking; the
    transfer attacks and the attacks through the defense are compared each among themselves."""
    notes = []
    for adaptive in (False, True):
        access = {a["label"]: a.get("access", "white-box") for a in attacks if bool(a.get("adaptive")) == adaptive}
        white = [a for a, used in access.items() if used == "white-box"]
        black = [a for a, used in access.items() if used == "black-box"]
        if not white or not black:
            continue
        where = " through the defense" if adaptive else ""
        for (model, defense), group in cells.groupby(["model", "defense"], sort=False):
            acc = dict(zip(group.key, group["mean"]))
            best_white = min((acc[a], a) for a in white if a in acc) if any(a in acc for a in white) else None
            best_black = min((acc[a], a) for a in black if a in acc) if any(a in acc for a in black) else None
            if best_white and best_black and best_black[0] < best_white[0]:
                notes.append(Notice("black-box-beats-white-box",
                                    f"{model} with defense {defense}: the black-box attack {best_black[1]}{where} "
                                    f"({best_black[0]:.2f}%) beats every white-box attack{where} (best: "
                                    f"{best_white[1]}, {best_white[0]:.2f}%). Gradients may be masked or obfuscated; "
                                    "the white-box numbers are not a reliable bound."))
    return notes


def randomized_without_adaptive(store: Store, run: RunRecord) -> list[Notice]:
    """A defense whose predictions vary between draws or repeats, evaluated by transfer attacks only."""
    run_id, baselines = run.run_id, run.baseline_attacks
    adaptive_defenses = adaptively_attacked_defenses(store, run_id)
    varying = varying_defenses(store, run_id, baselines)
    return [Notice("randomized-unverified", f"defense {d}: its predictions vary between draws or repeats, and no "
                   "adaptive attack (with EOT) targets it in this grid, so its robust accuracy is unverified. Add "
                   "[[attacks]] plugin = \"adaptive-suite\".")
            for d in run.labels("defenses") if d in varying and d not in adaptive_defenses]


def zero_gradients(store: Store, run_id: str) -> list[Notice]:
    """Attack success on examples whose input gradient is exactly zero: the loss surface is flat there.

    The gradient is recorded on the baseline's (clean) rows only, so a row with one is a clean row."""
    rows = clean_gradient_norms(store, run_id)
    if rows.empty:
        return []
    zero = rows[rows.grad_norm == 0]
    notes = []
    for model, group in zero.groupby("model", sort=False):
        broken = broken_at_zero_gradient(store, run_id, model)
        if broken:
            notes.append(Notice("zero-gradient", f"{model}: {len(group)} example(s) have a zero input gradient at the "
                                f"clean point, and attacks still succeed on {broken} of them. Gradient-based attacks "
                                "have nothing to follow there (masking, e.g. saturated softmax); check with a "
                                "black-box attack or a different loss."))
    return notes


def indistinguishable(pairs: list[PairedRow]) -> list[Notice]:
    """Defenses whose worst case cannot be told from the reference's on these examples, paired."""
    notes = []
    worst = {COLUMN_NAMES[WORST_ADAPTIVE], COLUMN_NAMES[WORST], COLUMN_NAMES[WORST_TRANSFER]}
    shown = next((name for name in (COLUMN_NAMES[WORST_ADAPTIVE], COLUMN_NAMES[WORST], COLUMN_NAMES[WORST_TRANSFER])
                  if any(p.what == name for p in pairs)), None)
    for p in pairs:
        if p.what == shown and p.what in worst and not p.distinguishable:
            more = (f"about {p.needed:,} examples at the observed discordance would tell them apart" if p.needed
                    else "no number of examples tells them apart at the observed rates")
            notes.append(Notice("indistinguishable", f"{p.model}: {p.first} vs {p.second} under {p.what}: not "
                                f"distinguishable ({p.difference:+.2f} points, paired 95% interval {p.low:+.2f} to "
                                f"{p.high:+.2f}, {_examples(p.only_first)} right only under {p.first} and "
                                f"{p.only_second} only under {p.second}); {more}."))
    return notes


def _examples(k: int) -> str:
    return f"{k} example" if k == 1 else f"{k} examples"


def unconverged(ladders: list[Convergence]) -> list[Notice]:
    """A budget ladder whose last doubling still lowered the worst case by more than its paired interval allows."""
    return [Notice("not-converged", f"{c.model} with {c.defense}: {c.attack} is not converged: doubling its budget "
                   f"from {c.last_step.second} to {c.last_step.first} lowered the worst case by "
                   f"{-c.last_step.difference:.2f} points (paired 95% interval {c.last_step.low:+.2f} to "
                   f"{c.last_step.high:+.2f}); raise the budget.")
            for c in ladders if not c.converged]


def small_sample(run: RunRecord) -> list[Notice]:
    """Fewer examples than a ±5-point 95% Wilson interval needs at 50% accuracy, where it is widest."""
    if run.n_examples >= examples_for(VERDICT_HALF_WIDTH):
        return []
    low, high = wilson(0.5, run.n_examples)
    widest = 100 * (high - low) / 2
    return [Notice("small-sample", f"{run.n_examples} examples per repeat: an accuracy near 50% carries a 95% "
                   f"interval of ±{widest:.1f} points, so a difference smaller than that says little on its own (the "
                   f"paired comparisons say which hold); about {examples_for(VERDICT_HALF_WIDTH):,} examples give "
                   f"±{VERDICT_HALF_WIDTH:g}.")]


def automatic_checks(store: Store, run: RunRecord, cells: pd.DataFrame, names: dict[str, str],
                     pairs: list[PairedRow], ladders: list[Convergence], reproduced: Reproduction | None) -> list[Notice]:
    notes = warnings_for(store, run.run_id)
    if cells.empty:
        return notes
    return (notes + small_sample(run) + unconverged(ladders) + black_box_beats_white_box(cells, run.entries("attacks"))
            + randomized_without_adaptive(store, run) + zero_gradients(store, run.run_id) + indistinguishable(pairs)
            + benchmark_above_reported(reproduced))
