"""The ``harness`` command: plugins, run, show, compare, report, and the commands plugin packages add."""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import signal
import sys
import traceback
from pathlib import Path

from harness.api.errors import HarnessError, PluginCrash
from harness.api.registry import Registry

BUG_REPORT = "this is a bug in the harness or a plugin; please report it with the traceback above"


def cmd_plugins(args: argparse.Namespace, registry: Registry) -> int:
    from harness.api.specs import Kind

    for kind in Kind:
        specs = [s for s in registry.all() if s.kind is kind]
        if args.kind and kind.value != args.kind:
            continue
        print(f"{kind.plural}:")
        for spec in specs:
            print(f"  {spec.name}  —  {spec.description}  [{spec.distribution}]")
            declared = _declared(spec)
            if declared:
                print(f"      ({declared})")
            for p in spec.params:
                bounds = f" ({p.range_text()})" if p.minimum is not None or p.maximum is not None else ""
                print(f"      {p.name}: {p.type_name()} = {p.default_text()}{bounds}" + (f"  # {p.help}" if p.help else ""))
    if registry.commands() and not args.kind:
        print("commands:")
        for command in registry.commands():
            print(f"  harness {command.name}  —  {command.help}")
    return 0


def _declared(spec) -> str:
    """What an attack or defense declares, as tables and the core read it: display name, role, access, randomness,
    norms, and its cost per example at its defaults (an attack against the bare model at L∞ 8/255)."""
    from harness.api.interfaces import Access, Attack, AttackSuite, Defense
    from harness.api.threat import Norm, ThreatModel

    factory = spec.factory
    if not isinstance(factory, type) or not issubclass(factory, (Attack, Defense)):
        return ""
    parts = [f"shown as {factory.display_name or spec.name!r}", f"role {factory.role.value}"]
    if issubclass(factory, Attack):
        access = factory.access.value if isinstance(factory.access, Access) else "set by the class it names"
        parts += [f"access {access}", "norms " + "/".join(n.value for n in factory.norms)]
        parts += ["runs in fp32 under bf16"] if factory.full_precision else []
    else:
        parts.append("randomised: majority vote" if factory.randomized else "deterministic")
    try:
        built = factory()
        if isinstance(built, AttackSuite):
            return "; ".join(parts + ["runs as its members: " + ", ".join(name for name, _ in built.members())])
        if isinstance(built, Attack) and built.adaptive:
            return "; ".join(parts + ["attacks through each defense of the grid (its cost there: --dry-run)"])
        cost = built.passes(ThreatModel(Norm.LINF, 8 / 255)) if isinstance(built, Attack) else built.passes()
        parts.append(f"cost {cost.forward:,.0f} forward + {cost.backward:,.0f} backward passes per example"
                     + (" before its prediction" if isinstance(built, Defense) else ""))
    except Exception:  # noqa: BLE001 - a plugin that needs parameters has no cost at its defaults
        parts.append("cost: set by its parameters")
    return "; ".join(parts)


def cmd_run(args: argparse.Namespace, registry: Registry) -> int:
    from harness.grid.config import Overrides, load_grid

    if args.n_examples is not None and args.n_examples < 1:
        raise HarnessError(f"--n-examples must be >= 1, got {args.n_examples}")
    if args.dry_run and args.estimate:
        raise HarnessError("--dry-run and --estimate are two different answers; give one of them")
    if args.executor != "ray" and (args.shard_size is not None or args.ray_address):
        raise HarnessError("--shard-size and --ray-address apply to --executor ray only")
    if args.shard_size is not None and args.shard_size < 1:
        raise HarnessError(f"--shard-size must be >= 1, got {args.shard_size}")
    if args.threads is not None and args.threads < 1:
        raise HarnessError(f"--threads must be >= 1, got {args.threads}")
    overrides = Overrides(db=args.db, n_examples=args.n_examples, preset=args.preset, dataset=args.dataset,
                          models=_labels(args.models, "--models"), attacks=_labels(args.attacks, "--attacks"),
                          defenses=_labels(args.defenses, "--defenses"), threads=args.threads,
                          resume_from_device=args.resume_from_device, model_dir=args.model_dir,
                          remote_workers=args.executor == "ray")
    grid = load_grid(args.grid, registry, overrides=overrides)
    if grid.batch_size_auto and not args.dry_run:
        from harness.run.autobatch import resolve_batch_size

        grid = resolve_batch_size(grid, registry)
        if not args.quiet:
            print(f"batch_size = \"auto\": {grid.batch_size} on {grid.device_kind}", file=sys.stderr, flush=True)
    if args.shard_size is not None and args.shard_size % grid.batch_size and args.shard_size < grid.n_examples:
        raise HarnessError(f"--shard-size {args.shard_size} must be a multiple of the grid's batch_size "
                           f"{grid.batch_size}, so that shards draw the same random numbers as one pass over a unit")
    grid.apply_threads()
    if args.dry_run:
        return _dry_run(grid, registry, args.for_gpu)
    if args.estimate:
        return _estimate(grid, registry)
    from harness.grid.plan import plan
    from harness.run.runner import Runner

    if args.executor == "ray":
        from harness.run.ray_executor import on_cluster

        grid = on_cluster(grid, address=args.ray_address)   # the workers' device, not this machine's
    if not args.quiet:
        print(f"run {grid.run_id}: {len(plan(grid, registry))} work units on {grid.n_examples} examples of "
              f"{grid.dataset.label}; loading the data and {len(grid.models)} model(s)", file=sys.stderr, flush=True)
    if args.executor == "ray":
        import torch

        from harness.run.ray_executor import run_with_ray

        runner = Runner(grid, registry, progress=not args.quiet, device=torch.device("cpu"))
        run_id = run_with_ray(grid, registry, runner=runner, address=args.ray_address, shard_size=args.shard_size)
    else:
        runner = Runner(grid, registry, progress=not args.quiet)  # opens the database once every check has passed
        run_id = runner.run()
    with runner.store as store:   # closing folds SQLite's write-ahead log into the file
        _print_summary(store, run_id)
    print(f"results in {grid.db}; tables and figures: harness report --db {grid.db} --out DIR")
    return 0


