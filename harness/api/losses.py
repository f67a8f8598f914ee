"""Per-example losses, shape (N,). Summing them keeps each example's gradient independent of its batch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def cw_margin(logits: Tensor, y: Tensor) -> Tensor:
    """max_{i≠y} z_i − z_y: positive once the example is misclassified (the L∞ C&W loss of Madry et al.)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return others.amax(dim=1) - true


def released_cw(logits: Tensor, y: Tensor, kappa: float) -> Tensor:
    """The Hedge paper's released ``cw_loss``: −max(z_y − max_i((1 − 1_y)·z)_i + κ, 0), per example.

    Maximised, it pulls z_y below the largest other logit until the margin reaches κ, then its gradient
    vanishes. As released, the max runs over logits with the true class's zeroed, not removed: where
    every other logit is negative, that max is 0."""
    onehot = F.one_hot(y, logits.shape[1]).to(logits.dtype)
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = ((1 - onehot) * logits).amax(dim=1)
    return -(true - other + kappa).clamp(min=0)


def sum_ce(logits: Tensor) -> Tensor:
    """Σ_c CE(z, c) = C·logsumexp(z) − Σ_c z_c: Hedge's objective, label-free."""
    return logits.shape[1] * torch.logsumexp(logits, dim=1) - logits.sum(dim=1)


def kl_uniform(logits: Tensor) -> Tensor:
    """KL(uniform ‖ softmax(z)) = sum_ce / C − log C: same maximiser and same gradient sign as sum_ce."""
    return -F.log_softmax(logits, dim=1).mean(dim=1) - math.log(logits.shape[1])
