"""What a plugin author imports: the one public module of robustness-harness.

A plugin is a frozen dataclass of hyper-parameters that names itself in its class statement; the model, the
data, the threat model and a generator arrive at call time::

    from dataclasses import dataclass
    from harness.api import Attack, Passes, param

    @dataclass(frozen=True)
    class MIFGSM(Attack, name="mi-fgsm"):
        steps: int = param(10, "iterations", minimum=1)
        def __call__(self, model, x, y, threat, *, generator): ...
        def passes(self, threat): return Passes(self.steps, self.steps)

and the package lists its module under ``[project.entry-points.harness]``. Everything else in ``harness`` is
internal and may change between releases; what is here changes only with a deprecation first."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.api.compat import import_robustbench
    from harness.api.cost import Passes, through_defense
    from harness.api.errors import DataError, HarnessError, PluginError
    from harness.api.hookspecs import hookimpl
    from harness.api.interfaces import (
                                    Access,
                                    Attack,
                                    AttackOutput,
                                    AttackSuite,
                                    DataSource,
                                    DefendedModel,
                                    Defense,
                                    LabelledData,
                                    LoadedModel,
                                    ModelSource,
                                    Role,
    )
    from harness.api.losses import cross_entropy, cw_margin, kl_uniform, released_cw, sum_ce
    from harness.api.registry import Registry, suggest
    from harness.api.seeding import generator_for
    from harness.api.sign_gradient import ascend
    from harness.api.specs import Command, Kind, param
    from harness.api.threat import Norm, ThreatModel, distance

# name → the module that defines it, imported on first use: the core's light modules (errors, threat, ...) live in
# this package too, and importing one of them must not pull in torch and every plugin base with it
_WHERE = {
    "import_robustbench": "harness.api.compat",
    "Passes": "harness.api.cost",
    "through_defense": "harness.api.cost",
    "DataError": "harness.api.errors",
    "HarnessError": "harness.api.errors",
    "PluginError": "harness.api.errors",
    "hookimpl": "harness.api.hookspecs",
    "Access": "harness.api.interfaces",
    "Attack": "harness.api.interfaces",
    "AttackOutput": "harness.api.interfaces",
    "AttackSuite": "harness.api.interfaces",
    "DataSource": "harness.api.interfaces",
    "DefendedModel": "harness.api.interfaces",
    "Defense": "harness.api.interfaces",
    "LabelledData": "harness.api.interfaces",
    "LoadedModel": "harness.api.interfaces",
    "ModelSource": "harness.api.interfaces",
    "Role": "harness.api.interfaces",
    "cross_entropy": "harness.api.losses",
    "cw_margin": "harness.api.losses",
    "kl_uniform": "harness.api.losses",
    "released_cw": "harness.api.losses",
    "sum_ce": "harness.api.losses",
    "Registry": "harness.api.registry",
    "suggest": "harness.api.registry",
    "generator_for": "harness.api.seeding",
    "ascend": "harness.api.sign_gradient",
    "Command": "harness.api.specs",
    "Kind": "harness.api.specs",
    "param": "harness.api.specs",
    "Norm": "harness.api.threat",
    "ThreatModel": "harness.api.threat",
    "distance": "harness.api.threat",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'harness.api' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    # the plugin bases, and what they declare and return
    "Attack", "AttackSuite", "Defense", "ModelSource", "DataSource", "Role", "Access", "AttackOutput",
    "DefendedModel", "LoadedModel", "LabelledData", "Passes", "through_defense", "param",
    # the threat model
    "ThreatModel", "Norm", "distance",
    # the losses, the one steepest-ascent loop, a per-batch generator
    "cross_entropy", "cw_margin", "released_cw", "sum_ce", "kl_uniform", "ascend", "generator_for",
    # errors a plugin raises: what is wrong and how to fix it, in one line
    "HarnessError", "PluginError", "DataError",
    # sub-commands a package adds (``harness train`` is one): the hook, what it returns, and the registry it gets
    "hookimpl", "Command", "Registry", "Kind",
    # helpers: "did you mean" for a misspelt name; robustbench with pyautoattack under the name it imports
    "suggest", "import_robustbench",
]
