"""The small typed interfaces every plugin implements, and what each declares about itself.

An attack or defense object holds only hyper-parameters (foolbox style); the model, inputs,
threat model and random generator arrive at call time. The runner, not the plugin, decides
success: it checks the output against the threat model and predicts on it itself.

Every plugin class declares what the core and the reports need to know about it: its display
name, its role, and (attacks) its access or (defenses) whether it is randomised. These are
recorded in each run, so that reports read them from the database and a third party's plugin
can play any role a built-in one does.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from harness.api.cost import Passes, through_defense
from harness.api.errors import PluginError
from harness.api.registration import Registrable
from harness.api.specs import param
from harness.api.threat import Norm, ThreatModel


class Role(str, Enum):
    """What part an attack or defense plays in a grid."""

    ENTRY = "entry"            # an ordinary attack or defense
    BASELINE = "baseline"      # the attack that leaves inputs alone: clean accuracy, always evaluated
    REFERENCE = "reference"    # the defense every other defense is compared with (flips, paired differences)


class Access(str, Enum):
    """What an attack may use of the model; reports warn when a black-box attack beats every white-box one."""

    WHITE_BOX = "white-box"
    BLACK_BOX = "black-box"
    NONE = "no-access"            # uses nothing of the model (the clean baseline)


class DefendedModel(Protocol):
    """What an attack through a defense is handed: the model behind one defense of the grid, as one module.

    Calling it gives one draw of the defended prediction (gradient: BPDA or through the unrolled defense);
    :meth:`predict` is the prediction the runner scores (a majority over the grid's votes if random)."""

    model: nn.Module
    defense: Defense
    generator: torch.Generator
    votes: int

    def __call__(self, x: Tensor) -> Tensor: ...

    def predict(self, x: Tensor, *, sequential: bool = True) -> Any: ...

    def with_defense(self, defense: Defense, gradient: Literal["bpda", "full"]) -> DefendedModel: ...


@dataclass(frozen=True)
class AttackOutput:
    """An attack may return this instead of a bare tensor, to report its per-example query count."""

    x_adv: Tensor
    queries: Tensor | None = None


@dataclass(frozen=True)
class Plugin(Registrable):
    """What attacks and defenses declare about themselves (class attributes, not grid parameters)."""

    display_name: ClassVar[str] = ""     # how tables name it where the grid keeps the default label
    role: ClassVar[Role] = Role.ENTRY
    # parameter defaults under a named preset (harness.grid.presets), e.g. {"paper": {"step_size": 0.007}}
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def check(self) -> None:
        """Checks of the parameters that need no model or data (a grid runs them when it is loaded);
        raise ``PluginError`` saying what is wrong and how to fix it."""


@dataclass(frozen=True)
class Attack(Plugin):
    """Base of attack plugins. Subclasses are frozen dataclasses of hyper-parameters."""

    target: Literal["model", "defended"] = param(
        "model", "attack the bare model (transfer, the paper's protocol) or the model wrapped in each defense (adaptive)")
    access: ClassVar[Access] = Access.WHITE_BOX
    norms: ClassVar[tuple[Norm, ...]] = (Norm.LINF, Norm.L2)   # the threat models it can run under
    # its points sit on the model's decision boundary (minimum-norm and hard-label attacks), where bf16 rounding
    # decides the fp32 verdict: the runner runs it in fp32 whatever the grid's precision (a bf16 RayS on the digits
    # model otherwise scored 12.5 points more robust than fp32, DeepFool 4.5)
    full_precision: ClassVar[bool] = False
    # a standard evaluation that papers report as a model's robustness (AutoAttack): a run measuring the
    # undefended model clearly above a paper's value for it points at a weaker run or different data
    benchmark: ClassVar[bool] = False

    @property
    def adaptive(self) -> bool:
        return self.target == "defended"

    def check_threat(self, threat: ThreatModel) -> None:
        """Checks against the threat model the grid runs it under, before any work starts: by default that the
        attack supports its norm (``norms``). Raise ``PluginError`` saying what to change."""
        if threat.norm not in self.norms:
            raise PluginError(f"{type(self).__name__} supports only {', '.join(n.value for n in self.norms)}; "
                              f"the grid's threat model is {threat.norm.value}. Remove the attack or change norm")

    def check_data(self, num_classes: int) -> None:
        """Checks against the dataset once it is loaded, before any unit is recorded (e.g. that it has as many
        classes as the attack targets)."""

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                 generator: torch.Generator) -> Tensor | AttackOutput:
        raise NotImplementedError

    def passes(self, threat: ThreatModel) -> Passes:
        """Forward/backward passes per example against the bare model; override for an accurate --dry-run."""
        return Passes(1, 0)

    def floor(self, threat: ThreatModel) -> Passes:
        """The passes per example its own loop cannot avoid against the bare model (iterations × restarts,
        queries, …), without checks, probes or re-evaluations; ``benchmarks/passes.py`` holds what a unit
        actually makes against it. By default its declared cost."""
        return self.passes(threat)

    # --- through a defense (target = "defended") ----------------------------------------------------
    def attack_defended(self, defended: DefendedModel, x: Tensor, y: Tensor, threat: ThreatModel, *,
                        generator: torch.Generator) -> Tensor | AttackOutput:
        """Attack model + defense. By default the defended model is just a model to the attack: each
        forward pass runs the defense, the backward pass is BPDA. Attacks built for defenses override this."""
        return self(defended, x, y, threat, generator=generator)

    def defended_cost(self, threat: ThreatModel, defense: Defense, votes: int) -> Passes:
        """Passes per example of :meth:`attack_defended`; overridden together with it."""
        return defense.attacked(self.passes(threat))

    def defended_floor(self, threat: ThreatModel, defense: Defense) -> Passes:
        """:meth:`floor` through a defense: by default its cost there without scored checks (``votes = 1``)."""
        return self.defended_cost(threat, defense, votes=1)

    def scaled(self, factor: int) -> Attack:
        """This attack with ``factor`` times its budget (a grid's ``ladder`` checks convergence with it)."""
        raise PluginError(f"{type(self).__name__} has no budget to scale; a ladder needs an attack that declares one")


