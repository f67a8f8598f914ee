"""What the runner checks, without exception (foolbox's idea: the library, not the plugin, decides what
counts): every attack's output, and every model before any work starts. A violation stops the unit,
and nothing is recorded for it."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor, nn

from harness.errors import AttackOutputError, ConfigError, HarnessError, PluginCrash, PluginError
from harness.interfaces import LabelledData, LoadedModel
from harness.threat import ThreatModel

TOLERANCE = 1e-5


@contextlib.contextmanager
def plugin_call(kind: str, label: str, plugin: str) -> Iterator[None]:
    """Run a plugin's code; an exception of its own is reported naming the plugin (with its traceback)."""
    try:
        yield
    except HarnessError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure inside a plugin is that plugin's
        raise PluginCrash(f"{kind} {label!r} (plugin {plugin!r}) raised {type(exc).__name__}: {exc}", exc) from exc


def check_attack_output(name: str, x_adv: Tensor, x: Tensor, threat: ThreatModel, tol: float = TOLERANCE) -> None:
    if not isinstance(x_adv, Tensor):
        raise AttackOutputError(f"attack {name!r} returned {type(x_adv).__name__}, not a tensor")
    if x_adv.shape != x.shape:
        raise AttackOutputError(f"attack {name!r} returned shape {tuple(x_adv.shape)}; the input's is {tuple(x.shape)}")
    if x_adv.dtype != x.dtype or x_adv.device != x.device:
        raise AttackOutputError(f"attack {name!r} returned a {x_adv.dtype} tensor on {x_adv.device}; the input is "
                                f"{x.dtype} on {x.device}. Return x_adv in the input's dtype, on its device")
    finite = torch.isfinite(x_adv).flatten(1).all(dim=1)
    if not finite.all():
        bad = int((~finite).nonzero()[0])
        raise AttackOutputError(f"attack {name!r} returned NaN or inf values (first at example {bad} of the batch)")
    ball, box = threat.excess(x_adv, x)
    if ball.max() > tol:
        worst = int(ball.argmax())
        raise AttackOutputError(
            f"attack {name!r} left the threat model: example {worst} of the batch lies at {threat.norm.value} "
            f"distance {float(ball[worst]) + threat.eps:.6f} > eps {threat.eps:.6f} (tolerance {tol:g})")
    if box.max() > tol:
        low, high = float(x_adv.min()), float(x_adv.max())
        worst = low if low < -tol else high
        raise AttackOutputError(f"attack {name!r} returned a pixel value {worst:.6f} outside [0,1] (tolerance {tol:g})")


def check_queries(name: str, queries: Tensor | None, n: int) -> None:
    if queries is None:
        return
    if not isinstance(queries, Tensor) or tuple(queries.shape) != (n,):
        shape = tuple(queries.shape) if isinstance(queries, Tensor) else type(queries).__name__
        raise AttackOutputError(f"attack {name!r} returned queries of shape {shape}; expected one count per example, "
                                f"shape ({n},)")
    if queries.is_floating_point() or (queries < 0).any():
        raise AttackOutputError(f"attack {name!r} returned queries that are not non-negative integer counts")


@dataclass(frozen=True)
class ModelState:
    """What no plugin may change about the model: its mode, its requires_grad flags, its weights and buffers."""

    training: bool
    requires_grad: tuple[bool, ...]
    fingerprint: Tensor        # per tensor: sum and sum of squares in float64, a cheap check of every value

    @staticmethod
    def of(model: nn.Module) -> ModelState:
        tensors = [t.detach() for t in (*model.parameters(), *model.buffers())]
        with torch.no_grad():
            fingerprint = torch.stack([torch.stack((t.double().sum(), t.double().square().sum())) for t in tensors]) \
                if tensors else torch.zeros(0)
        return ModelState(model.training, tuple(p.requires_grad for p in model.parameters()), fingerprint)

    def check(self, name: str, model: nn.Module) -> None:
        after = ModelState.of(model)
        if after.training != self.training:
            raise PluginError(f"plugin {name!r} switched the model to {'train' if after.training else 'eval'} mode; "
                              "plugins must leave the mode as they found it")
        if after.requires_grad != self.requires_grad:
            raise PluginError(f"plugin {name!r} changed requires_grad of the model's parameters; "
                              "take input gradients with torch.autograd.grad instead")
        if not torch.equal(after.fingerprint, self.fingerprint):
            changed = int((after.fingerprint != self.fingerprint).any(dim=1).sum())
            raise PluginError(f"plugin {name!r} changed the model's weights or buffers ({changed} tensors); plugins "
                              "must not modify the model (a train-mode forward pass updates batch-norm statistics)")


def check_inputs_untouched(name: str, given: Tensor, original: Tensor, what: str) -> None:
    """A plugin must not write into what it was given (it would corrupt every later unit)."""
    if not torch.equal(given, original):
        changed = int((given != original).flatten(1).any(dim=1).sum()) if given.dim() > 1 else int((given != original).sum())
        raise PluginError(f"plugin {name!r} wrote into its input {what} ({changed} examples changed); plugins must "
                          "not modify their inputs in place: compute on a copy")


def check_model_fits(file: str, key: str, label: str, dataset_label: str, loaded: LoadedModel,
                     data: LabelledData) -> None:
    """Reject a model that does not fit the grid's data before any work starts."""
    if loaded.dataset != data.domain:
        raise ConfigError(file, key, f"model {label!r} was trained on {loaded.dataset!r} data, but the grid's "
                          f"dataset {dataset_label!r} is {data.domain!r} data", f"models trained on {data.domain!r}")
    if loaded.num_classes != data.num_classes:
        raise ConfigError(file, key, f"model {label!r} has {loaded.num_classes} classes, the dataset "
                          f"{data.num_classes}", f"num_classes = {data.num_classes}")
    device = next(loaded.module.parameters()).device
    probe = data.x[:2].to(device)
    try:
        with torch.no_grad():
            out = loaded.module(probe)
    except RuntimeError as exc:
        raise ConfigError(file, key, f"model {label!r} cannot take the dataset's inputs of shape "
                          f"{tuple(data.x.shape[1:])}: {str(exc).splitlines()[0]}") from None
    if tuple(out.shape) != (len(probe), data.num_classes):
        raise ConfigError(file, key, f"model {label!r} returned shape {tuple(out.shape)} for {len(probe)} inputs; "
                          f"expected ({len(probe)}, {data.num_classes})")
    if not torch.isfinite(out).all():
        raise ConfigError(file, key, f"model {label!r} gives NaN or infinite logits on clean inputs of the dataset; "
                          "its weights are broken or do not belong to this architecture")
