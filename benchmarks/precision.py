"""Does lower precision change the robust accuracy? The same grid under fp32, tf32 and bf16, through the harness.

    python benchmarks/precision.py                                   # Fashion-MNIST CNN, 1,000 examples (CPU-sized)
    python benchmarks/precision.py --grid configs/precision-cifar.toml --precisions fp32,tf32,bf16   # on a GPU

The bar: under bf16 and tf32, robust accuracy within 0.5 points of fp32 for Hedge, PGD and CW
on the same 1,000 examples. Each precision is compared with fp32 example by example, as
`harness compare --fail-if-differs 0.5` does (paired difference, changed predictions, McNemar p).
Writes benchmarks/results/precision-<device>.json with every accuracy, the largest gap and the wall
time per precision.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402

from benchmarks.common import write  # noqa: E402
from harness.analysis.compare import compare_runs  # noqa: E402
from harness.api.registry import Registry  # noqa: E402
from harness.grid.config import Overrides  # noqa: E402
from harness.grid.reader import load_grid  # noqa: E402
from harness.run.precision import Compute, Precision  # noqa: E402
from harness.run.runner import run_grid  # noqa: E402
from harness.storage.store import Store  # noqa: E402

BAR = 0.5  # percentage points


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default="configs/precision-fmnist.toml")
    ap.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, tf32, bf16 (fp32 comes first)")
    ap.add_argument("--channels-last", action="store_true")
    args = ap.parse_args()
    registry = Registry()
    names = args.precisions.split(",")
    if names[0] != "fp32":
        names = ["fp32"] + [n for n in names if n != "fp32"]
    accuracies, seconds, runs, changed = {}, {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            grid = load_grid(args.grid, registry, overrides=Overrides(db=str(Path(tmp) / f"{name}.sqlite")))
            grid = dataclasses.replace(grid, compute=Compute(Precision(name), channels_last=args.channels_last))
            store = Store(grid.db)
            start = time.perf_counter()
            run_grid(grid, store=store, progress=False)
            seconds[name] = time.perf_counter() - start
            runs[name] = (store, store.run(grid.run_id))
            acc = store.accuracy(grid.run_id)
            accuracies[name] = {f"{r.defense}/{r.attack}": round(r.acc * 100, 2) for r in acc.itertuples()}
            print(f"{name:>5}: {seconds[name]:7.1f} s  " + "  ".join(f"{k} {v:.2f}" for k, v in accuracies[name].items()))
        gaps = {}
        for name in names[1:]:
            result = compare_runs(runs["fp32"], runs[name])
            print(f"fp32 (A) against {name} (B), example by example:\n{result.table().to_string()}")
            gaps[name] = max(abs(c.paired.difference) for c in result.cells)
            changed[name] = max(c.changed for c in result.cells)
    device = torch.device(grid.device_type)
    for name, gap in gaps.items():
        print(f"{name}: largest gap to fp32 {gap:.2f} points ({'within' if gap <= BAR else 'OUTSIDE'} the {BAR}-point bar)")
    path = write("precision", device, {"grid": args.grid, "n_examples": grid.n_examples, "accuracy": accuracies,
                                       "largest_gap_to_fp32": gaps, "largest_changed_share": changed, "seconds": seconds, "bar_points": BAR,
                                       "channels_last": args.channels_last})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
