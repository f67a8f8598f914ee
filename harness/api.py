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

from harness.compat import import_robustbench
from harness.cost import Passes, through_defense
from harness.errors import DataError, HarnessError, PluginError
from harness.hookspecs import hookimpl
from harness.interfaces import (
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
from harness.losses import cross_entropy, cw_margin, kl_uniform, released_cw, sum_ce
from harness.registry import Registry, suggest
from harness.seeding import generator_for
from harness.sign_gradient import ascend
from harness.specs import Command, Kind, param
from harness.threat import Norm, ThreatModel, distance

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
