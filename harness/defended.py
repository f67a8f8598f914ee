"""A model wrapped in a defense, as an nn.Module, so that any attack can target "model + defense"."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from harness.device import synchronize
from harness.interfaces import Defense


@dataclass
class Predictions:
    pred: Tensor           # (N,) majority vote over draws
    vote_frac: Tensor      # (N,) share of draws that agree with it
    probabilities: Tensor  # (N, C) softmax averaged over draws
    seconds: float


def predict_defended(model: nn.Module, defense: Defense, x: Tensor, draws: int,
                     generator: torch.Generator) -> Predictions:
    """The defended prediction; a randomised defense votes over ``draws`` draws, batched together.

    Taking the majority (rather than any single lucky draw, AutoAttack's PR #105 bug) is what
    makes a randomised defense's score honest.
    """
    start = time.perf_counter()
    stacked = x.repeat(draws, *([1] * (x.dim() - 1)))  # defenses are per-example, so draws can share a batch
    with torch.no_grad():
        logits = defense.logits(model, stacked, generator=generator).float()
    votes = logits.argmax(1).view(draws, x.shape[0])
    majority = votes.mode(dim=0).values
    probabilities = logits.softmax(1).view(draws, x.shape[0], -1).mean(0)
    synchronize(x.device)
    return Predictions(majority, (votes == majority).float().mean(0), probabilities, time.perf_counter() - start)


class Defended(nn.Module):
    """forward(x) = the defense's prediction on x.

    gradient = "bpda": the defense runs without gradient and the backward pass is the identity, so the
    gradient is that of the model at the defended point (Athalye et al.'s BPDA, as Croce et al. use it).
    gradient = "full": differentiate through the defense itself (feasible for few Hedge steps).
    Randomness is drawn from ``generator``; each forward call is one fresh draw (EOT averages them).
    :meth:`predict` is the scored prediction: a majority over ``votes`` draws when the defense is
    random, as the runner scores it, so that an attack can check its success the same way.
    """

    def __init__(self, model: nn.Module, defense: Defense, generator: torch.Generator,
                 gradient: Literal["bpda", "full"] = "bpda", votes: int = 1):
        super().__init__()
        if votes < 1:
            raise ValueError(f"votes must be at least 1, got {votes}")
        self.model, self.defense, self.generator, self.gradient, self.votes = model, defense, generator, gradient, votes

    def with_defense(self, defense: Defense, gradient: Literal["bpda", "full"]) -> Defended:
        """The same model and random stream behind another defense (e.g. a cheaper in-attack copy)."""
        return Defended(self.model, defense, self.generator, gradient=gradient, votes=self.votes)

    def predict(self, x: Tensor) -> Predictions:
        """The prediction the runner would score: the majority over ``votes`` draws if the defense is random."""
        return predict_defended(self.model, self.defense, x, self.defense.draws(self.votes), self.generator)

    def forward(self, x: Tensor) -> Tensor:
        if self.gradient == "full":
            return self.defense.logits(self.model, x, generator=self.generator, differentiable=True)
        purified = self.defense.purify(self.model, x.detach(), generator=self.generator).detach()
        return self.model(x + (purified - x).detach())  # value at the defended point, identity backward
