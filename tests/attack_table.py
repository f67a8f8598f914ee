"""The table every attack test runs over: (id, attack factory, norm, also on CIFAR in the default suite).

Add an attack here and it gets every property check in test_attacks.py for free. Budgets are
small so that the default suite stays fast; each plugin's defaults are the paper's. The heavy
ensembles run on CIFAR only under `-m slow`.
"""

from __future__ import annotations

from harness_plugins.attacks.autoattack_bridge import APGD, APGDTargeted, AutoAttackEnsemble, FABTargeted, Square
from harness_plugins.attacks.deepfool import DeepFool
from harness_plugins.attacks.pgd import CW, PGD
from harness_plugins.attacks.rays import RayS
from harness_plugins.attacks.torchattacks_bridge import TorchAttacks

ATTACKS = [
    ("pgd-linf", lambda: PGD(steps=10, step_size=2 / 255), "Linf", True),
    ("cw-linf", lambda: CW(steps=10, step_size=2 / 255), "Linf", True),
    ("pgd-l2", lambda: PGD(steps=10), "L2", True),
    ("cw-l2", lambda: CW(steps=10), "L2", True),
    ("deepfool-linf", lambda: DeepFool(steps=20), "Linf", True),
    ("deepfool-l2", lambda: DeepFool(steps=20), "L2", False),
    ("apgd-ce-linf", lambda: APGD(n_iter=10), "Linf", True),
    ("apgd-ce-l2", lambda: APGD(n_iter=10), "L2", False),
    ("apgd-t-linf", lambda: APGDTargeted(n_iter=10, n_target_classes=3), "Linf", False),
    ("apgd-t-l2", lambda: APGDTargeted(n_iter=10, n_target_classes=3), "L2", False),
    ("fab-t-linf", lambda: FABTargeted(n_iter=10, n_target_classes=3), "Linf", False),
    ("fab-t-l2", lambda: FABTargeted(n_iter=10, n_target_classes=3), "L2", False),
    ("square-linf", lambda: Square(n_queries=300), "Linf", False),
    ("square-l2", lambda: Square(n_queries=300), "L2", False),
    ("rays-linf", lambda: RayS(n_queries=500), "Linf", False),
    ("autoattack-linf", lambda: AutoAttackEnsemble(), "Linf", False),
    ("torchattacks-mifgsm", lambda: TorchAttacks(name="MIFGSM", kwargs={"steps": 10, "alpha": 0.02}), "Linf", True),
]
EPS = {("digits", "Linf"): 0.1, ("digits", "L2"): 1.0, ("cifar", "Linf"): 8 / 255, ("cifar", "L2"): 0.5}
