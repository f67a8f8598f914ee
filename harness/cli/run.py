"""`harness run`: evaluate a grid, or say what it would cost (--dry-run, --estimate)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from harness.api.errors import HarnessError
from harness.api.registry import Registry
from harness.cli.show import print_summary

if TYPE_CHECKING:
    from harness.grid.config import GridConfig


def cmd_run(args: argparse.Namespace, registry: Registry) -> int:
    from harness.grid.config import Overrides
    from harness.grid.reader import load_grid

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

        grid = resolve_batch_size(grid)
        if not args.quiet:
            print(f"batch_size = \"auto\": {grid.batch_size} on {grid.device_type}", file=sys.stderr, flush=True)
    if args.shard_size is not None and args.shard_size % grid.batch_size and args.shard_size < grid.n_examples:
        raise HarnessError(f"--shard-size {args.shard_size} must be a multiple of the grid's batch_size "
                           f"{grid.batch_size}, so that shards draw the same random numbers as one pass over a unit")
    grid.apply_threads()
    if args.dry_run:
        return _dry_run(grid, args.for_gpu)
    if args.estimate:
        return _estimate(grid)
    from harness.grid.plan import plan
    from harness.run.runner import Runner

    if args.executor == "ray":
        from harness.run.ray_executor import on_cluster

        grid = on_cluster(grid, address=args.ray_address)   # the workers' device, not this machine's
    if not args.quiet:
        print(f"run {grid.run_id}: {len(plan(grid))} work units on {grid.n_examples} examples of "
              f"{grid.dataset.label}; loading the data and {len(grid.models)} model(s)", file=sys.stderr, flush=True)
    if args.executor == "ray":
        import torch

        from harness.run.ray_executor import run_with_ray

        runner = Runner(grid, progress=not args.quiet, device=torch.device("cpu"))
        run_id = run_with_ray(grid, runner=runner, address=args.ray_address, shard_size=args.shard_size)
    else:
        runner = Runner(grid, progress=not args.quiet)  # opens the database once every check has passed
        run_id = runner.run()
    with runner.store as store:   # closing folds SQLite's write-ahead log into the file
        print_summary(store, store.run(run_id))
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


def _dry_run(grid: GridConfig, gpu_name: str) -> int:
    from harness.api.cost import Passes
    from harness.grid.plan import plan, unit_cost
    from harness.run.flops import EFFICIENCY, GPUS, gpu_hours

    units = plan(grid)
    total = Passes(0, 0)
    by_cell: dict[tuple[str, str], Passes] = {}
    print(f"run {grid.run_id}: {len(units)} work units on {grid.n_examples} examples of {grid.dataset.label}")
    for unit in units:
        cost = unit_cost(unit, grid)
        total = total + cost
        cell = (unit.model.label, unit.attack.named)
        by_cell[cell] = by_cell.get(cell, Passes(0, 0)) + cost
        print(f"  {unit.key}  {unit.describe():<60}  defenses: {', '.join(d.named for d in unit.defenses)}  "
              f"forward {cost.forward:,.0f}  backward {cost.backward:,.0f}")
    print(f"total: forward {total.forward:,.0f}  backward {total.backward:,.0f} passes of one image through the model")
    flops = {}
    for index, entry in enumerate(grid.models):
        model = entry.built
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


def _estimate(grid: GridConfig) -> int:
    from harness.run.estimate import Recorded, calibrate_models, estimate
    from harness.run.progress import duration
    from harness.run.runner import Runner
    from harness.storage.store import Store

    exists = Path(grid.db).expanduser().exists()
    store = Store(grid.db, readonly=True) if exists else None  # estimating never writes
    runner = Runner(grid, store, progress=False)
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
    rows = estimate(grid, calibrations, {key: Recorded(int(u.done), float(u.seconds or 0.0))
                                         for key, u in recorded.items()})
    for row in rows:
        left = ""
        if row.remaining_s < row.seconds or row.paced_by:
            left = f"  (left: {duration(row.remaining_s)}" + (f" at {row.pace:.1f}× as measured by {row.paced_by}"
                                                               if row.paced_by and row.remaining_s else "") + ")"
        print(f"  {row.unit.describe():<60} forward {row.passes.forward:>12,.0f}  backward {row.passes.backward:>12,.0f}"
              f"  ≈ {duration(row.seconds):>9}" + left + _made(recorded.get(row.unit.key)))
    total, left_s = sum(r.seconds for r in rows), sum(r.remaining_s for r in rows)
    paced = any(r.paced_by and r.remaining_s for r in rows)
    print(f"estimated wall time: {duration(total)} for {len(rows)} units at the calibrated cost; {duration(left_s)} "
          "left to run" + (", paced as the database measured" if paced else "") + ". Query and early-stopping "
          "attacks are counted at their full budget of passes, an upper bound for them.")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``run`` sub-command and its options."""
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
                   help="continue a run this database holds from another type of device; its rows and this machine's "
                   "draw different random numbers, and the report says the run mixes them")
    p.add_argument("--threads", type=int, help="torch's CPU threads for this run (overrides the grid's threads), "
                   "e.g. 1 for a long run beside other work")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local (default): this process; ray: one Ray task per unit or shard, one GPU each")
    p.add_argument("--ray-address", help="join this Ray cluster (e.g. auto, or ray://head:10001); default: start one")
    p.add_argument("--shard-size", type=int, help="with --executor ray: split units into ranges of this many examples "
                   "(a multiple of batch_size) so one large unit spreads over workers")
    p.set_defaults(func=cmd_run)
