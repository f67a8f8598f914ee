"""`harness run --estimate`: predict each unit's wall time from a short calibration on the actual device.

A unit's cost is counted in forward and backward passes of one image (each plugin declares its own,
see ``Attack.passes``; query attacks and early-stopping attacks declare their budget, an upper
bound). Calibration times one batched forward pass and one forward + input-gradient pass of each
model, at the grid's batch size, precision and memory format. Seconds = passes × seconds per pass.

What is left of a run already under way is paced by the database: a unit that has examples runs at the pace
it measured (its seconds over the calibrated seconds of those examples), and a unit still to run at the median
pace of the recorded units of its attack plugin. Calibration times full batches on an idle device; an attack
that queries ever smaller subsets (RayS's binary search) or a machine shared with other work runs slower, and
the pace says by how much.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from harness.api.errors import HarnessError
from harness.api.interfaces import Passes
from harness.grid.config import GridConfig
from harness.grid.plan import Unit, plan, unit_cost
from harness.run.device import synchronize

if TYPE_CHECKING:
    from harness.run.runner import Runner


@dataclass(frozen=True)
class Calibration:
    forward_s: float    # seconds per image for one forward pass, no gradient
    backward_s: float   # extra seconds per image when the pass also takes the input gradient

    def seconds(self, passes: Passes) -> float:
        return passes.forward * self.forward_s + passes.backward * self.backward_s


@dataclass(frozen=True)
class Recorded:
    """What a database holds of a unit: its examples finished and the seconds they took."""

    done: int
    seconds: float


@dataclass(frozen=True)
class UnitEstimate:
    unit: Unit
    passes: Passes
    seconds: float       # the whole unit at the calibrated cost
    remaining_s: float   # what is left of it, given the examples a database already holds, at ``pace``
    pace: float = 1.0    # measured over calibrated seconds (1 where nothing of its attack is measured yet)
    paced_by: str = ""   # where the pace comes from: "" (the calibration), "itself" or "its attack"


def _time(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up: cuDNN autotuning, lazy allocation, torch.compile
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):  # the minimum: the least disturbed by other work on the machine
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def calibrate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, grid: GridConfig, repeats: int = 3) -> Calibration:
    device = x.device

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def forward_backward() -> None:
        with torch.enable_grad():
            point = x.detach().clone().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(point), y, reduction="sum"), point)

    with grid.compute.context(device):
        f = _time(forward, device, repeats)
        fb = _time(forward_backward, device, repeats)
    return Calibration(f / len(x), max(fb - f, 0.0) / len(x))


def calibrate_models(runner: "Runner") -> tuple[dict[str, Calibration], int]:
    """Calibrate every model of the runner's grid on its first batch of data; (label → calibration, batch).

    A model whose weights are not on disk is timed as its architecture with random weights (the time does not
    depend on them), on random inputs where the data is not there either; ``stand_ins`` names those models."""
    grid = runner.grid
    n = min(grid.batch_size, grid.n_examples)
    try:
        data = runner.load_data()
        n = min(grid.batch_size, len(data.x))
        x, y = data.x[:n].to(runner.device), data.y[:n].to(runner.device)
    except HarnessError:
        x = y = None
    out = {}
    runner.stand_ins.clear()
    for i, entry in enumerate(grid.models):
        source = entry.built
        if all(path.exists() for path in source.source_files()) and x is not None:
            out[entry.label] = calibrate(runner.load_model(i).module, x, y, grid)
            continue
        built = source.architecture()
        if built is None:
            raise HarnessError(f"--estimate: model {entry.label!r} has no weights on disk and its plugin cannot build "
                               "its architecture without them; place its files (--dry-run lists them) or use --dry-run")
        module, shape = built
        module = grid.compute.prepare_model(module.to(runner.device).requires_grad_(False))
        xs = torch.rand((n, *shape), device=runner.device) if x is None or tuple(x.shape[1:]) != shape else x
        logits = module(xs[:1])
        ys = torch.randint(0, logits.shape[1], (n,), device=runner.device)
        out[entry.label] = calibrate(module, xs, ys, grid)
        runner.stand_ins.append(entry.label)
    return out, n


def estimate(grid: GridConfig, calibrations: dict[str, Calibration],
             recorded: Mapping[str, Recorded] | None = None) -> list[UnitEstimate]:
    """Per unit: passes, predicted seconds, and the part not yet in the database, at the pace it measured.

    ``recorded``: unit key → what the database holds of it (absent: nothing)."""
    recorded = recorded or {}
    units = plan(grid)
    planned = {}
    own: dict[str, float] = {}      # unit key → its measured pace
    for unit in units:
        passes = unit_cost(unit, grid)
        planned[unit.key] = passes, calibrations[unit.model.label].seconds(passes)
        rec = recorded.get(unit.key)
        expected = planned[unit.key][1] * (rec.done / grid.n_examples if rec else 0)
        if rec is not None and rec.seconds > 0 and expected > 0:
            own[unit.key] = rec.seconds / expected
    by_attack: dict[str, list[float]] = {}
    for unit in units:
        if unit.key in own:
            by_attack.setdefault(unit.attack.plugin, []).append(own[unit.key])
    out = []
    for unit in units:
        passes, seconds = planned[unit.key]
        rec = recorded.get(unit.key)
        left = max(grid.n_examples - (rec.done if rec else 0), 0) / grid.n_examples
        if unit.key in own:
            pace, paced_by = own[unit.key], "itself"
        elif unit.attack.plugin in by_attack:
            pace, paced_by = statistics.median(by_attack[unit.attack.plugin]), "its attack"
        else:
            pace, paced_by = 1.0, ""
        out.append(UnitEstimate(unit, passes, seconds, seconds * left * pace, pace, paced_by))
    return out
