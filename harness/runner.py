"""The scheduler: the paper's protocol over keyed, resumable work units.

For each model, attack and repeat the adversarial examples are generated once, checked, and then
every defense is evaluated on those same examples. Rows are committed batch by batch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import subprocess
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Iterator

import torch
from torch import Tensor
from tqdm import tqdm

from harness.checks import check_attack_output, check_model_untouched, model_state
from harness.config import GridConfig
from harness.defended import Defended, predict_defended
from harness.device import synchronize
from harness.errors import ConfigError
from harness.interfaces import AttackOutput, Defense, LabelledData, LoadedModel
from harness.plan import Unit, build, plan
from harness.registry import Registry
from harness.seeding import generator_for
from harness.specs import Kind
from harness.store import Store
from harness.threat import Norm, distance
from plugins.attacks.clean import CLEAN

log = logging.getLogger("harness")
_VERSIONED = ("robustness-harness", "torch", "torchvision", "numpy", "torchattacks", "pyautoattack", "robustbench",
              "pluggy", "sqlite-utils")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_model(grid: GridConfig, index: int, loaded: LoadedModel, data: LabelledData) -> None:
    """Reject a model that does not fit the grid's data before any work starts."""
    key = f"models[{index}]"
    label = grid.models[index].label
    if loaded.dataset != data.domain:
        raise ConfigError(grid.path, key, f"model {label!r} was trained on {loaded.dataset!r} data, but the grid's "
                          f"dataset {grid.dataset.label!r} is {data.domain!r} data", f"models trained on {data.domain!r}")
    if loaded.num_classes != data.num_classes:
        raise ConfigError(grid.path, key, f"model {label!r} has {loaded.num_classes} classes, the dataset "
                          f"{data.num_classes}", f"num_classes = {data.num_classes}")
    device = next(loaded.module.parameters()).device
    try:
        with torch.no_grad():
            out = loaded.module(data.x[:2].to(device))
    except RuntimeError as exc:
        raise ConfigError(grid.path, key, f"model {label!r} cannot take the dataset's inputs of shape "
                          f"{tuple(data.x.shape[1:])}: {str(exc).splitlines()[0]}") from None
    if tuple(out.shape) != (2, data.num_classes):
        raise ConfigError(grid.path, key, f"model {label!r} returned shape {tuple(out.shape)} for 2 inputs; expected "
                          f"(2, {data.num_classes})")


def _plugin_facts(grid: GridConfig, registry: Registry) -> dict[str, list[dict[str, Any]]]:
    """Every entry with its parameters resolved (defaults included), so reports need only the database."""
    def resolved(entry, kind: Kind) -> dict[str, Any]:
        obj = build(registry, entry, kind)
        params = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else {}
        return {"label": entry.label, "plugin": entry.plugin, "params": json.loads(json.dumps(params, default=str)),
                **({"access": obj.access, "adaptive": obj.target == "defended",
                    "eps": grid.threat_for(entry).eps} if kind is Kind.ATTACK else {}),
                **({"randomized": bool(obj.randomized)} if kind is Kind.DEFENSE else {})}
    return {"attacks": [resolved(a, Kind.ATTACK) for a in grid.attacks],
            "defenses": [resolved(d, Kind.DEFENSE) for d in grid.defenses],
            "models": [{"label": m.label, "plugin": m.plugin, "params": dict(m.params)} for m in grid.models]}


def _run_facts(grid: GridConfig, device: torch.device, registry: Registry, data: LabelledData) -> dict[str, Any]:
    versions = {}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return {
        "run_id": grid.run_id, "config_path": grid.path, "config_text": grid.text,
        "config_hash": grid.run_id, "identity": json.dumps(grid.identity(), sort_keys=True),
        "attacks": json.dumps([a.label for a in grid.attacks]), "defenses": json.dumps([d.label for d in grid.defenses]),
        "models": json.dumps([m.label for m in grid.models]), "dataset": grid.dataset.label,
        "n_examples": grid.n_examples, "norm": grid.threat.norm.value, "eps": grid.threat.eps,
        "repeats": grid.repeats, "git_commit": commit, "versions": json.dumps(versions), "device": device_name,
        "started": time.time(), "ended": None,
        "plugins": json.dumps(_plugin_facts(grid, registry)), "classes": json.dumps(list(data.classes)),
        "dataset_display": data.display_name, "precision": grid.compute.describe(),
    }


def input_gradient_norm(model: torch.nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """‖∇ₓ CE(f(x), y)‖₁ per example. Zero means gradient attacks have nothing to follow (masking)."""
    with torch.enable_grad():
        point = x.detach().clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(point), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, point)
    return grad.flatten(1).abs().sum(1)


@dataclass
class Batch:
    """One evaluated batch of a unit: its rows (one per example and defense) and saved example images."""

    start: int
    stop: int
    rows: list[dict[str, Any]]
    examples: list[dict[str, Any]]
    seconds: float


