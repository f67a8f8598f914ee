"""`harness compare`: two runs example by example (paired differences, McNemar)."""

from __future__ import annotations

import argparse
import math
import shutil

from harness.api.errors import HarnessError
from harness.api.registry import Registry


def cmd_compare(args: argparse.Namespace, registry: Registry) -> int:
    from harness.analysis.compare import sides
    from harness.storage.store import Store

    given = getattr(args, "sides", None) or []
    if not 1 <= len(given) <= 2 or any(db is None for db, _ in given):
        raise HarnessError("compare takes one or two --db (each optionally followed by --run ID), e.g. "
                           "harness compare --db A.sqlite --db B.sqlite")
    bound = args.fail_if_differs
    if bound is not None and not (math.isfinite(bound) and bound >= 0):
        raise HarnessError(f"--fail-if-differs takes a number of percentage points >= 0, got {bound!r}")
    stores = [Store(db, readonly=True) for db, _ in given]
    try:
        return _compare(args, sides([(store, run) for store, (_, run) in zip(stores, given)]))
    finally:
        for store in stores:
            store.close()


def _compare(args: argparse.Namespace, both) -> int:
    from harness.analysis.compare import compare_runs

    first, second = both
    result = compare_runs(first, second)
    for name, (store, run) in zip("AB", (first, second)):
        print(f"{name}: run {run.run_id} in {store.path} — {run.dataset_display}, n={run.n_examples}, preset "
              f"{run.preset}, {run.precision}, device {run.device}")
    if not result.cells:
        print("the two runs share no (model, attack, defense) cell with results; nothing to compare")
    else:
        print("accuracy in %; A − B in points, its 95% interval paired by example (Newcombe, method 10); changed: "
              "share of examples whose predicted class differs; exact McNemar p on the examples only one run got right")
        print(result.table().to_string(line_width=shutil.get_terminal_size((120, 24)).columns))
    for name, only in (("A", result.only_first), ("B", result.only_second)):
        if only:
            print(f"only in {name} (not compared): {'; '.join(only)}")
    if result.unmatched_first or result.unmatched_second:
        print(f"rows without a partner (not compared): {result.unmatched_first} in A, {result.unmatched_second} in B")
    if args.fail_if_differs is not None:
        beyond = result.beyond(args.fail_if_differs)
        if beyond:
            print(f"{len(beyond)} cell(s) differ by more than {args.fail_if_differs:g} points: " +
                  "; ".join(f"{c.model} × {c.attack} × {c.defense} ({c.paired.difference:+.2f})" for c in beyond))
            return 1
        print(f"every cell is within {args.fail_if_differs:g} points")
    return 0


class _Side(argparse.Action):
    """`--db A [--run X] --db B [--run Y]`: each --run belongs to the --db before it (or, after a single
    --db, names a second run in the same database)."""

    def __call__(self, parser, namespace, value, option_string=None):
        sides = list(getattr(namespace, "sides", None) or [])
        if option_string == "--db":
            sides.append((value, None))
        elif sides and sides[-1][1] is None:
            sides[-1] = (sides[-1][0], value)
        else:
            sides.append((sides[-1][0] if sides else None, value))
        namespace.sides = sides


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``compare`` sub-command and its options."""
    p = sub.add_parser("compare", help="compare two runs example by example (paired differences, McNemar)",
                       description="Match two runs' rows by model, attack, defense, repeat and example, and compare "
                       "every shared cell with paired statistics. With one --db and no --run: its two latest runs.")
    p.add_argument("--db", action=_Side, required=True, help="a results database (give it twice for two databases)")
    p.add_argument("--run", action=_Side, help="run id (a prefix is enough) in the --db before it; default: its latest")
    p.add_argument("--fail-if-differs", type=float, metavar="POINTS",
                   help="exit with status 1 if any cell's accuracies differ by more than POINTS percentage points")
    p.set_defaults(func=cmd_compare)