@dataclass(frozen=True)
class AttackSuite(Attack):
    """Several attacks behind one grid entry: the grid runs each member as an attack of its own, labelled
    "<entry label> · <member>", so every member has its rows and the worst case takes them all."""

    def members(self) -> list[tuple[str, Attack]]:
        raise NotImplementedError


@dataclass(frozen=True)
class Defense(Plugin):
    """Base of defense plugins: a transformation of the input applied before the model predicts."""

    randomized: ClassVar[bool] = False

    def purify(self, model: nn.Module, x: Tensor, *, generator: torch.Generator,
               differentiable: bool = False) -> Tensor:
        """The input the model will see. ``differentiable``: keep it in x's autograd graph (full-gradient attacks)."""
        raise NotImplementedError

    def logits(self, model: nn.Module, x: Tensor, *, generator: torch.Generator,
               differentiable: bool = False) -> Tensor:
        """The defended prediction. Override only where it is not ``model(purify(x))``."""
        return model(self.purify(model, x, generator=generator, differentiable=differentiable))

    def prediction_points(self, model: nn.Module, x: Tensor, *, generator: torch.Generator) -> list[Tensor]:
        """The points whose logits :meth:`logits` sums, without gradient: BPDA through the defense differentiates
        the model at each of them (identity backward), so that the attack's surrogate predicts what is scored.
        By default one, the purified input; override together with :meth:`logits`."""
        return [self.purify(model, x, generator=generator)]

    def bpda_logits(self, model: nn.Module, x: Tensor, *, generator: torch.Generator) -> Tensor | None:
        """BPDA's surrogate for a defense that is not a transformation of the input (it adapts the model, or
        ensembles it): logits differentiable in x whose value is the defended prediction. None (the default): the
        model at each of :meth:`prediction_points`, with the identity as the defense's backward pass."""
        return None

    def draws(self, votes: int) -> int:
        """Predictions per example when scored: a majority over ``votes`` draws if random, else one."""
        return votes if self.randomized else 1

    def passes(self) -> Passes:
        """Forward/backward passes per example, the final prediction excluded."""
        return Passes(0, 0)

    def attacked(self, attack: Passes) -> Passes:
        """The passes of an attack that makes ``attack`` passes through this defense: each forward pass runs the
        defense first, and each backward pass differentiates what the attack sees there. By default the defense's
        own passes ride on every forward pass and BPDA's backward is the model's at the one defended point
        (:func:`~harness.api.cost.through_defense`). A defense whose surrogate runs the model more than once (an
        ensemble, several prediction points) says so here: the plan, the estimate and each unit's floor read it.
        """
        return through_defense(attack, self.passes())

    def for_attack(self, steps: int | None) -> Defense:
        """The copy an adaptive attack runs inside its loop: an iterative defense cut to at most ``steps``
        steps (for cost); the final, scored prediction always uses the grid's defense. Others: itself."""
        return self


