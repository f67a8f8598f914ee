"""Evaluating a work unit's examples, batch by batch: the attack once on each batch, its output checked, then every
defense scored on it. Every executor (this process, a Ray worker) runs exactly this."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Iterator

import torch
from torch import nn

from harness.api.interfaces import AttackOutput, LabelledData, LoadedModel, Passes
from harness.api.threat import Norm, distance
from harness.grid.config import GridConfig
from harness.grid.plan import Unit
from harness.run.batch import Batch, BatchContext
from harness.run.checks import ModelState, check_attack_output, check_inputs_untouched, check_queries, plugin_call
from harness.run.counting import PassCounter
from harness.run.defended import Defended, DrawRunner, predict_defended
from harness.run.device import synchronize
from harness.run.observers import ExampleCapture, GradientNorms, LipschitzGaps, Observer
from harness.storage.records import ResultRow


class Evaluator:
    def __init__(self, grid: GridConfig, device: torch.device):
        self.grid, self.device = grid, device
        self.observers: list[Observer] = [GradientNorms(), ExampleCapture(grid.save_examples)] + \
            ([LipschitzGaps()] if grid.lipschitz else [])

    def batches(self, unit: Unit, loaded: LoadedModel, data: LabelledData, first: int, last: int) -> Iterator[Batch]:
        """Evaluate examples [first, last) of a unit, batch by batch. Every executor runs exactly this.

        Batches start at multiples of ``batch_size`` and draw their randomness from (seed, unit, batch
        start), so any split of a unit into batch-aligned ranges gives the same rows as one pass.
        """
        grid = self.grid
        if first % grid.batch_size:
            raise ValueError(f"a unit's range must start at a multiple of batch_size={grid.batch_size}, got {first}")
        attack = unit.attack.built
        defenses = [(entry, entry.built) for entry in unit.defenses]
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



def _counted(model: nn.Module) -> Passes:
    return model.counted() if isinstance(model, PassCounter) else Passes(0, 0)