def _labels(text: str | None, option: str) -> tuple[str, ...]:
    """Comma-separated entry labels; given but naming none (``--attacks ","``) is an error, not "all of them"."""
    if text is None:
        return ()
    labels = tuple(t.strip() for t in text.split(",") if t.strip())
    if not labels:
        raise HarnessError(f"{option} {text!r} names no label; give comma-separated labels, e.g. {option} pgd,cw")
    return labels


def _dry_run(grid, registry: Registry, gpu_name: str) -> int:
    from harness.api.cost import Passes
    from harness.api.specs import Kind
    from harness.grid.plan import build, plan, unit_cost
    from harness.run.flops import EFFICIENCY, GPUS, gpu_hours

    units = plan(grid, registry)
    total = Passes(0, 0)
    by_cell: dict[tuple[str, str], Passes] = {}
    print(f"run {grid.run_id}: {len(units)} work units on {grid.n_examples} examples of {grid.dataset.label}")
    for unit in units:
        cost = unit_cost(unit, grid, registry)
        total = total + cost
        cell = (unit.model.label, unit.attack.named)
        by_cell[cell] = by_cell.get(cell, Passes(0, 0)) + cost
        print(f"  {unit.key}  {unit.describe():<60}  defenses: {', '.join(d.named for d in unit.defenses)}  "
              f"forward {cost.forward:,.0f}  backward {cost.backward:,.0f}")
    print(f"total: forward {total.forward:,.0f}  backward {total.backward:,.0f} passes of one image through the model")
    flops = {}
    for index, entry in enumerate(grid.models):
        model = build(registry, entry, Kind.MODEL)
        model.check()  # e.g. the RobustBench ID exists
        for path in model.source_files():
            state = "present" if path.exists() else "MISSING"
            print(f"  needs file: {path}  [{state}]  (models[{index}] {entry.label!r})")
        flops[entry.label] = _forward_flops(model)
    gpu = GPUS[gpu_name]
    print(f"summary per model × attack, in passes and in {gpu.name.upper()} hours: an estimate from FLOPs (no "
          f"weights needed) at {EFFICIENCY:.0%} of its dense bf16 peak, upper bounds for early-stopping attacks; "
          "harness run --estimate on the GPU measures instead")
    for model in dict.fromkeys(m for m, _ in by_cell):
        cells = {a: p for (m, a), p in by_cell.items() if m == model}
        hours = {a: gpu_hours(p, flops[model], gpu) for a, p in cells.items()} if flops.get(model) else {}
        per = f"{flops[model] / 1e9:,.2f} GFLOP per image" if flops.get(model) else "FLOPs unknown for its architecture"
        print(f"  {model} ({per})" + (f": {_hours(sum(hours.values()))} in all" if hours else ""))
        for attack, p in cells.items():
            print(f"    {attack:<40} forward {p.forward:>16,.0f}  backward {p.backward:>16,.0f}"
                  + (f"  ≈ {_hours(hours[attack])}" if hours else ""))
    return 0


def _forward_flops(model) -> float | None:
    """One image's forward FLOPs of a model plugin's architecture, built on the meta device (no weights)."""
    import torch

    from harness.run.flops import forward_flops

    try:
        with torch.device("meta"):
            built = model.architecture()
        return forward_flops(*built) if built is not None else None
    except Exception:  # noqa: BLE001 - costing is advice: an architecture that cannot run on meta has no estimate
        return None