@dataclass(frozen=True)
class LoadedModel:
    """A classifier in eval mode that takes images in [0,1] and normalises them itself."""

    module: nn.Module
    dataset: str          # the data domain it was trained for, e.g. "cifar10" (matches LabelledData.domain)
    num_classes: int


@dataclass(frozen=True)
class ModelSource(Registrable):
    """Base of model plugins: where a model's architecture and weights come from."""

    def load(self, device: torch.device) -> LoadedModel:
        raise NotImplementedError

    def check(self) -> None:
        """Checks that need no weights (a dry run calls it), e.g. that a zoo ID exists."""

    def source_files(self) -> list[Path]:
        """The files its weights are read from; a dry run lists them, and run keys hash their contents."""
        return []

    def architecture(self) -> tuple[nn.Module, tuple[int, ...]] | None:
        """The untrained architecture and the shape (C, H, W) of one input, built without reading any weights:
        a dry run counts its FLOPs, and --estimate times it where the checkpoint is not on disk. None: unknown."""
        return None


@dataclass(frozen=True)
class LabelledData:
    """The first n test examples of a dataset, in a fixed order."""

    x: Tensor             # (n, C, H, W), float32 in [0,1]
    y: Tensor             # (n,), int64
    classes: tuple[str, ...]
    domain: str           # what models must have been trained for, e.g. "cifar10" for the JPEG copy too
    display_name: str     # how reports name it, e.g. "CIFAR-10 (JPEG)"

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class DataSource(Registrable):
    """Base of dataset plugins: the test split in a fixed order, and optionally a training split."""

    # printed beside every result on this data, e.g. that it is not the original benchmark's pixels
    caveat: ClassVar[str | None] = None

    def load(self, n: int) -> LabelledData:
        raise NotImplementedError

    def check(self) -> None:
        """Checks of the parameters that need no files (a grid runs them when it is loaded)."""

    def train_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(images in [0,1] as float32 (N, C, H, W), int64 labels) of the training split."""
        raise PluginError(f"dataset {type(self).__name__} has no training split to train on")

    def source_files(self, n: int) -> list[Path]:
        """The files the first n test examples are read from; run keys hash their contents."""
        return []


def plugin_facts(obj: Any) -> Mapping[str, Any]:
    """What a built attack or defense declares, as recorded in a run for the reports."""
    facts: dict[str, Any] = {"display_name": obj.display_name, "role": obj.role.value}
    if isinstance(obj, Attack):
        facts.update(access=Access(obj.access).value, adaptive=obj.adaptive, benchmark=obj.benchmark)
    if isinstance(obj, Defense):
        cost = obj.passes()
        facts.update(randomized=bool(obj.randomized), passes=[cost.forward, cost.backward])
    return facts
