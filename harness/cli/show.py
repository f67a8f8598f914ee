"""`harness show`: a run's Table-1-style summary, or its leaderboard of test-time defenses."""

from __future__ import annotations

import argparse
import shutil
from typing import TYPE_CHECKING

from harness.api.registry import Registry

if TYPE_CHECKING:
    from harness.storage.records import RunRecord


def cmd_show(args: argparse.Namespace, registry: Registry) -> int:
    from harness.storage.store import Store

    with Store(args.db, readonly=True) as store:
        run = store.run(args.run)
        if args.leaderboard:
            _print_leaderboard(store, run, args.format)
        else:
            print_summary(store, run, args.format)
        if args.format == "text":
            progress = in_progress(store, run, args.db)
            if progress:
                print(progress)
    return 0


def in_progress(store, run: "RunRecord", db: str) -> str | None:
    """A line for a run with work left: how much is done, what its cells cover, and the command that resumes it."""
    units = store.units(run.run_id)
    if units.empty or bool(units.finished.astype(bool).all()):
        return None
    return (f"in progress: {int(units.finished.astype(bool).sum())} of {len(units)} units finished "
            f"({int(units.done.sum()):,} of {int(units.total.sum()):,} unit examples); a cell covers only its finished "
            f"examples and a worst case only those evaluated under every attack; resume with: "
            f"harness run --grid {run.config_path} --db {db}")


def _print_leaderboard(store, run: "RunRecord", form: str = "text") -> None:
    from harness_reports.comparisons import convergence
    from harness_reports.leaderboard import leaderboard, leaderboard_frame
    from harness_reports.naming import display_names

    frame = leaderboard_frame(leaderboard(store, run, convergence(store, run, display_names(run))))
    if form != "text":
        print(frame.to_csv(index=False).rstrip("\n") if form == "csv" else frame.to_json(orient="records", indent=1))
        return
    print(f"run {run.run_id} — {run.dataset_display}, n={run.n_examples}, {run.norm} eps={run.eps:.5g}, "
          f"votes={run.votes}, device {run.device}")
    if frame.empty:
        print("no test-time defense in this run: a leaderboard ranks defenses beside the reference (no defense)")
        return
    print("ranked by the adaptive worst case (correct under every attack, transfer and adaptive); accuracy in %; "
          "vs reference: paired difference in points (95% interval) and McNemar p; masking?: a gradient-free attack "
          "beat every gradient-based one")
    print(frame.to_string(index=False, line_width=shutil.get_terminal_size((160, 24)).columns))


def print_summary(store, run: "RunRecord", form: str = "text") -> None:
    """The run's main table (``run``: its record, ``Store.run``), as text fitted to the terminal, csv or json."""
    from harness.analysis.aggregate import WORST_ADAPTIVE
    from harness.analysis.summary import warnings_for
    from harness.grid.presets import PRESETS
    from harness_reports.content import main_table
    from harness_reports.terminal import fitted, records

    table = main_table(store, run)
    if form != "text":
        data = records(table) if table is not None else None
        if data is not None:
            print(data.to_csv(index=False).rstrip("\n") if form == "csv" else data.to_json(orient="records", indent=1))
        return
    print(f"run {run.run_id} — {run.dataset_display}, n={run.n_examples}, {run.norm} eps={run.eps:.5g}, "
          f"repeats={run.repeats}, preset {run.preset}, device {run.device}")
    if table is None:
        print("no results yet")
        return
    rule = "clean included" if PRESETS[run.preset].worst_case_baseline else "clean not included (paper preset)"
    advice = "; report Worst Case (adaptive)" if WORST_ADAPTIVE in table.keys else ""
    print(f"accuracy in % (95% Wilson interval), ± std over repeats; * best per model; worst case = correct under "
          f"every attack, {rule}{advice}")
    print(fitted(table))
    for note in warnings_for(store, run.run_id):
        print(note)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``show`` sub-command and its options."""
    p = sub.add_parser("show", help="print a Table-1-style summary of a run")
    p.add_argument("--db", required=True)
    p.add_argument("--run", help="run id (a prefix is enough); default: the latest")
    p.add_argument("--format", choices=["text", "csv", "json"], default="text",
                   help="text (default): the report's main table fitted to the terminal; csv, json: one row per cell")
    p.add_argument("--leaderboard", action="store_true",
                   help="rank each model × defense by its adaptive worst case, with the attacks that set it, the "
                   "paired difference against no defense, convergence and passes per prediction")
    p.set_defaults(func=cmd_show)
