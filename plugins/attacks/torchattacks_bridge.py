"""Any torchattacks attack, by class name and keyword arguments."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from harness.api import Access, Attack, Passes, PluginError, ThreatModel, param, suggest
from harness_plugins.attacks.seeded import isolated_rng, seed_from

# torchattacks classes that use only the model's outputs (scores or labels), never its gradients
_BLACK_BOX = frozenset({"Square", "Pixle", "OnePixel", "SPSA", "GN"})


def _kind_of(default: object) -> type | None:
    """The type a keyword must have, read off its default (None where the default says nothing); a number's
    default admits any number (torchattacks' CW has c=1 and takes c=0.5)."""
    if type(default) in (int, float):
        return float
    return type(default) if type(default) in (bool, str) else None


def _is_kind(value: object, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return type(value) is kind


@dataclass(frozen=True, kw_only=True)
class TorchAttacks(Attack, name="torchattacks"):
    r"""A bridge to torchattacks: ``{plugin = "torchattacks", name = "MIFGSM", steps = 10}``.

    Library: torchattacks (Kim, 2020). Norm: whatever the named class implements; the grid's ε is
    passed as ``eps`` when the class takes one, and the runner checks the output against the grid's
    threat model either way. Models take [0,1] inputs and normalise inside, so no normalisation is set
    on the attack. torchattacks' global-RNG use is seeded from the run's generator and isolated.

    Arguments:
        name (str): the torchattacks class, e.g. "PGD", "MIFGSM", "CW", "DeepFool".
        kwargs (dict): keyword arguments for that class; any other key of the grid entry lands here
            too. Default: {}.

    Example grid entry::

        [[attacks]]
        plugin = "torchattacks"
        name = "MIFGSM"
        steps = 10
    """

    label_param: ClassVar[str | None] = "name"      # an entry without a label is named by the class
    open_param: ClassVar[str | None] = "kwargs"     # keys it does not declare are that class's arguments

    name: str = param(help="torchattacks class name, e.g. PGD, MIFGSM")
    kwargs: dict = param(None, "keyword arguments of that class")

    @property
    def access(self) -> Access:  # type: ignore[override]  # depends on the class named
        return Access.BLACK_BOX if self.name in _BLACK_BOX else Access.WHITE_BOX

    @property
    def display_name(self) -> str:  # type: ignore[override]  # tables name it by the class it bridges
        return self.name

    def attack_class(self) -> type:
        import torchattacks

        available = sorted(n for n in dir(torchattacks) if inspect.isclass(getattr(torchattacks, n))
                           and issubclass(getattr(torchattacks, n), torchattacks.attack.Attack) and n != "Attack")
        if self.name not in available:
            raise PluginError(f"torchattacks has no attack {self.name!r}{suggest(self.name, available)}")
        return getattr(torchattacks, self.name)

    def check(self) -> None:
        """The class exists and takes every keyword given (checked before any unit runs)."""
        accepted = [p for p in inspect.signature(self.attack_class().__init__).parameters if p not in ("self", "model")]
        unknown = [k for k in (self.kwargs or {}) if k not in accepted]
        if unknown:
            raise PluginError(f"torchattacks.{self.name} takes no keyword {unknown[0]!r}{suggest(unknown[0], accepted)}; "
                              f"it takes: {', '.join(accepted)}")
        defaults = {name: p.default for name, p in inspect.signature(self.attack_class().__init__).parameters.items()}
        for key, value in (self.kwargs or {}).items():
            expected = _kind_of(defaults.get(key))
            if expected is not None and not _is_kind(value, expected):
                raise PluginError(f"torchattacks.{self.name} keyword {key} = {value!r}: expected "
                                  f"{ {float: 'a number', bool: 'true or false', str: 'a string'}[expected]} "
                                  f"(its default is {defaults[key]!r})")

    def check_threat(self, threat: ThreatModel) -> None:
        super().check_threat(threat)
        eps = (self.kwargs or {}).get("eps")
        if isinstance(eps, (int, float)) and eps > threat.eps + 1e-12:
            raise PluginError(f"torchattacks.{self.name} eps = {eps!r} lies outside the grid's threat model "
                              f"({threat.norm.value}, eps {threat.eps:.6g}); its outputs would be rejected. Remove eps "
                              "(the grid's is passed) or give the entry eps of its own")

    def build(self, model: nn.Module, threat: ThreatModel):
        cls = self.attack_class()
        kwargs = dict(self.kwargs or {})
        if "eps" in inspect.signature(cls.__init__).parameters:
            kwargs.setdefault("eps", threat.eps)
        return cls(model, **kwargs)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                 generator: torch.Generator) -> Tensor:
        attack = self.build(model, threat)
        with isolated_rng(seed_from(generator), x.device):
            return attack(x, y).detach()

    def passes(self, threat: ThreatModel) -> Passes:
        steps = int((self.kwargs or {}).get("steps", 10))
        return Passes(steps + 1, steps)
