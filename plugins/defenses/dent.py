"""DENT, dynamic defense by test-time entropy minimisation (Wang et al., "Fighting Gradients with Gradients:
Dynamic Defenses against Adversarial Attacks", 2021)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from harness.api import Defense, Passes, PluginError, param

Parameters = dict[str, Tensor]   # a BatchNorm affine parameter's name → its value per example, (N, C)


def batchnorm_affine(model: nn.Module) -> Parameters:
    """The affine parameters of every BatchNorm layer of ``model``, by their names in it."""
    found: Parameters = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            found[f"{name}.weight"], found[f"{name}.bias"] = module.weight, module.bias
    if not found:
        raise PluginError(f"dent adapts the affine parameters of BatchNorm layers, and the model "
                          f"({type(model).__name__}) has none; use it with a model that has BatchNorm")
    return found


@dataclass(frozen=True)
class Dent(Defense, name="dent"):
    r"""DENT: before predicting, each example's own copy of every BatchNorm scale and shift takes a few AdaMod steps
    that lower the entropy of the model's prediction on that example; the prediction is the adapted model's.

    Paper: Wang et al., "Fighting Gradients with Gradients: Dynamic Defenses against Adversarial Attacks",
    arXiv:2105.08714; released code DequanWang/dent (``dent.py``, ``cfgs/dent.yaml``).
    Norm: none (it adapts the model, not the input).

    As in the released code: episodic (every prediction starts from the checkpoint's parameters), sample-aware
    (one copy of the affine parameters per example), BatchNorm normalising with the running statistics
    (``SampleAwareStaticBatchNorm2d``), AdaMod as the ``adamod`` package steps it, and the defaults of its
    ``cfgs/dent.yaml``. Deterministic. Differences, on purpose: the loss is each example's softmax entropy,
    summed over the batch; the released config's ``shot`` loss adds a diversity term over the whole batch and
    averages, so an example's prediction would depend on which others share its batch, and a harness row must
    not (AdaMod's step is invariant to the loss's scale but for its ε = 1e-8, so summing rather than averaging
    over a batch of 8 changes the CIFAR-10 logits by under 1e-3 of their size, and no prediction). The model stays in eval mode (the released code switches
    to train mode, which changes only dropout: its BatchNorm ignores the mode). The model's own parameters are
    never written: the adapted copies are passed in with ``torch.func.functional_call``, one example at a time
    under ``vmap``.

    Arguments:
        steps (int): adaptation steps per prediction. Default: 6.
        lr (float): AdaMod's learning rate. Default: 6e-3.
        beta1, beta2, beta3 (float): AdaMod's moment and step-bound averages. Default: 0.99, 0.999, 0.6.
        weight_decay (float): decoupled weight decay. Default: 0.

    Shape: x (N, C, H, W) in [0,1]; logits (N, classes).

    Example grid entry::

        [[defenses]]
        plugin = "dent"
        steps = 6
    """

    display_name: ClassVar[str] = "DENT"

    steps: int = param(6, "adaptation steps per prediction", minimum=0)
    lr: float = param(6e-3, "AdaMod's learning rate", minimum=0)
    beta1: float = param(0.99, "AdaMod's first-moment average", minimum=0, maximum=1)
    beta2: float = param(0.999, "AdaMod's second-moment average", minimum=0, maximum=1)
    beta3: float = param(0.6, "AdaMod's average of the step bound", minimum=0, maximum=1)
    weight_decay: float = param(0.0, "decoupled weight decay", minimum=0)

    def adapt(self, model: nn.Module, x: Tensor, *, differentiable: bool = False) -> Parameters:
        """The adapted affine parameters of every example. With ``differentiable`` they stay in x's graph."""
        params = {k: v.detach().expand(len(x), *v.shape).clone() for k, v in batchnorm_affine(model).items()}

        def entropy(p: Parameters, xi: Tensor) -> Tensor:
            logits = functional_call(model, p, (xi[None],))[0]
            return -(logits.softmax(0) * logits.log_softmax(0)).sum()

        gradient = vmap(grad(entropy))
        state = {k: (torch.zeros_like(v), torch.zeros_like(v), torch.zeros_like(v)) for k, v in params.items()}
        source = x if differentiable else x.detach()
        for t in range(1, self.steps + 1):
            with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
                g = gradient(params, source)
                params = {k: self._adamod(v, g[k], state, k, t) for k, v in params.items()}
        return params

    def _adamod(self, p: Tensor, g: Tensor, state: dict[str, tuple[Tensor, Tensor, Tensor]], key: str,
                t: int) -> Tensor:
        """One AdaMod step (the ``adamod`` package's ``step``, written out of place so that it can be
        differentiated)."""
        exp_avg, exp_avg_sq, exp_avg_lr = state[key]
        exp_avg = exp_avg * self.beta1 + (1 - self.beta1) * g
        exp_avg_sq = exp_avg_sq * self.beta2 + (1 - self.beta2) * g * g
        denom = exp_avg_sq.clamp_min(1e-30).sqrt() + 1e-8   # the clamp keeps sqrt's derivative finite at 0
        step_size = self.lr * math.sqrt(1 - self.beta2 ** t) / (1 - self.beta1 ** t)
        if self.weight_decay:
            p = p - self.weight_decay * self.lr * p
        bound = step_size / denom
        exp_avg_lr = exp_avg_lr * self.beta3 + (1 - self.beta3) * bound
        state[key] = (exp_avg, exp_avg_sq, exp_avg_lr)
        return p - torch.minimum(bound, exp_avg_lr) * exp_avg

    @staticmethod
    def _predict(model: nn.Module, params: Parameters, x: Tensor) -> Tensor:
        return vmap(lambda p, xi: functional_call(model, p, (xi[None],))[0])(params, x)

    def purify(self, model: nn.Module, x: Tensor, *, generator: torch.Generator,
               differentiable: bool = False) -> Tensor:
        """The input itself: DENT adapts the model, not the input."""
        return x if differentiable else x.detach()

    def logits(self, model: nn.Module, x: Tensor, *, generator: torch.Generator,
               differentiable: bool = False) -> Tensor:
        return self._predict(model, self.adapt(model, x, differentiable=differentiable), x)

    def bpda_logits(self, model: nn.Module, x: Tensor, *, generator: torch.Generator) -> Tensor:
        """The adapted model at x, its adaptation held constant (the gradient of the model that predicts)."""
        with torch.no_grad():
            params = self.adapt(model, x)
        return self._predict(model, params, x)

    def passes(self) -> Passes:
        return Passes(self.steps, self.steps)

    def for_attack(self, steps: int | None) -> Dent:
        return self if steps is None else dataclasses.replace(self, steps=min(steps, self.steps))
