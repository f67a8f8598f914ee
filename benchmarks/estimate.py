"""How good is `harness run --estimate`? Predict a grid's units, run it, compare unit by unit.

    python benchmarks/estimate.py [--grid configs/quickstart-digits.toml]

Writes benchmarks/results/estimate-<device>.json: predicted and measured seconds per unit, their
ratio, and the totals.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import write  # noqa: E402
from harness.api.registry import Registry  # noqa: E402
from harness.grid.reader import load_grid  # noqa: E402
from harness.run.estimate import calibrate_models, estimate  # noqa: E402
from harness.run.runner import Runner  # noqa: E402
from harness.storage.store import Store  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default="configs/quickstart-digits.toml")
    args = ap.parse_args()
    registry = Registry()
    with tempfile.TemporaryDirectory() as tmp:
        grid = load_grid(args.grid, registry, db_override=str(Path(tmp) / "run.sqlite"))
        runner = Runner(grid, Store(grid.db), progress=False)
        start = time.perf_counter()
        calibrations, _ = calibrate_models(runner)
        calibration_s = time.perf_counter() - start
        predicted = {r.unit.key: r for r in estimate(grid, calibrations)}
        start = time.perf_counter()
        runner.run()
        wall = time.perf_counter() - start
        measured = dict(zip(runner.store.units(grid.run_id).unit_key, runner.store.units(grid.run_id).seconds))
    rows = []
    for key, row in predicted.items():
        rows.append({"unit": row.unit.describe(), "predicted_s": row.seconds, "measured_s": measured[key],
                     "measured_over_predicted": measured[key] / row.seconds if row.seconds else None})
        print(f"  {row.unit.describe():<60} predicted {row.seconds:8.2f} s   measured {measured[key]:8.2f} s")
    total_p, total_m = sum(r["predicted_s"] for r in rows), sum(r["measured_s"] for r in rows)
    print(f"total: predicted {total_p:.1f} s, measured {total_m:.1f} s in units ({wall:.1f} s wall, calibration "
          f"{calibration_s:.1f} s)")
    print(f"wrote {write('estimate', runner.device, {'grid': args.grid, 'units': rows, 'predicted_s': total_p, 'measured_units_s': total_m, 'wall_s': wall, 'calibration_s': calibration_s})}")


if __name__ == "__main__":
    main()
