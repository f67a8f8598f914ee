"""The scheduler: the paper's protocol over keyed, resumable work units.

For each model, attack and repeat the adversarial examples are generated once, checked, and then
every defense is evaluated on those same examples. Rows are committed batch by batch.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Iterator

import torch
from tqdm import tqdm

from harness.batch import Batch, BatchContext
from harness.checks import check_attack_output, check_model_fits, check_model_untouched, model_state
from harness.config import GridConfig
from harness.defended import Defended, predict_defended
from harness.device import synchronize
from harness.interfaces import AttackOutput, DataSource, LabelledData, LoadedModel
from harness.observers import ExampleCapture, GradientNorms, Observer
from harness.plan import Unit, build, plan, unit_cost
from harness.provenance import run_record
from harness.records import ResultRow, UnitRecord
from harness.registry import Registry
from harness.specs import Kind
from harness.store import Store
from harness.threat import Norm, distance

log = logging.getLogger("harness")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Runner:
    def __init__(self, grid: GridConfig, registry: Registry, store: Store | None = None, *, progress: bool = True):
        self.grid, self.registry, self.progress, self._store = grid, registry, progress, store
        self.device = resolve_device(grid.device)
        self.observers: list[Observer] = [GradientNorms(), ExampleCapture(grid.save_examples)]

    @property
    def store(self) -> Store:
        if self._store is None:  # opened on first use: --estimate loads data and models but writes nothing
            self._store = Store(self.grid.db)
        return self._store

    def dataset(self) -> DataSource:
        return build(self.registry, self.grid.dataset, Kind.DATASET)

    def load_data(self) -> LabelledData:
        return self.dataset().load(self.grid.n_examples)

    def load_model(self, index: int) -> LoadedModel:
        loaded = build(self.registry, self.grid.models[index], Kind.MODEL).load(self.device)
        loaded.module.eval()  # the harness sets eval mode once; plugins must not change it
        return LoadedModel(self.grid.compute.prepare_model(loaded.module), loaded.dataset, loaded.num_classes)

    def prepare(self) -> tuple[LabelledData, list[Unit]]:
        """Load the data onto the device, check every model, record the run and its units; nothing is evaluated."""
        grid = self.grid
        data = self.load_data()
        x = grid.compute.prepare_inputs(data.x.to(self.device))  # kept on the device for the whole run
        data = LabelledData(x, data.y.to(self.device), data.classes, data.domain, data.display_name)
        for index, entry in enumerate(grid.models):  # every model is checked before any work starts
            check_model_fits(grid.path, f"models[{index}]", entry.label, grid.dataset.label, self.load_model(index), data)
        units = plan(grid, self.registry)
        self.store.start_run(run_record(grid, self.registry, self.device, data, self.dataset()))
        records = []
        for unit in units:
            cost = unit_cost(unit, grid, self.registry)
            records.append(UnitRecord(
                run_id=grid.run_id, unit_key=unit.key, model=unit.model.label, attack=unit.attack.label,
                defenses=json.dumps([d.label for d in unit.defenses]), repeat=unit.repeat, adaptive=int(unit.adaptive),
                total=grid.n_examples, forward=cost.forward, backward=cost.backward, updated=time.time()))
        self.store.register_units(records)
        return data, units

    def run(self) -> str:
        grid = self.grid
        data, units = self.prepare()
        loaded_index, loaded = -1, None
        for unit in units:
            if self.store.unit_state(grid.run_id, unit.key).finished:
                continue
            index = grid.models.index(unit.model)
            if index != loaded_index:
                loaded_index, loaded = index, self.load_model(index)
            self.run_unit(unit, loaded, data)
        self.store.end_run(grid.run_id)
        return grid.run_id

    def run_unit(self, unit: Unit, loaded: LoadedModel, data: LabelledData) -> None:
        grid = self.grid
        state = self.store.unit_state(grid.run_id, unit.key)
        n, started = grid.n_examples, time.perf_counter()
        bar = tqdm(total=n, initial=state.done, desc=unit.describe(), unit="ex", disable=not self.progress,
                   leave=False, dynamic_ncols=True)
        for batch in self.batches(unit, loaded, data, state.done, n):
            self.store.commit(grid.run_id, unit.key, batch.rows, batch.examples, start=batch.start, stop=batch.stop,
                              total=n, seconds=batch.seconds)
            bar.update(batch.stop - batch.start)
        bar.close()
        message = f"finished {unit.describe()} in {time.perf_counter() - started:.1f}s"
        if self.progress:
            tqdm.write(message)
        log.info(message)

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
        for start in range(first, last, grid.batch_size):
            stop = min(start + grid.batch_size, last)
            ctx = BatchContext(grid.run_id, grid.seed, unit, loaded.module, attack, defenses, threat, start,
                               data.x[start:stop], data.y[start:stop])
            with grid.compute.context(self.device):
                yield self.evaluate(ctx)

    def evaluate(self, ctx: BatchContext) -> Batch:
        """Attack the batch once, check the output, then score every defense on it."""
        grid, unit, model = self.grid, ctx.unit, ctx.model
        before = model_state(model)
        t0 = time.perf_counter()
        if unit.adaptive:
            defended = Defended(model, ctx.defenses[0][1], ctx.generator("attack-defense"), votes=grid.votes)
            out = ctx.attack.attack_defended(defended, ctx.x, ctx.y, ctx.threat, generator=ctx.generator("attack"))
        else:
            out = ctx.attack(model, ctx.x, ctx.y, ctx.threat, generator=ctx.generator("attack"))
        synchronize(self.device)
        attack_s = (time.perf_counter() - t0) / len(ctx.x)
        check_model_untouched(unit.attack.label, before, model)
        for p in model.parameters():  # some library attacks (FAB) call backward(); drop the weight gradients
            p.grad = None
        x_adv, queries = (out.x_adv, out.queries) if isinstance(out, AttackOutput) else (out, None)
        check_attack_output(unit.attack.label, x_adv, ctx.x, ctx.threat)
        n = len(ctx.x)
        columns = {"linf": distance(x_adv, ctx.x, Norm.LINF).tolist(), "l2": distance(x_adv, ctx.x, Norm.L2).tolist(),
                   "queries": [None] * n if queries is None else [int(q) for q in queries],
                   "grad_norm": [None] * n}
        for observer in self.observers:
            columns.update(observer.columns(ctx, x_adv))
        rows, examples = [], []
        for entry, defense in ctx.defenses:
            before = model_state(model)
            preds = predict_defended(model, defense, x_adv, defense.draws(grid.votes), ctx.generator("defense", entry.label))
            check_model_untouched(entry.label, before, model)
            pred, y = preds.pred.tolist(), ctx.y.tolist()
            for i in range(n):
                rows.append(ResultRow(
                    run_id=ctx.run_id, unit_key=unit.key, model=unit.model.label, attack=unit.attack.label,
                    defense=entry.label, repeat=unit.repeat, idx=ctx.start + i, adaptive=int(unit.adaptive),
                    label=y[i], pred=pred[i], correct=int(pred[i] == y[i]), vote_frac=float(preds.vote_frac[i]),
                    attack_s=attack_s, defense_s=preds.seconds / n,
                    **{name: values[i] for name, values in columns.items()}))
            for observer in self.observers:
                examples += observer.examples(ctx, entry.label, defense, x_adv, preds.pred)
        return Batch(ctx.start, ctx.start + n, rows, examples, time.perf_counter() - t0)


def run_grid(grid: GridConfig, registry: Registry, *, store: Store | None = None, progress: bool = True) -> str:
    return Runner(grid, registry, store, progress=progress).run()