class Runner:
    def __init__(self, grid: GridConfig, registry: Registry, store: Store | None = None, *, progress: bool = True):
        self.grid, self.registry, self.progress = grid, registry, progress
        self._store = store
        self.device = resolve_device(grid.device)

    @property
    def store(self) -> Store:
        if self._store is None:  # opened on first use: --estimate loads data and models but writes nothing
            self._store = Store(self.grid.db)
        return self._store

    def _examples(self, unit: Unit, defense_label: str, defense: Defense, model: torch.nn.Module,
                   x: Tensor, y: Tensor, x_adv: Tensor, start: int, pred: Tensor) -> list[dict[str, Any]]:
        """Images and SSIM of the first examples of a unit: clean, adversarial, and one draw of the defense."""
        from harness.analytics import png_bytes, ssim

        m = min(self.grid.save_examples - start, len(x))
        gen = generator_for(self.grid.seed, unit.key, start, "examples", defense_label, device=self.device)
        defended = defense.purify(model, x_adv[:m], generator=gen).detach()
        with torch.no_grad():
            pred_adv = model(x_adv[:m]).argmax(1)
        return [{
            "run_id": self.grid.run_id, "unit_key": unit.key, "model": unit.model.label, "attack": unit.attack.label,
            "defense": defense_label, "repeat": unit.repeat, "idx": start + i, "label": int(y[i]),
            "pred_adv": int(pred_adv[i]), "pred_defended": int(pred[i]), "ssim_adv": ssim(x[i], x_adv[i]),
            "ssim_defended": ssim(x[i], defended[i]), "clean_png": png_bytes(x[i]), "adv_png": png_bytes(x_adv[i]),
            "defended_png": png_bytes(defended[i]),
        } for i in range(m)]

    def load_data(self) -> LabelledData:
        dataset = build(self.registry, self.grid.dataset, Kind.DATASET)
        return dataset.load(self.grid.n_examples)

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
        for index in range(len(grid.models)):  # every model is checked before any work starts
            check_model(grid, index, self.load_model(index), data)
        units = plan(grid, self.registry)
        self.store.start_run(_run_facts(grid, self.device, self.registry, data))
        for unit in units:
            self.store.register_unit(grid.run_id, unit.key, {
                "model": unit.model.label, "attack": unit.attack.label, "repeat": unit.repeat,
                "defenses": json.dumps([d.label for d in unit.defenses]), "adaptive": int(unit.adaptive),
                "total": grid.n_examples})
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
            self.store.commit_batch(grid.run_id, unit.key, batch.rows, done=batch.stop, finished=batch.stop >= n,
                                    seconds=batch.seconds, examples=batch.examples)
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
        grid, model = self.grid, loaded.module
        if first % grid.batch_size:
            raise ValueError(f"a unit's range must start at a multiple of batch_size={grid.batch_size}, got {first}")
        attack = build(self.registry, unit.attack, Kind.ATTACK)
        defenses = [(entry, build(self.registry, entry, Kind.DEFENSE)) for entry in unit.defenses]
        threat = grid.threat_for(unit.attack)
        record_gradient = unit.attack.plugin == CLEAN  # once per (model, repeat): for the zero-gradient check
        for start in range(first, last, grid.batch_size):
            stop = min(start + grid.batch_size, last)
            with grid.compute.context(self.device):
                yield self._batch(unit, model, attack, defenses, threat, record_gradient, data, start, stop)

    def _batch(self, unit, model, attack, defenses, threat, record_gradient, data, start, stop) -> Batch:
        grid = self.grid
        x, y = data.x[start:stop], data.y[start:stop]
        target = model
        if unit.adaptive:
            gen = generator_for(grid.seed, unit.key, start, "attack-defense", device=self.device)
            target = Defended(model, defenses[0][1], gen, votes=grid.votes)
        before = model_state(model)
        t0 = time.perf_counter()
        out = attack(target, x, y, threat, generator=generator_for(grid.seed, unit.key, start, "attack",
                                                                        device=self.device))
        synchronize(self.device)
        attack_s = (time.perf_counter() - t0) / len(x)
        check_model_untouched(unit.attack.label, before, model)
        for p in model.parameters():  # some library attacks (FAB) call backward(); drop the weight gradients
            p.grad = None
        x_adv, queries = (out.x_adv, out.queries) if isinstance(out, AttackOutput) else (out, None)
        check_attack_output(unit.attack.label, x_adv, x, threat)
        linf, l2 = distance(x_adv, x, Norm.LINF).tolist(), distance(x_adv, x, Norm.L2).tolist()
        grad_norm = input_gradient_norm(model, x, y).tolist() if record_gradient else [None] * len(x)
        rows, examples = [], []
        for entry, defense in defenses:
            before = model_state(model)
            preds = predict_defended(model, defense, x_adv, defense.draws(grid.votes),
                                     generator_for(grid.seed, unit.key, start, "defense", entry.label,
                                                   device=self.device))
            check_model_untouched(entry.label, before, model)
            correct = (preds.pred == y).tolist()
            for i in range(len(x)):
                rows.append({
                    "run_id": grid.run_id, "unit_key": unit.key, "model": unit.model.label,
                    "attack": unit.attack.label, "defense": entry.label, "repeat": unit.repeat,
                    "idx": start + i, "adaptive": int(unit.adaptive), "label": int(y[i]),
                    "pred": int(preds.pred[i]), "correct": int(correct[i]), "vote_frac": float(preds.vote_frac[i]),
                    "attack_s": attack_s, "defense_s": preds.seconds / len(x), "linf": linf[i], "l2": l2[i],
                    "queries": None if queries is None else int(queries[i]), "grad_norm": grad_norm[i],
                })
            if start < grid.save_examples:
                examples += self._examples(unit, entry.label, defense, model, x, y, x_adv, start, preds.pred)
        return Batch(start, stop, rows, examples, time.perf_counter() - t0)


def run_grid(grid: GridConfig, registry: Registry, *, store: Store | None = None, progress: bool = True) -> str:
    return Runner(grid, registry, store, progress=progress).run()
