"""The paper's released code and the official RayS, re-implemented plainly: the baselines our plugins are held to.

Each function follows its original line by line (burcywu/hedge_defense: hedge_defense.py, attacks.py,
main_cifar10.py; uclaml/RayS: RayS.py), with one change everywhere: randomness comes from an explicit
generator (the originals draw from torch's global RNG), so that a test can give a plugin and its
reference the same draws. Used by tests (the plugins must give the same outputs) and by
benchmarks/throughput.py (our loops must be faster on the same model and batch).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def uniform(x, eps, generator):
    """The released code's random start / noise: x + U(−ε, ε), not clipped."""
    return x + torch.empty_like(x).uniform_(-eps, eps, generator=generator)


def released_hedge(model, X, generator, steps=20, step_size=0.007, epsilon=0.031, summed=False):
    """HedgeDefense.hedge_defense; returns the predicted labels (argmax of the logits summed over iterates 1 … K−1),
    or with ``summed=True`` that sum itself.

    As released: a random start that is not clipped to [0,1], KL(uniform ‖ softmax) with
    ``loss.backward()`` (so the weights get gradients too)."""
    X_hedge = uniform(X, epsilon, generator)
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
    return sum_pred.detach() if summed else sum_pred.detach().argmax(1)


def released_cw_loss(logits, y, confidence=0):
    onehot_y = F.one_hot(y, num_classes=logits.shape[1]).float()
    self_loss = F.nll_loss(-logits, y, reduction="none")
    other_loss = torch.max((1 - onehot_y) * logits, dim=1)[0]
    return -torch.mean(torch.clamp(self_loss - other_loss + confidence, 0))


def released_pgd(model, X, y, generator, attack_loss="ce", steps=20, step_size=0.007, epsilon=0.031):
    """PGDAttack.pgd_attack (attack_loss "ce" or "cw")."""
    X_pgd = uniform(X, epsilon, generator)
    for _ in range(steps):
        X_pgd = X_pgd.detach().requires_grad_(True)
        logits = model(X_pgd)
        loss = F.cross_entropy(logits, y) if attack_loss == "ce" else released_cw_loss(logits, y)
        (grad,) = torch.autograd.grad(loss, X_pgd)
        X_pgd = X_pgd.detach() + step_size * grad.sign()
        X_pgd = torch.clamp(X + torch.clamp(X_pgd - X, -epsilon, epsilon), 0, 1)
    return X_pgd.detach()


def released_reverse(model, X, generator, steps=20, step_size=0.007, epsilon=0.031):
    """ReverseAttack.pgd_attack: descent on KL(uniform ‖ softmax)."""
    X_pgd = uniform(X, epsilon, generator)
    for _ in range(steps):
        X_pgd = X_pgd.detach().requires_grad_(True)
        logits = model(X_pgd)
        loss = F.kl_div(F.log_softmax(logits, dim=1), torch.ones_like(logits) / logits.shape[1], reduction="batchmean")
        (grad,) = torch.autograd.grad(loss, X_pgd)
        X_pgd = X_pgd.detach() - step_size * grad.sign()
        X_pgd = torch.clamp(X + torch.clamp(X_pgd - X, -epsilon, epsilon), 0, 1)
    return X_pgd.detach()


def released_daa_white(model, X, y, generator, step_size=0.007, epsilon=0.031, noise_radius=0.093):
    """DAAWhite.pgd_attack: 10 outer steps, each accumulating 10 CE sign-gradients at hedged points."""
    X_pgd = uniform(X, epsilon, generator)
    for _ in range(10):
        X_inv = X_pgd.detach()
        all_eta = 0.0
        for _ in range(10):
            X_inv = X_inv.detach().requires_grad_(True)
            logits = model(X_inv)
            loss = F.kl_div(F.log_softmax(logits, dim=1), torch.ones_like(logits) / logits.shape[1],
                            reduction="batchmean")
            (grad,) = torch.autograd.grad(loss, X_inv)
            X_inv = X_inv.detach() + step_size * grad.sign()
            X_inv = torch.clamp(X_pgd + torch.clamp(X_inv - X_pgd, -noise_radius, noise_radius), 0, 1)
            X_inv = X_inv.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(model(X_inv), y), X_inv)
            all_eta = all_eta + 0.007 * grad.sign()
        X_pgd = X_pgd.detach() + all_eta
        X_pgd = torch.clamp(X + torch.clamp(X_pgd - X, -epsilon, epsilon), 0, 1)
    return X_pgd.detach()


def released_random_noise(model, X, generator, epsilon=0.031):
    """eval_random_noise: one draw of x + U(−ε, ε), not clipped; returns the predicted labels."""
    with torch.no_grad():
        return model(uniform(X, epsilon, generator)).argmax(1)