def _hours(hours: float) -> str:
    return f"{hours:,.2f} GPU-h" if hours < 100 else f"{hours:,.0f} GPU-h"


def _made(unit) -> str:
    """What a recorded unit's examples actually cost, per example, beside the plan (an upper bound)."""
    counted = getattr(unit, "counted_forward", None)
    if unit is None or counted is None or counted != counted or not unit.done:
        return ""
    return f"  made: forward {counted / unit.done:,.1f}  backward {unit.counted_backward / unit.done:,.1f} per example"


def _estimate(grid, registry: Registry) -> int:
    from harness.run.estimate import calibrate_models, estimate
    from harness.run.progress import duration
    from harness.run.runner import Runner
    from harness.storage.store import Store

    exists = Path(grid.db).expanduser().exists()
    store = Store(grid.db, readonly=True) if exists else None  # estimating never writes
    runner = Runner(grid, registry, store, progress=False)
    calibrations, n = calibrate_models(runner)
    for label, cal in calibrations.items():
        stand_in = " (its architecture with random weights: the checkpoint is not on disk)" \
            if label in runner.stand_ins else ""
        print(f"calibration {label}{stand_in} on {runner.device} ({grid.compute.describe()}, batch {n}): "
              f"forward {cal.forward_s * 1e3:.3f} ms/image, input gradient +{cal.backward_s * 1e3:.3f} ms/image")
    units = None
    if store is not None:
        with store:
            units = store.units(grid.run_id) if store.runs() else None
    recorded = {} if units is None or units.empty else {u.unit_key: u for u in units.itertuples()}
    done = {key: u.done for key, u in recorded.items()}
    rows = estimate(grid, registry, calibrations, done)
    for row in rows:
        print(f"  {row.unit.describe():<60} forward {row.passes.forward:>12,.0f}  backward {row.passes.backward:>12,.0f}"
              f"  ≈ {duration(row.seconds):>9}" + (f"  (left: {duration(row.remaining_s)})" if row.remaining_s < row.seconds else "")
              + _made(recorded.get(row.unit.key)))
    total, left = sum(r.seconds for r in rows), sum(r.remaining_s for r in rows)
    print(f"estimated wall time: {duration(total)} for {len(rows)} units; {duration(left)} left to run. "
          "Query and early-stopping attacks are counted at their full budget, so this is an upper bound for them.")
    return 0


def cmd_show(args: argparse.Namespace, registry: Registry) -> int:
    from harness.storage.store import Store

    with Store(args.db, readonly=True) as store:
        if args.leaderboard:
            _print_leaderboard(store, args.run, args.format)
        else:
            _print_summary(store, args.run, args.format)
    return 0


def _print_leaderboard(store, run_id, form: str = "text") -> None:
    from harness_reports.comparisons import convergence
    from harness_reports.leaderboard import leaderboard, leaderboard_frame
    from harness_reports.naming import display_names

    run = store.run(run_id)
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


def cmd_report(args: argparse.Namespace, registry: Registry) -> int:
    from harness_reports.render import parse_formats, write_report

    formats = parse_formats(args.format)
    for path in write_report(args.db, args.out, formats, args.run):
        print(path)
    return 0


def _print_summary(store, run_id, form: str = "text") -> None:
    from harness.analysis.aggregate import WORST_ADAPTIVE
    from harness.analysis.summary import warnings_for
    from harness.grid.presets import PRESETS
    from harness_reports.content import main_table
    from harness_reports.terminal import fitted, records

    run = store.run(run_id)
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


