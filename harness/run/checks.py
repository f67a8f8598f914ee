"""What the runner checks, without exception (foolbox's idea: the library, not the plugin, decides what
counts): every attack's output, and every model before any work starts. A violation stops the unit,
and nothing is recorded for it."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor, nn

from harness.api.errors import AttackOutputError, ConfigError, HarnessError, PluginCrash, PluginError
from harness.api.interfaces import LabelledData, LoadedModel
from harness.api.threat import ThreatModel

TOLERANCE = 1e-5


@contextlib.contextmanager
def plugin_call(kind: str, label: str, plugin: str) -> Iterator[None]:
    """Run a plugin's code; an exception of its own is reported naming the plugin (with its traceback)."""
    try:
        yield
    except (HarnessError, KeyboardInterrupt, GeneratorExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - any failure inside a plugin is that plugin's, SystemExit included
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


_MIX = (0x9E3779B97F4A7C15 - (1 << 64), 0xBF58476D1CE4E5B9 - (1 << 64), 0x94D049BB133111EB - (1 << 64))


def checksum(tensor: Tensor) -> Tensor:
    """A position-sensitive checksum of a tensor's exact bits, on its own device (an int64 scalar).

    Each element's bit pattern is multiplied by a pseudo-random odd weight of its position and the products
    summed modulo 2**64: changing any bit, or swapping two different elements, changes it (a sum or a sum of
    squares does not see a swap)."""
    flat = tensor.detach().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    if flat.is_floating_point() or flat.is_complex():
        flat = flat.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[flat.element_size()])
    with torch.no_grad():
        return (flat.to(torch.int64) * _position_weights(flat.numel(), flat.device)).sum()


_WEIGHTS: dict[tuple[int, torch.device], Tensor] = {}


def _position_weights(numel: int, device: torch.device) -> Tensor:
    """Odd pseudo-random int64 weights of positions 0 … numel−1 (kept: one set per tensor size and device)."""
    key = (numel, device)
    if key not in _WEIGHTS:
        weight = torch.arange(numel, dtype=torch.int64, device=device) * _MIX[0] + _MIX[1]
        _WEIGHTS[key] = (weight ^ (weight >> 31)) * _MIX[2] | 1
    return _WEIGHTS[key]


def _hooks(module: nn.Module) -> tuple:
    """The hooks a module carries, and its forward if replaced on the instance or its class."""
    dicts = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return (tuple(tuple(getattr(module, name, {}).keys()) for name in dicts),
            module.__dict__.get("forward"), type(module).forward)


def _global_hooks() -> tuple:
    from torch.nn.modules import module as torch_module

    names = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
             "_global_backward_pre_hooks")
    return tuple(tuple(getattr(torch_module, name, {}).keys()) for name in names)


@dataclass(frozen=True)
class ModelState:
    """What no plugin may change about the model: the mode of every submodule, the requires_grad flags, the
    hooks and forward methods, which tensors it holds, and every bit of its weights and buffers."""

    modes: tuple[tuple[str, bool], ...]
    requires_grad: tuple[bool, ...]
    hooks: tuple
    tensors: tuple[str, ...]
    fingerprint: Tensor        # per tensor: a position-sensitive checksum of its bits

    @staticmethod
    def of(model: nn.Module) -> ModelState:
        named = [*model.named_parameters(), *model.named_buffers()]
        with torch.no_grad():
            fingerprint = torch.stack([checksum(t) for _, t in named]).cpu() if named else torch.zeros(0)
        return ModelState(tuple((name, m.training) for name, m in model.named_modules()),
                          tuple(p.requires_grad for p in model.parameters()),
                          (tuple((name, _hooks(m)) for name, m in model.named_modules()), _global_hooks()),
                          tuple(name for name, _ in named), fingerprint)

    def check(self, name: str, model: nn.Module) -> ModelState:
        """Raise ``PluginError`` naming the plugin if the model differs from this state; else its state now."""
        after = ModelState.of(model)
        modes = dict(self.modes)
        switched = [m for m, training in after.modes if m in modes and modes[m] != training]
        if switched:
            where = "the model" if switched[0] == "" else f"the submodule {switched[0]!r}"
            raise PluginError(f"plugin {name!r} switched {where} to {'train' if dict(after.modes)[switched[0]] else 'eval'}"
                              " mode; plugins must leave every module's mode as they found it")
        if after.hooks != self.hooks:
            raise PluginError(f"plugin {name!r} added, removed or replaced a hook or a forward method of the model "
                              "(or a global module hook); plugins must leave the model as they found it")
        if after.tensors != self.tensors:
            added = sorted(set(after.tensors) - set(self.tensors))
            removed = sorted(set(self.tensors) - set(after.tensors))
            raise PluginError(f"plugin {name!r} changed which tensors the model holds (added: {', '.join(added) or '-'}; "
                              f"removed: {', '.join(removed) or '-'}); plugins must not register parameters or buffers")
        if after.requires_grad != self.requires_grad:
            raise PluginError(f"plugin {name!r} changed requires_grad of the model's parameters; "
                              "take input gradients with torch.autograd.grad instead")
        if not torch.equal(after.fingerprint, self.fingerprint):
            changed = [t for t, a, b in zip(self.tensors, after.fingerprint, self.fingerprint) if a != b]
            raise PluginError(f"plugin {name!r} changed the model's weights or buffers ({len(changed)} tensors), first "
                              f"{changed[0]}; plugins must not modify the model (a train-mode forward pass updates "
                              "batch-norm statistics)")
        return after


def check_defense_logits(name: str, logits: Tensor, n: int, num_classes: int) -> None:
    """A defense's prediction: finite logits of shape (N, C), C the dataset's classes."""
    if not isinstance(logits, Tensor) or logits.dim() != 2 or tuple(logits.shape) != (n, num_classes):
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise PluginError(f"defense {name!r} returned logits of shape {shape}; expected ({n}, {num_classes}): one row "
                          "per input and one column per class of the dataset")
    finite = torch.isfinite(logits).all(dim=1)
    if not finite.all():
        bad = int((~finite).nonzero()[0])
        raise PluginError(f"defense {name!r} returned NaN or infinite logits (first at input {bad}); a prediction "
                          "from them would be meaningless")


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
