"""Are the units honest about their work? Count every pass each unit makes through the model and hold it
against the unit's floor: the passes its attack's loop cannot avoid plus the draws its scoring needs.

    python benchmarks/passes.py [--grid configs/quickstart.toml --grid configs/passes-fastat40.toml] [--threads 1]

Counting passes does not depend on the machine (a few images tell), so every grid runs on its own
``n_examples`` (``--n-examples`` overrides it) into a temporary database. Prints, per unit: the passes
made and the floor, per example, forward/backward, and their ratio; the targets are ≤ 1.2 for a transfer
unit (an attack on the bare model) and ≤ 1.5 for an adaptive one. Writes benchmarks/results/passes.json (keeping the rows of grids not run this time).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import RESULTS  # noqa: E402
from harness.api.cost import Passes, ratio  # noqa: E402
from harness.api.registry import Registry  # noqa: E402
from harness.grid.config import Overrides  # noqa: E402
from harness.grid.reader import load_grid  # noqa: E402
from harness.run.runner import run_grid  # noqa: E402
from harness.storage.store import Store  # noqa: E402

GRIDS = ("configs/quickstart.toml", "configs/passes-fastat40.toml")
TARGET = {0: 1.2, 1: 1.5}   # adaptive → the largest ratio allowed


def count(grid_file: str, registry: Registry, n_examples: int | None, threads: int | None) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        grid = load_grid(grid_file, registry, overrides=Overrides(db=str(Path(tmp) / "passes.sqlite"),
                                                                  n_examples=n_examples, threads=threads))
        grid.apply_threads()
        with Store(grid.db) as store:
            run_grid(grid, store=store, progress=False)
            units = store.units(grid.run_id)
    rows = []
    for u in units.itertuples():
        n = u.total
        counted = Passes(u.counted_forward / n, u.counted_backward / n)
        floor = Passes(u.floor_forward / n, u.floor_backward / n)
        rows.append({"grid": grid_file, "model": u.model, "attack": u.attack, "defenses": json.loads(u.defenses),
                     "repeat": u.repeat, "adaptive": bool(u.adaptive), "n": n,
                     "counted": [counted.forward, counted.backward], "floor": [floor.forward, floor.backward],
                     "ratio": ratio(counted, floor), "target": TARGET[int(u.adaptive)]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", action="append", help=f"grid files (default: {', '.join(GRIDS)})")
    ap.add_argument("--n-examples", type=int, help="override every grid's n_examples")
    ap.add_argument("--threads", type=int, help="torch's CPU threads")
    args = ap.parse_args()
    registry = Registry()
    rows = [row for grid in (args.grid or GRIDS) for row in count(grid, registry, args.n_examples, args.threads)]
    print(f"{'grid':<30} {'unit':<58} {'made f/b per ex.':>18} {'floor f/b per ex.':>18} {'ratio':>6}  target")
    for r in rows:
        unit = f"{r['model']} × {r['attack']} [{r['defenses'][0] if r['adaptive'] else 'bare model'}] r{r['repeat']}"
        verdict = "ok" if r["ratio"] <= r["target"] else "ABOVE"
        print(f"{Path(r['grid']).name:<30} {unit:<58} {r['counted'][0]:>8.1f}/{r['counted'][1]:<9.1f} "
              f"{r['floor'][0]:>8.1f}/{r['floor'][1]:<9.1f} {r['ratio']:>6.3f}  ≤ {r['target']} {verdict}")
    above = [r for r in rows if r["ratio"] > r["target"]]
    print(f"{len(rows) - len(above)} of {len(rows)} units within their target")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "passes.json"
    ran = {r["grid"] for r in rows}   # the rows of grids not run this time are kept
    kept = [r for r in json.loads(path.read_text())] if path.exists() else []
    path.write_text(json.dumps([r for r in kept if r["grid"] not in ran] + rows, indent=1) + "\n")
    print(f"wrote {path}")
    sys.exit(1 if above else 0)


if __name__ == "__main__":
    main()
