"""The table every attack test runs over: (id, attack factory, norm, eps on digits, eps on CIFAR).

Add an attack here and it gets every property check in test_attacks.py for free. Budgets are
small so that the default suite stays fast; the defaults of each plugin are the paper's.
"""

from __future__ import annotations

from plugins.attacks.pgd import CW, PGD

ATTACKS = [
    ("pgd-linf", lambda: PGD(steps=10, step_size=2 / 255), "Linf"),
    ("cw-linf", lambda: CW(steps=10, step_size=2 / 255), "Linf"),
    ("pgd-l2", lambda: PGD(steps=10), "L2"),
    ("cw-l2", lambda: CW(steps=10), "L2"),
]
EPS = {("digits", "Linf"): 0.1, ("digits", "L2"): 1.0, ("cifar", "Linf"): 8 / 255, ("cifar", "L2"): 0.5}
