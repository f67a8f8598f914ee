"""The scheduler: the paper's protocol over keyed, resumable work units.

For each model, attack and repeat the adversarial examples are generated once, checked, and then
every defense is evaluated on those same examples. Rows are committed batch by batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import sys
import time
from typing import Iterator

import torch
from torch import nn
from tqdm import tqdm

from harness.api.errors import ConfigError, HarnessError
from harness.api.interfaces import AttackOutput, DataSource, LabelledData, LoadedModel, Passes
from harness.api.registry import Registry
from harness.api.specs import Kind
from harness.api.threat import Norm, distance
from harness.grid.config import GridConfig
from harness.grid.plan import Unit, build, plan, unit_cost
from harness.run.batch import Batch, BatchContext
from harness.run.checks import (
    ModelState,
    check_attack_output,
    check_inputs_untouched,
    check_model_fits,
    check_queries,
    plugin_call,
)
from harness.run.counting import PassCounter
from harness.run.defended import Defended, DrawRunner, predict_defended
from harness.run.device import synchronize
from harness.run.observers import ExampleCapture, GradientNorms, LipschitzGaps, Observer
from harness.run.progress import GridProgress, UnitWork, weight
from harness.run.provenance import run_record
from harness.storage.records import ResultRow, UnitRecord
from harness.storage.store import Heartbeat, Owner, Store

log = logging.getLogger("harness")


class Runner:
    def __init__(self, grid: GridConfig, registry: Registry, store: Store | None = None, *, progress: bool = True,
                 device: torch.device | None = None):
        self.grid, self.registry, self.progress, self._store = grid, registry, progress, store
        # the grid's kind of device, fixed when it was loaded (part of its identity); a Ray driver checks on its CPU
        self.device = device or torch.device(grid.device_kind)
        self.poll_s = 2.0  # how often a process waiting on others' units looks again
        self.report_every_s = 60.0  # the plain progress line's interval where stderr is not a terminal
        self._loaded: tuple[int, LoadedModel, LoadedModel] | None = None
        self.loads = 0   # models loaded by this runner (a Ray worker reuses its runner across shards)
        self.stand_ins: list[str] = []   # models --estimate timed as their architecture, their weights being absent
        self.observers: list[Observer] = [GradientNorms(), ExampleCapture(grid.save_examples)] + \
            ([LipschitzGaps()] if grid.lipschitz else [])

    @property
    def store(self) -> Store:
        if self._store is None:  # opened on first use: --estimate loads data and models but writes nothing
            self._store = Store(self.grid.db)
        return self._store

    def dataset(self) -> DataSource:
        return build(self.registry, self.grid.dataset, Kind.DATASET)

    def load_data(self) -> LabelledData:
        entry = self.grid.dataset
        with plugin_call("dataset", entry.label, entry.plugin):
            return self.dataset().load(self.grid.n_examples)

    def load_model(self, index: int, *, eager: bool = False) -> LoadedModel:
        """The grid's ``index``-th model on the device, under the grid's channels_last and compile, counted
        (``eager``: the module alone, for a one-off probe not worth a compilation). The last model loaded is
        kept, so that the one a run starts with is not loaded again after the checks."""
        if self._loaded is None or self._loaded[0] != index:
            self._loaded = None   # one model in memory at a time
            self.loads += 1
            entry = self.grid.models[index]
            with plugin_call("model", entry.label, entry.plugin):
                plain = build(self.registry, entry, Kind.MODEL).load(self.device)
            # eval mode and frozen weights once, here: plugins must not change either, and no backward pass of an
            # attack then computes a weight gradient it does not need
            plain.module.eval().requires_grad_(False)
            counted = PassCounter(self.grid.compute.prepare_model(plain.module))  # every pass of a unit is counted
            self._loaded = (index, plain, LoadedModel(counted, plain.dataset, plain.num_classes))
        return self._loaded[1] if eager else self._loaded[2]

    def prepare(self) -> tuple[LabelledData, list[Unit]]:
        """Check the database, load the data onto the device, check every model, then record the run and
        its units; nothing is evaluated, and nothing is written before every check has passed."""
        grid = self.grid
        if self._store is None:
            Store.check_path(grid.db)
        data = self.load_data()
        x = data.x.to(self.device)  # kept on the device for the whole run
        data = LabelledData(x, data.y.to(self.device), data.classes, data.domain, data.display_name)
        check_data_fits(grid, self.registry, data)
        for index, entry in enumerate(grid.models):  # every model is checked before any work starts
            check_model_fits(grid.path, f"models[{index}]", entry.label, grid.dataset.label,
                             self.load_model(index, eager=True), data)
        units = plan(grid, self.registry)
        self.refuse_another_device()
        self.store.start_run(run_record(grid, self.registry, self.device, data, self.dataset()))
        records = []
        for unit in units:
            cost = unit_cost(unit, grid, self.registry)
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
        """The database holds this grid's run computed on another kind of device: CUDA draws other random numbers
        than the CPU (and cuDNN's backward is not deterministic), so its rows and ours must not mix unasked."""
        mine = {k: v for k, v in self.grid.identity().items() if k != "device"}
        for run in self.store.runs():
            theirs = json.loads(run.identity)
            if theirs.get("device", self.grid.device_kind) != (self.grid.resumed_from or self.grid.device_kind) and \
                    {k: v for k, v in theirs.items() if k != "device"} == mine:
                raise HarnessError(
                    f"{self.grid.db} holds run {run.run_id} of this grid computed on {theirs['device']}, and this "
                    f"machine computes on {self.grid.device_kind}: their random numbers differ, so the two would mix "
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
        planned = weight(unit_cost(unit, grid, self.registry)) / n * (n - state.done) if one_batch else None
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

    def batches(self, unit: Unit, loaded: LoadedModel, data: LabelledData, first: int, last: int) -> Iterator[Batch]:
        """Evaluate examples [first, last) of a unit, batch by batch. Every executor runs exactly this.

        Batches start at multiples of ``batch_size`` and draw their randomness from (seed, unit, batch
        start), so any split of a unit into batch-aligned ranges gives the same rows as one pass.
        """
        grid = self.grid
        if first % grid.batch_size:
            raise ValueError(f"a unit's range must start at a multiple of batch_size={grid.batch_size}, got {first}")
        attack = build(self.registry, unit.attack, Kind.ATTACK)
        defenses = [(entry, build(self.registry, entry, Kind.DEFENSE)) for entry in unit.defenses]
        threat = grid.threat_for(unit.attack)
        draws = DrawRunner()   # shared by the unit's batches: a chunk halved on running out of memory stays halved
        for start in range(first, last, grid.batch_size):
            stop = min(start + grid.batch_size, last)
            ctx = BatchContext(grid.run_id, grid.seed, unit, loaded.module, attack, defenses, threat, start,
                               data.x[start:stop], data.y[start:stop], data.num_classes, draws)
            with grid.compute.context(self.device):
                yield self.evaluate(ctx)

    def evaluate(self, ctx: BatchContext) -> Batch:
        """Attack the batch once, check the output, then score every defense on it.

        Plugins get copies of the inputs, the labels and the threat model, and the model is fingerprinted
        around every call: a plugin that changes what it was given stops the unit, naming itself, before
        any row of it is recorded (it would otherwise corrupt every later unit)."""
        grid, unit, model = self.grid, ctx.unit, ctx.model
        attack_label, attack_named, n = unit.attack.label, unit.attack.named, len(ctx.x)
        x_given, y_given, threat_given = ctx.x.clone(), ctx.y.clone(), dataclasses.replace(ctx.threat)
        counted_before = _counted(model)
        state = ModelState.of(model)
        t0 = time.perf_counter()
        exact = torch.autocast(self.device.type, enabled=False) if ctx.attack.full_precision else contextlib.nullcontext()
        with plugin_call("attack", attack_named, unit.attack.plugin), ctx.chatter.capture(f"attack {attack_named}"), \
                exact:
            if unit.adaptive:
                defense_entry, defense = ctx.defenses[0]
                defended = Defended(model, defense, ctx.generator("attack-defense"), votes=grid.votes_for(True),
                                    num_classes=ctx.num_classes, runner=ctx.draws)
                out = ctx.attack.attack_defended(defended, x_given, y_given, threat_given,
                                                 generator=ctx.generator("attack"))
                floor = ctx.attack.defended_floor(ctx.threat, defense)
            else:
                out = ctx.attack(model, x_given, y_given, threat_given, generator=ctx.generator("attack"))
                floor = ctx.attack.floor(ctx.threat)
        synchronize(self.device)
        attack_s = (time.perf_counter() - t0) / n
        for p in model.parameters():  # some library attacks (FAB) call backward(); drop the weight gradients
            p.grad = None
        state = state.check(attack_named, model)
        check_inputs_untouched(attack_named, x_given, ctx.x, "x")
        check_inputs_untouched(attack_named, y_given, ctx.y, "y (the labels)")
        x_adv, queries = (out.x_adv, out.queries) if isinstance(out, AttackOutput) else (out, None)
        check_attack_output(attack_named, x_adv, ctx.x, ctx.threat)
        check_queries(attack_named, queries, n)
        floor = floor * n
        columns = {"linf": distance(x_adv, ctx.x, Norm.LINF).tolist(), "l2": distance(x_adv, ctx.x, Norm.L2).tolist(),
                   "queries": [None] * n if queries is None else [int(q) for q in queries],
                   "grad_norm": [None] * n}
        for observer in self.observers:
            columns.update(observer.columns(ctx, x_adv))
        rows, examples, preds_by_defense = [], [], {}
        for entry, defense in ctx.defenses:
            with plugin_call("defense", entry.named, entry.plugin), ctx.chatter.capture(f"defense {entry.named}"):
                preds = predict_defended(model, defense, x_adv, grid.votes_for(unit.adaptive),
                                         lambda d, label=entry.label: ctx.generator("defense", label, d),
                                         name=entry.named, num_classes=ctx.num_classes, runner=ctx.draws)
                for observer in self.observers:
                    examples += observer.examples(ctx, entry.label, defense, x_adv, preds.pred)
            state = state.check(entry.named, model)
            floor = floor + (defense.passes() + Passes(1, 0)) * float(preds.draws.sum())
            pred, y, draws = preds.pred.tolist(), ctx.y.tolist(), preds.draws.tolist()
            for i in range(n):
                rows.append(ResultRow(
                    run_id=ctx.run_id, unit_key=unit.key, model=unit.model.label, attack=attack_label,
                    defense=entry.label, repeat=unit.repeat, idx=ctx.start + i, adaptive=int(unit.adaptive),
                    label=y[i], pred=pred[i], correct=int(pred[i] == y[i]), vote_frac=float(preds.vote_frac[i]),
                    draws=draws[i], attack_s=attack_s, defense_s=preds.seconds / n,
                    **{name: values[i] for name, values in columns.items()}))
            preds_by_defense[entry.label] = preds.pred
        records: dict[str, list] = {"results": rows, "examples": examples}
        for observer in self.observers:
            for table, extra in observer.records(ctx, x_adv, preds_by_defense).items():
                records.setdefault(table, []).extend(extra)
        counted = _counted(model)
        counted = Passes(counted.forward - counted_before.forward, counted.backward - counted_before.backward)
        return Batch(ctx.start, ctx.start + n, records, time.perf_counter() - t0, counted, floor,
                     ctx.draws.smallest_chunk, tuple(ctx.chatter.messages))


def check_data_fits(grid: GridConfig, registry: Registry, data: LabelledData) -> None:
    """What can be checked only once the data is loaded, before anything is recorded: radii that mean something
    for images of this size, and attacks that fit the number of classes."""
    for index, entry in enumerate(grid.attacks):
        threat = grid.threat_for(entry)
        diameter = math.sqrt(data.x[0].numel())
        if threat.norm is Norm.L2 and threat.eps > diameter:
            key = f"attacks[{index}].eps" if entry.eps is not None else "eps"
            raise ConfigError(grid.path, key, f"an L2 radius of {threat.eps:g} is larger than the whole image box "
                              f"[0,1]^{data.x[0].numel()} (its diameter is {diameter:.4g})",
                              f"a number in [0, {diameter:.4g}]")
        try:
            build(registry, entry, Kind.ATTACK).check_data(data.num_classes)
        except HarnessError as exc:
            raise ConfigError(grid.path, f"attacks: {entry.label}", str(exc)) from None


def _counted(model: nn.Module) -> Passes:
    return model.counted() if isinstance(model, PassCounter) else Passes(0, 0)


def run_grid(grid: GridConfig, registry: Registry, *, store: Store | None = None, progress: bool = True) -> str:
    return Runner(grid, registry, store, progress=progress).run()
