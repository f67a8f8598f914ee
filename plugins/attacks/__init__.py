"""Built-in attack plugins."""

from __future__ import annotations

from harness.hookspecs import hookimpl
from harness.specs import Kind, PluginSpec, spec_from_dataclass


@hookimpl
def harness_attacks() -> list[PluginSpec]:
    from harness_plugins.attacks.autoattack_bridge import APGD, APGDTargeted, AutoAttackEnsemble, FABTargeted, Square
    from harness_plugins.attacks.adaptive import Adaptive
    from harness_plugins.attacks.clean import Clean
    from harness_plugins.attacks.deepfool import DeepFool
    from harness_plugins.attacks.hedge_attacks import DAABlack, DAAWhite, HedgeAware, ReverseHedge
    from harness_plugins.attacks.pgd import CW, PGD
    from harness_plugins.attacks.rays import RayS
    from harness_plugins.attacks.suite import AdaptiveSuite, BPDAPGD
    from harness_plugins.attacks.torchattacks_bridge import TorchAttacks

    table = [
        (Clean, "clean"), (PGD, "pgd"), (CW, "cw"), (DeepFool, "deepfool"), (APGD, "apgd-ce"),
        (APGDTargeted, "apgd-t"), (FABTargeted, "fab-t"), (Square, "square"), (RayS, "rays"),
        (AutoAttackEnsemble, "autoattack"), (TorchAttacks, "torchattacks"), (ReverseHedge, "reverse-hedge"),
        (HedgeAware, "hedge-aware"), (DAAWhite, "daa-white"), (DAABlack, "daa-black"), (Adaptive, "adaptive"),
        (BPDAPGD, "bpda-pgd"), (AdaptiveSuite, "adaptive-suite"),
    ]
    return [spec_from_dataclass(cls, name=name, kind=Kind.ATTACK) for cls, name in table]