def algorithm6(model, X, y, generator, T=20, K=20, eta=4 / 255, eps_a=8 / 255, eps_d=8 / 255):
    """The paper's Algorithm 6 as printed (one η for both loops), with Algorithm 1's [0,1] clipping."""
    def start(x, eps):
        return torch.clamp(x + torch.empty_like(x).uniform_(-eps, eps, generator=generator), 0, 1)

    def sum_ce(logits):
        return (logits.shape[1] * torch.logsumexp(logits, 1) - logits.sum(1)).sum()

    x_adv = start(X, eps_a)
    for _ in range(T):
        hedged = start(x_adv, eps_d)
        for _ in range(K):
            hedged = hedged.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(sum_ce(model(hedged)), hedged)
            hedged = torch.clamp(x_adv + torch.clamp(hedged.detach() + eta * grad.sign() - x_adv, -eps_d, eps_d), 0, 1)
        hedged = hedged.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(hedged), y, reduction="sum"), hedged)
        x_adv = torch.clamp(X + torch.clamp(x_adv + eta * grad.sign() - X, -eps_a, eps_a), 0, 1)
    return x_adv.detach()


def official_rays(model, x, y, epsilon, query_limit=10000, tol=1e-3):
    """uclaml/RayS's batch RayS (RayS.py), as the Hedge paper's copy uses it, on any device.

    Two changes, both on purpose and both the harness's: a binary search stops at ``query_limit`` (the
    official one may overshoot by a few queries), and the final point is projected into the ε-ball, as
    the Hedge paper's copy does. Returns (x_adv, queries)."""
    shape = list(x.shape)
    dim = int(np.prod(shape[1:]))
    queries = torch.zeros_like(y)
    sgn_t = torch.ones(shape, device=x.device)
    d_t = torch.full((len(x),), float("inf"), device=x.device)
    x_final = torch.clamp(x + sgn_t, 0, 1)

    def get_xadv(v, d):
        return torch.clamp(x + d.view(len(x), 1, 1, 1) * v, 0, 1)

    def search_succ(point, mask):
        queries[mask] += 1
        with torch.no_grad():
            return model(point[mask]).argmax(1) != y[mask]

    block_level = block_ind = 0
    for _ in range(query_limit):
        block_size = int(np.ceil(dim / 2 ** block_level))
        start, end = block_ind * block_size, min(dim, (block_ind + 1) * block_size)
        valid = (queries < query_limit).nonzero().flatten()
        attempt = sgn_t.clone().view(shape[0], dim)
        attempt[valid, start:end] *= -1.0
        attempt = attempt.view(shape)
        # binary search for the boundary along the attempted direction
        sgn_norm = attempt.view(len(x), -1).norm(dim=1)
        sgn_unit = attempt / sgn_norm.view(len(x), 1, 1, 1)
        d_start, d_end = torch.zeros_like(d_t), d_t.clone()
        succ = search_succ(get_xadv(sgn_unit, d_t), valid)
        to_search = valid[succ]
        d_end[to_search] = torch.minimum(d_t, sgn_norm)[to_search]
        while len(to_search) > 0:
            to_search = to_search[queries[to_search] < query_limit]   # the harness's cap
            if not len(to_search):
                break
            d_mid = (d_start + d_end) / 2.0
            mid_succ = search_succ(get_xadv(sgn_unit, d_mid), to_search)
            d_end[to_search[mid_succ]] = d_mid[to_search[mid_succ]]
            d_start[to_search[~mid_succ]] = d_mid[to_search[~mid_succ]]
            to_search = to_search[(d_end - d_start)[to_search] > tol]
        update = (d_end < d_t).nonzero().flatten()
        d_t[update] = d_end[update]
        x_final[update] = get_xadv(sgn_unit, d_end)[update]
        sgn_t[update] = attempt[update]
        block_ind += 1
        if block_ind == 2 ** block_level or end == dim:
            block_level, block_ind = block_level + 1, 0
        if bool((queries >= query_limit).all()):
            break
    projected = torch.clamp(x + torch.clamp(x_final - x, -epsilon, epsilon), 0, 1)
    return projected, queries


def released_internal_defense(model, X, generator, step_size=0.045, epsilon=0.09):
    """InternalDefense.forward, what DAABlack's Square queries: one KL step from x + U(−ε, ε), then the model."""
    X_hedge = uniform(X, epsilon, generator).requires_grad_(True)
    logits = model(X_hedge)
    loss = F.kl_div(F.log_softmax(logits, dim=1), torch.ones_like(logits) / 10, reduction="batchmean")
    (grad,) = torch.autograd.grad(loss, X_hedge)
    X_hedge = X_hedge.detach() + step_size * grad.sign()
    X_hedge = torch.clamp(X + torch.clamp(X_hedge - X, -epsilon, epsilon), 0, 1)
    with torch.no_grad():
        return model(X_hedge)
