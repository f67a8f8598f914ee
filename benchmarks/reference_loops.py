"""The paper's released code, re-implemented plainly: the baseline our loops are held against.

Used by tests (our `hedge` with predict="released" must give the same predictions) and by
benchmarks/throughput.py (our Hedge must be faster on the same model and batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def released_hedge(model, X, generator, steps=20, step_size=0.007, epsilon=0.031):
    """The released HedgeDefense.hedge_defense loop (its RNG made explicit); returns predicted labels.

    As released: a random start that is not clipped to [0,1], KL(uniform ‖ softmax) with
    ``loss.backward()`` (so the weights get gradients too), and the prediction is the argmax of
    the logits summed over iterates 1 … K−1.
    """
    X_hedge = X + torch.empty_like(X).uniform_(-epsilon, epsilon, generator=generator)
    sum_pred = None
    for k in range(steps):
        X_hedge = X_hedge.detach().requires_grad_(True)
        logits = model(X_hedge)
        sum_pred = torch.zeros_like(logits) if k == 0 else sum_pred + logits
        n = logits.shape[1]
        loss = F.kl_div(F.log_softmax(logits, dim=1), torch.ones_like(logits) / n, reduction="batchmean")
        loss.backward()
        X_hedge = X_hedge.detach() + step_size * X_hedge.grad.sign()
        X_hedge = torch.clamp(X + torch.clamp(X_hedge - X, -epsilon, epsilon), 0, 1)
    return sum_pred.detach().argmax(1)