def parser(registry: Registry) -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="harness", description="Evaluate classifiers and test-time defenses "
                                  "against adversarial attacks.")
    sub = top.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plugins", help="list every discovered plugin, its parameters and its distribution")
    p.add_argument("--kind", choices=["attack", "defense", "model", "dataset"])
    p.set_defaults(func=cmd_plugins)
    p = sub.add_parser("run", help="evaluate a grid of models × attacks × defenses")
    p.add_argument("--grid", required=True, help="the grid's TOML file")
    p.add_argument("--db", help="results database (overrides the grid's db)")
    p.add_argument("--n-examples", type=int, help="override the grid's n_examples (e.g. a small trial on a CPU)")
    p.add_argument("--preset", help="honest (the default) or paper (the paper's released code); overrides the grid's")
    p.add_argument("--models", help="run only these model labels (comma-separated), e.g. the checkpoints you have")
    p.add_argument("--attacks", help="run only these attack labels (comma-separated); clean accuracy always runs")
    p.add_argument("--defenses", help="run only these defense labels (comma-separated)")
    p.add_argument("--dataset", help="another dataset plugin, at its defaults (e.g. cifar10-jpeg: its root from "
                   "$HARNESS_CIFAR10_JPEG, else ../shared/data/cifar10-jpeg)")
    p.add_argument("--model-dir", help="the weights folder of every model that reads one (RobustBench's model_dir: "
                   "<dir>/<dataset>/<threat model>/<name>.pt)")
    p.add_argument("--dry-run", action="store_true", help="print the work units and their cost; run nothing")
    p.add_argument("--for-gpu", choices=["h100", "h200", "a100", "l40s"], default="h100",
                   help="with --dry-run: the GPU whose hours the summary estimates from FLOPs (default h100)")
    p.add_argument("--estimate", action="store_true",
                   help="calibrate on this device, then predict each unit's and the grid's wall time; run nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--resume-from-device", choices=["cpu", "cuda"],
                   help="continue a run this database holds from another kind of device; its rows and this machine's "
                   "draw different random numbers, and the report says the run mixes them")
    p.add_argument("--threads", type=int, help="torch's CPU threads for this run (overrides the grid's threads), "
                   "e.g. 1 for a long run beside other work")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local (default): this process; ray: one Ray task per unit or shard, one GPU each")
    p.add_argument("--ray-address", help="join this Ray cluster (e.g. auto, or ray://head:10001); default: start one")
    p.add_argument("--shard-size", type=int, help="with --executor ray: split units into ranges of this many examples "
                   "(a multiple of batch_size) so one large unit spreads over workers")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("show", help="print a Table-1-style summary of a run")
    p.add_argument("--db", required=True)
    p.add_argument("--run", help="run id (a prefix is enough); default: the latest")
    p.add_argument("--format", choices=["text", "csv", "json"], default="text",
                   help="text (default): the report's main table fitted to the terminal; csv, json: one row per cell")
    p.add_argument("--leaderboard", action="store_true",
                   help="rank each model × defense by its adaptive worst case, with the attacks that set it, the "
                   "paired difference against no defense, convergence and passes per prediction")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("compare", help="compare two runs example by example (paired differences, McNemar)",
                       description="Match two runs' rows by model, attack, defense, repeat and example, and compare "
                       "every shared cell with paired statistics. With one --db and no --run: its two latest runs.")
    p.add_argument("--db", action=_Side, required=True, help="a results database (give it twice for two databases)")
    p.add_argument("--run", action=_Side, help="run id (a prefix is enough) in the --db before it; default: its latest")
    p.add_argument("--fail-if-differs", type=float, metavar="POINTS",
                   help="exit with status 1 if any cell's accuracies differ by more than POINTS percentage points")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("report", help="render the paper's tables and figures (HTML, LaTeX, markdown) from a database")
    p.add_argument("--db", required=True, help="the results database a grid wrote")
    p.add_argument("--out", required=True, help="folder for report.html, report.md, *.tex and figures/")
    p.add_argument("--format", default="html,latex,markdown", help="comma-separated: html, latex, markdown")
    p.add_argument("--run", help="run id (a prefix is enough); default: the latest")
    p.set_defaults(func=cmd_report)
    for command in registry.commands():  # e.g. `harness train`, added by the built-in models package
        p = sub.add_parser(command.name, help=command.help)
        command.configure(p)
        p.set_defaults(func=command.run)
    return top


def _announce(argv: list[str]) -> None:
    """The first line of a run, before the plugins (and torch) are imported: something within a second."""
    if argv[:1] == ["run"] and "--quiet" not in argv and "--dry-run" not in argv:
        grid = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--grid"), "the grid")
        print(f"harness run: loading the plugins and {grid}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    # Ctrl-C stops a run cleanly even where the parent left SIGINT ignored (a job started in the background of a
    # script, a test runner): the one-line message and exit status 130 below, never silence
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _announce(sys.argv[1:] if argv is None else argv)
        registry = Registry()
        for line in registry.skipped:   # a broken plugin package: one line; everything else works
            print(f"harness: {line}", file=sys.stderr)
        args = parser(registry).parse_args(argv)
        return args.func(args, registry)
    except PluginCrash as exc:  # a plugin's own failure: say which, then show where in its code
        print(f"harness: error: {exc}; its traceback follows", file=sys.stderr)
        traceback.print_exception(exc.cause, file=sys.stderr)
        return 2
    except HarnessError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted; every committed batch is kept, and the same command resumes", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `harness run --dry-run | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception:  # noqa: BLE001 - a real bug: show where, then say so
        traceback.print_exc()
        print(f"harness: internal error: {BUG_REPORT}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
