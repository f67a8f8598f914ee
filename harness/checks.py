"""What the runner checks, without exception (foolbox's idea: the library, not the plugin, decides what
counts): every attack's output, and every model before any work starts. A violation stops the unit,
and nothing is recorded for it."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from harness.errors import AttackOutputError, ConfigError, PluginError
from harness.interfaces import LabelledData, LoadedModel
from harness.threat import ThreatModel

TOLERANCE = 1e-5


def check_attack_output(name: str, x_adv: Tensor, x: Tensor, threat: ThreatModel, tol: float = TOLERANCE) -> None:
    if not isinstance(x_adv, Tensor):
        raise AttackOutputError(f"attack {name!r} returned {type(x_adv).__name__}, not a tensor")
    if x_adv.shape != x.shape:
        raise AttackOutputError(f"attack {name!r} returned shape {tuple(x_adv.shape)}; the input's is {tuple(x.shape)}")
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


def model_state(model: nn.Module) -> tuple[bool, tuple[bool, ...]]:
    return model.training, tuple(p.requires_grad for p in model.parameters())


def check_model_untouched(name: str, before: tuple[bool, tuple[bool, ...]], model: nn.Module) -> None:
    """No plugin may switch the model's train/eval mode or its parameters' requires_grad."""
    after = model_state(model)
    if after[0] != before[0]:
        raise PluginError(f"plugin {name!r} switched the model to {'train' if after[0] else 'eval'} mode; "
                          "plugins must leave the mode as they found it")
    if after[1] != before[1]:
        raise PluginError(f"plugin {name!r} changed requires_grad of the model's parameters; "
                          "take input gradients with torch.autograd.grad instead")


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
    try:
        with torch.no_grad():
            out = loaded.module(data.x[:2].to(device))
    except RuntimeError as exc:
        raise ConfigError(file, key, f"model {label!r} cannot take the dataset's inputs of shape "
                          f"{tuple(data.x.shape[1:])}: {str(exc).splitlines()[0]}") from None
    if tuple(out.shape) != (2, data.num_classes):
        raise ConfigError(file, key, f"model {label!r} returned shape {tuple(out.shape)} for 2 inputs; expected "
                          f"(2, {data.num_classes})")
