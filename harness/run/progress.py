"""Progress of a whole grid: one bar above the per-unit bars, or a plain line every so often.

The grid's work is weighed with the cost model (each unit's forward and backward passes, see
``harness.grid.plan.unit_cost``), so a PGD unit counts for far more than a clean one, and the ETA is that
remaining work at the rate measured so far in this process. A resumed run starts from what the
database already holds. Where the output is not a terminal (CI, ``nohup``, a log file) a bar would
write a line per update, so a plain line is printed every ``every_s`` seconds instead.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import IO

from tqdm import tqdm

from harness.api.interfaces import Passes

# An input-gradient pass costs about twice a forward pass on top of it (autograd's rule of thumb; the
# calibration of `harness run --estimate` measures 1.5–2.5 on CPUs and GPUs), and only ratios matter here.
BACKWARD_WEIGHT = 2.0


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def weight(passes: Passes) -> float:
    return passes.forward + BACKWARD_WEIGHT * passes.backward


@dataclass(frozen=True)
class UnitWork:
    key: str
    passes: Passes
    examples: int      # the unit's total
    done: int          # examples already committed (a resumed run)


class GridProgress:
    """Call ``advance(key, examples)`` as a unit's examples are committed, and ``close()`` at the end."""

    def __init__(self, units: list[UnitWork], *, enabled: bool = True, stream: IO[str] | None = None,
                 every_s: float = 60.0):
        self.stream = stream or sys.stderr
        self.enabled, self.every_s = enabled, every_s
        self.tty = enabled and self.stream.isatty()
        self.per_example = {u.key: weight(u.passes) / max(u.examples, 1) for u in units}
        self.left = {u.key: u.examples - u.done for u in units}
        self.credited = {u.key: 0.0 for u in units}   # passes made inside a batch not yet committed
        self.total = sum(weight(u.passes) for u in units)
        self.initial = sum(self.per_example[u.key] * u.done for u in units)
        self.done = self.initial
        self.started = self.last_line = time.monotonic()
        # the units go into the description: tqdm writes a postfix after ", ", which read "| , 1/3 units"
        self.bar = tqdm(total=self.total, initial=self.initial, desc=self._description(), position=0,
                        disable=not self.tty, dynamic_ncols=True, smoothing=0.05, file=self.stream,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")
        if enabled and not self.tty:
            self._line()

    @property
    def unit_bars(self) -> bool:
        """Whether per-unit bars belong under this one (on a terminal only)."""
        return self.tty

    def _description(self) -> str:
        return f"grid, {self._units_text()}"

    def _units_text(self) -> str:
        finished = sum(1 for left in self.left.values() if left <= 0)
        return f"{finished}/{len(self.left)} units"

    def eta_s(self) -> float | None:
        """Seconds left at the rate measured in this process; None before anything was measured."""
        elapsed, progressed = time.monotonic() - self.started, self.done - self.initial
        if progressed <= 0 or elapsed <= 0:
            return None
        return (self.total - self.done) / (progressed / elapsed)

    def advance(self, key: str, examples: int) -> None:
        self.left[key] -= examples
        step = self.per_example[key] * examples - self.credited[key]   # what passing() has not yet counted
        self.credited[key] = 0.0
        self._step(step)

    def passing(self, key: str, passes: Passes, examples: int) -> None:
        """Passes made inside a batch of ``examples`` not yet committed: counted at once, up to 95 % of the
        batch's planned work (a unit may make more passes than planned, or fewer; advance settles it)."""
        room = 0.95 * self.per_example[key] * examples - self.credited[key]
        step = min(weight(passes), max(room, 0.0))
        if step > 0:
            self.credited[key] += step
            self._step(step)

    def _step(self, step: float) -> None:
        self.done += step
        self.bar.set_description_str(self._description(), refresh=False)
        self.bar.update(step)
        if self.enabled and not self.tty and time.monotonic() - self.last_line >= self.every_s:
            self._line()

    def _line(self) -> None:
        self.last_line = time.monotonic()
        eta = self.eta_s()
        share = 100 * self.done / self.total if self.total else 100.0
        print(f"grid: {share:.0f}% of the work done, {self._units_text()}, elapsed "
              f"{duration(self.last_line - self.started)}, "
              + ("ETA unknown until a batch finishes" if eta is None else f"ETA {duration(eta)}"),
              file=self.stream, flush=True)

    def close(self) -> None:
        self.bar.close()
        if self.enabled and not self.tty:
            self._line()
