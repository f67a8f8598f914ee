"""The ``harness`` command: plugins, run, show, report, train."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from harness.errors import HarnessError


def _registry():
    from harness.registry import Registry

    return Registry()


def cmd_plugins(args: argparse.Namespace) -> int:
    registry = _registry()
    from harness.specs import Kind

    for kind in Kind:
        specs = [s for s in registry.all() if s.kind is kind]
        if args.kind and kind.value != args.kind:
            continue
        print(f"{kind.value}s:")
        for spec in specs:
            print(f"  {spec.name}  —  {spec.description}  [{spec.distribution}]")
            for p in spec.params:
                print(f"      {p.name}: {p.type_name()} = {p.default_text()}" + (f"  # {p.help}" if p.help else ""))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from harness.config import load_grid

    registry = _registry()
    if args.n_examples is not None and args.n_examples < 1:
        raise HarnessError(f"--n-examples must be >= 1, got {args.n_examples}")
    grid = load_grid(args.grid, registry, db_override=args.db, n_override=args.n_examples)
    if args.dry_run:
        return _dry_run(grid, registry)
    if args.estimate:
        return _estimate(grid, registry)
    from harness.runner import run_grid
    from harness.store import Store

    store = Store(grid.db)
    if args.executor == "ray":
        from harness.ray_executor import run_with_ray

        run_id = run_with_ray(grid, registry, store, address=args.ray_address, shard_size=args.shard_size,
                              progress=not args.quiet)
    else:
        if args.shard_size or args.ray_address:
            raise HarnessError("--shard-size and --ray-address apply to --executor ray only")
        run_id = run_grid(grid, registry, store=store, progress=not args.quiet)
    _print_summary(store, run_id)
    print(f"results in {grid.db}; tables and figures: harness report --db {grid.db} --out DIR")
    return 0


def _dry_run(grid, registry) -> int:
    from harness.plan import build, plan, unit_cost
    from harness.specs import Kind

    units = plan(grid, registry)
    total_f = total_b = 0.0
    print(f"run {grid.run_id}: {len(units)} work units on {grid.n_examples} examples of {grid.dataset.label}")
    for unit in units:
        cost = unit_cost(unit, grid, registry)
        total_f, total_b = total_f + cost.forward, total_b + cost.backward
        print(f"  {unit.key}  {unit.describe():<60}  defenses: {', '.join(d.label for d in unit.defenses)}  "
              f"forward {cost.forward:,.0f}  backward {cost.backward:,.0f}")
    print(f"total: forward {total_f:,.0f}  backward {total_b:,.0f} passes of one image through the model")
    for index, entry in enumerate(grid.models):
        model = build(registry, entry, Kind.MODEL)
        getattr(model, "validate", lambda: None)()  # e.g. the RobustBench ID exists
        for path in getattr(model, "files", lambda: [])():
            state = "present" if Path(path).expanduser().exists() else "MISSING"
            print(f"  needs file: {path}  [{state}]  (models[{index}] {entry.label!r})")
    return 0


def _estimate(grid, registry) -> int:
    from harness.estimate import calibrate_models, duration, estimate
    from harness.runner import Runner
    from harness.store import Store

    exists = Path(grid.db).expanduser().exists()
    store = Store(grid.db, readonly=True) if exists else None  # estimating never writes
    runner = Runner(grid, registry, store, progress=False)
    calibrations, n = calibrate_models(runner)
    for label, cal in calibrations.items():
        print(f"calibration {label} on {runner.device} ({grid.compute.describe()}, batch {n}): "
              f"forward {cal.forward_s * 1e3:.3f} ms/image, input gradient +{cal.backward_s * 1e3:.3f} ms/image")
    done = {}
    if store is not None and store.runs() and "units" in store.db.table_names():
        units = store.units(grid.run_id)
        done = {} if units.empty else dict(zip(units.unit_key, units.done))
    rows = estimate(grid, registry, calibrations, done)
    for row in rows:
        print(f"  {row.unit.describe():<60} forward {row.passes.forward:>12,.0f}  backward {row.passes.backward:>12,.0f}"
              f"  ≈ {duration(row.seconds):>9}" + (f"  (left: {duration(row.remaining_s)})" if row.remaining_s < row.seconds else ""))
    total, left = sum(r.seconds for r in rows), sum(r.remaining_s for r in rows)
    print(f"estimated wall time: {duration(total)} for {len(rows)} units; {duration(left)} left to run. "
          "Query and early-stopping attacks are counted at their full budget, so this is an upper bound for them.")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from harness.config import Entry
    from harness.errors import PluginError
    from harness.plan import build
    from harness.specs import Kind
    from harness.train import TrainConfig, train

    registry = _registry()
    dataset = build(registry, Entry(args.dataset, args.dataset), Kind.DATASET)
    if not hasattr(dataset, "train_arrays"):
        raise PluginError(f"dataset {args.dataset!r} has no training split to train on")
    train_x, train_y = dataset.train_arrays()
    test = dataset.load(args.n_test)
    cfg = TrainConfig(arch=args.arch, dataset=args.dataset, out=args.out, method=args.method, eps=args.eps, beta=args.beta,
                      epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device)
    record = train(cfg, train_x, train_y, test.x, test.y, progress=not args.quiet)
    record["command"] = "harness " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("harness") else None
    Path(args.out).with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"best epoch {record['best_epoch']}: test clean {record['test_clean']:.4f}, "
          f"PGD-10 at eps {args.eps:g} {record['test_pgd10']:.4f} -> {args.out}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from harness.store import Store

    if not Path(args.db).exists():
        raise LookupError(f"{args.db} does not exist; run a grid first: harness run --grid FILE")
    _print_summary(Store(args.db), args.run)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from reports.render import FORMATS, write_report

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise HarnessError(f"--format {args.format!r}: unknown format(s) {', '.join(unknown) or '(none given)'}; "
                           f"choose from {', '.join(FORMATS)}, comma-separated")
    if not Path(args.db).exists():
        raise LookupError(f"{args.db} does not exist; run a grid first: harness run --grid FILE")
    for path in write_report(args.db, args.out, formats, args.run):
        print(path)
    return 0


def _print_summary(store, run_id) -> None:
    from harness.summary import warnings_for, wide_table

    run, table = wide_table(store, run_id)
    print(f"run {run['run_id']} — {run['dataset']}, n={run['n_examples']}, {run['norm']} eps={run['eps']:.5g}, "
          f"repeats={run['repeats']}, device {run['device']}")
    print("accuracy in %, mean ± std over repeats; worst case = correct under every attack, clean included")
    print(table.to_string())
    for note in warnings_for(store, run["run_id"]):
        print(note)


def parser() -> argparse.ArgumentParser:
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
    p.add_argument("--dry-run", action="store_true", help="print the work units and their cost; run nothing")
    p.add_argument("--estimate", action="store_true",
                   help="calibrate on this device, then predict each unit's and the grid's wall time; run nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local (default): this process; ray: one Ray task per unit or shard, one GPU each")
    p.add_argument("--ray-address", help="join this Ray cluster (e.g. auto, or ray://head:10001); default: start one")
    p.add_argument("--shard-size", type=int, help="with --executor ray: split units into ranges of this many examples "
                   "(a multiple of batch_size) so one large unit spreads over workers")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("train", help="train a small (robust) model on a dataset plugin's training split")
    p.add_argument("--dataset", required=True)
    p.add_argument("--arch", default="small-cnn")
    p.add_argument("--method", choices=["standard", "fgsm-rs", "pgd", "trades"], default="fgsm-rs")
    p.add_argument("--beta", type=float, default=6.0, help="TRADES' β")
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-test", type=int, default=497, help="test examples for the final accuracies")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("show", help="print a Table-1-style summary of a run")
    p.add_argument("--db", required=True)
    p.add_argument("--run", help="run id (a prefix is enough); default: the latest")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("report", help="render the paper's tables and figures (HTML, LaTeX, markdown) from a database")
    p.add_argument("--db", required=True, help="the results database a grid wrote")
    p.add_argument("--out", required=True, help="folder for report.html, report.md, *.tex and figures/")
    p.add_argument("--format", default="html,latex,markdown", help="comma-separated: html, latex, markdown")
    p.add_argument("--run", help="run id (a prefix is enough); default: the latest")
    p.set_defaults(func=cmd_report)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except (HarnessError, LookupError) as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
