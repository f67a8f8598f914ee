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


def sum_ce(logits: Tensor) -> Tensor:
    """Σ_c CE(z, c) = C·logsumexp(z) − Σ_c z_c: Hedge's objective, label-free."""
    return logits.shape[1] * torch.logsumexp(logits, dim=1) - logits.sum(dim=1)


def kl_uniform(logits: Tensor) -> Tensor:
    """KL(uniform ‖ softmax(z)) = sum_ce / C − log C: same maximiser and same gradient sign as sum_ce."""
    return -F.log_softmax(logits, dim=1).mean(dim=1) - math.log(logits.shape[1])
