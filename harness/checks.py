"""What the runner checks on every attack's output, without exception (foolbox's idea: the library,
not the attack, decides what counts). A violation stops the unit; no inflated success is recorded."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from harness.errors import AttackOutputError, PluginError
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
    dist = threat.distance(x_adv, x)
    over = dist - threat.eps
    if over.max() > tol:
        worst = int(over.argmax())
        raise AttackOutputError(
            f"attack {name!r} left the threat model: example {worst} of the batch lies at {threat.norm.value} "
            f"distance {float(dist[worst]):.6f} > eps {threat.eps:.6f} (tolerance {tol:g})")
    low, high = float(x_adv.min()), float(x_adv.max())
    if low < -tol or high > 1 + tol:
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
