"""The scheduler: the paper's protocol over keyed, resumable work units.

For each model, attack and repeat the adversarial examples are generated once, checked, and then
every defense is evaluated on those same examples (``harness.run.evaluator``). Rows are committed batch by
batch; units are claimed, so several processes share a grid, and a run resumes where it stopped. The data
and the models come from ``harness.run.loader``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from typing import Iterator

import torch
from tqdm import tqdm

from harness.api.errors import HarnessError
from harness.api.interfaces import DataSource, LabelledData, LoadedModel, Passes
from harness.grid.config import GridConfig
from harness.grid.plan import Unit, plan, unit_cost
from harness.run.batch import Batch
from harness.run.checks import check_model_fits
from harness.run.counting import PassCounter
from harness.run.evaluator import Evaluator
from harness.run.loader import Loader, check_data_fits
from harness.run.progress import GridProgress, UnitWork, weight
from harness.run.provenance import run_record
from harness.storage.records import UnitRecord
from harness.storage.store import Heartbeat, Owner, Store

log = logging.getLogger("harness")


class Runner:
    def __init__(self, grid: GridConfig, store: Store | None = None, *, progress: bool = True,
                 device: torch.device | None = None):
        self.grid, self.progress, self._store = grid, progress, store
        # the grid's type of device, fixed when it was loaded (part of its identity); a Ray driver checks on its CPU
        self.device = device or torch.device(grid.device_type)
        self.poll_s = 2.0  # how often a process waiting on others' units looks again
        self.report_every_s = 60.0  # the plain progress line's interval where stderr is not a terminal
        self.loader = Loader(grid, self.device)          # the data and the models
        self.evaluator = Evaluator(grid, self.device)    # a unit's batches

    @property
    def store(self) -> Store:
        if self._store is None:  # opened on first use: --estimate loads data and models but writes nothing
            self._store = Store(self.grid.db)
        return self._store

    def dataset(self) -> DataSource:
        return self.loader.dataset()

    def load_data(self) -> LabelledData:
        return self.loader.load_data()

    @property
    def loads(self) -> int:
        return self.loader.loads

    @property
    def stand_ins(self) -> list[str]:
        return self.loader.stand_ins

    def load_model(self, index: int, *, eager: bool = False) -> LoadedModel:
        return self.loader.load_model(index, eager=eager)

    def batches(self, unit: Unit, loaded: LoadedModel, data: LabelledData, first: int, last: int) -> Iterator[Batch]:
        return self.evaluator.batches(unit, loaded, data, first, last)

    def prepare(self) -> tuple[LabelledData, list[Unit]]:
        """Check the database, load the data onto the device, check every model, then record the run and
        its units; nothing is evaluated, and nothing is written before every check has passed."""
        grid = self.grid
        if self._store is None:
            Store.check_path(grid.db)
        data = self.load_data()
        x = data.x.to(self.device)  # kept on the device for the whole run
        data = LabelledData(x, data.y.to(self.device), data.classes, data.domain, data.display_name)
        check_data_fits(grid, data)
        for index, entry in enumerate(grid.models):  # every model is checked before any work starts
            check_model_fits(grid.path, f"models[{index}]", entry.label, grid.dataset.label,
                             self.load_model(index, eager=True), data)
        units = plan(grid)
        self.refuse_another_device()
        self.store.start_run(run_record(grid, self.device, data, self.dataset()))
        records = []
        for unit in units:
            cost = unit_cost(unit, grid)
            records.append(UnitRecord(
                run_id=grid.run_id, unit_key=unit.key, model=unit.model.label, attack=unit.attack.label,
                defenses=json.dumps([d.label for d in unit.defenses]), repeat=unit.repeat, adaptive=int(unit.adaptive),
                total=grid.n_examples, forward=cost.forward, backward=cost.backward, updated=time.time()))
        self.store.register_units(records)
        reused = self.store.reuse_finished(grid.run_id, [u.key for u in units])
        if reused and self.progress:
            print(f"{len(reused)} finished unit(s) copied from run(s) {', '.join(sorted(set(reused.values())))} of this "
                  "database: the same unit key means the same rows", file=sys.stderr, flush=True)
        return data, units

    def refuse_another_device(self) -> None:
        """The database holds this grid's run computed on another type of device: CUDA draws other random numbers
        than the CPU (and cuDNN's backward is not deterministic), so its rows and ours must not mix unasked."""
        mine = {k: v for k, v in self.grid.identity().items() if k != "device"}
        for run in self.store.runs():
            theirs = json.loads(run.identity)
            if theirs.get("device", self.grid.device_type) != (self.grid.resumed_from or self.grid.device_type) and \
                    {k: v for k, v in theirs.items() if k != "device"} == mine:
                raise HarnessError(
                    f"{self.grid.db} holds run {run.run_id} of this grid computed on {theirs['device']}, and this "
                    f"machine computes on {self.grid.device_type}: their random numbers differ, so the two would mix "
                    f"silently. Fix: run into another database with --db, or continue that run here with "
                    f"--resume-from-device {theirs['device']} (the report then says so)")

    def grid_progress(self, units: list[Unit]) -> GridProgress:
        """The grid's progress bar, from the units as recorded: their cost and what is already done."""
        recorded = self.store.units(self.grid.run_id).set_index("unit_key")
        work = [UnitWork(u.key, Passes(row.forward, row.backward), int(row.total), int(row.done))
                for u in units for row in [recorded.loc[u.key]]]
        return GridProgress(work, enabled=self.progress, every_s=self.report_every_s)

    def run(self) -> str:
        """Evaluate every unfinished unit this process can claim, then wait for (or take over) the units other
        processes on the same database hold, so that each process returns when the whole grid is done."""
        grid = self.grid
        data, units = self.prepare()
        owner = Owner.here()
        progress = self.grid_progress(units)
        with Heartbeat(self.store.path, owner):
            while True:
                todo = [u for u in units if not self.store.unit_state(grid.run_id, u.key).finished]
                if not todo:
                    break
                ran = False
                for unit in todo:
                    if self.store.unit_state(grid.run_id, unit.key).finished or \
                            not self.store.claim(grid.run_id, unit.key, owner):
                        continue
                    try:
                        self.run_unit(unit, self.load_model(grid.models.index(unit.model)), data, owner, progress)
                    finally:
                        self.store.release(grid.run_id, unit.key, owner)
                    ran = True
                if not ran:  # the rest is claimed by live processes: wait, and take over what they leave
                    time.sleep(self.poll_s)
        progress.close()
        self.store.end_run(grid.run_id)
        return grid.run_id

    def run_unit(self, unit: Unit, loaded: LoadedModel, data: LabelledData, owner: Owner | None = None,
                 progress: GridProgress | None = None) -> None:
        grid = self.grid
        state = self.store.unit_state(grid.run_id, unit.key)
        n, started = grid.n_examples, time.perf_counter()
        bars = self.progress if progress is None else progress.unit_bars
        one_batch = n - state.done <= grid.batch_size
        # a unit of one batch counts its passes as they happen; others count examples, batch by batch
        planned = weight(unit_cost(unit, grid)) / n * (n - state.done) if one_batch else None
        bar = (tqdm(total=round(planned), desc=unit.describe(), unit=" passes", unit_scale=True, disable=not bars,
                    leave=False, dynamic_ncols=True, position=1) if planned is not None else
               tqdm(total=n, initial=state.done, desc=unit.describe(), unit="ex", disable=not bars,
                    leave=False, dynamic_ncols=True, position=1))
        with self._passes_shown(unit, loaded, bar, progress, n - state.done) if one_batch else contextlib.nullcontext():
            for batch in self.batches(unit, loaded, data, state.done, n):
                self.store.commit(grid.run_id, unit.key, batch.records, start=batch.start, stop=batch.stop,
                                  total=n, seconds=batch.seconds, owner=owner.id if owner else "",
                                  counted=batch.counted, floor=batch.floor, smallest_chunk=batch.smallest_chunk,
                                  messages=batch.messages)
                bar.update(bar.total - bar.n if one_batch else batch.stop - batch.start)
                if progress is not None:
                    progress.advance(unit.key, batch.stop - batch.start)
        bar.close()
        message = f"finished {unit.describe()} in {time.perf_counter() - started:.1f}s"
        if self.progress:
            tqdm.write(message)
        log.info(message)

    @staticmethod
    @contextlib.contextmanager
    def _passes_shown(unit: Unit, loaded: LoadedModel, bar: tqdm, progress: GridProgress | None,
                      examples: int) -> Iterator[None]:
        """While the unit's one batch runs, its bar and the grid's progress follow the passes through the model."""
        if not isinstance(loaded.module, PassCounter):
            yield
            return

        def shown(passes: Passes) -> None:
            bar.update(min(weight(passes), max(bar.total - 1 - bar.n, 0)))
            if progress is not None:
                progress.passing(unit.key, passes, examples)

        with loaded.module.listening(shown):
            yield

def run_grid(grid: GridConfig, *, store: Store | None = None, progress: bool = True) -> str:
    return Runner(grid, store, progress=progress).run()
