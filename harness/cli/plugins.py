"""`harness plugins`: every discovered plugin, what it declares, its parameters and its distribution."""

from __future__ import annotations

import argparse

from harness.api.registry import Registry


def cmd_plugins(args: argparse.Namespace, registry: Registry) -> int:
    from harness.api.specs import Kind

    for kind in Kind:
        specs = [s for s in registry.all() if s.kind is kind]
        if args.kind and kind.value != args.kind:
            continue
        print(f"{kind.plural}:")
        for spec in specs:
            print(f"  {spec.id}  —  {spec.description}  [{spec.distribution}]")
            declared = _declared(spec)
            if declared:
                print(f"      ({declared})")
            for p in spec.params:
                bounds = f" ({p.range_text()})" if p.minimum is not None or p.maximum is not None else ""
                print(f"      {p.name}: {p.type_name()} = {p.default_text()}{bounds}" + (f"  # {p.help}" if p.help else ""))
    if registry.commands() and not args.kind:
        print("commands:")
        for command in registry.commands():
            print(f"  harness {command.name}  —  {command.help}")
    return 0


def _declared(spec) -> str:
    """What an attack or defense declares, as tables and the core read it: display name, role, access, randomness,
    norms, and its cost per example at its defaults (an attack against the bare model at L∞ 8/255)."""
    from harness.api.interfaces import Access, Attack, AttackSuite, Defense
    from harness.api.threat import Norm, ThreatModel

    factory = spec.factory
    if not isinstance(factory, type) or not issubclass(factory, (Attack, Defense)):
        return ""
    parts = [f"shown as {factory.display_name or spec.id!r}", f"role {factory.role.value}"]
    if issubclass(factory, Attack):
        access = factory.access.value if isinstance(factory.access, Access) else "set by the class it names"
        parts += [f"access {access}", "norms " + "/".join(n.value for n in factory.norms)]
        parts += ["runs in fp32 under bf16"] if factory.full_precision else []
    else:
        parts.append("randomised: majority vote" if factory.randomized else "deterministic")
    try:
        built = factory()
        if isinstance(built, AttackSuite):
            return "; ".join(parts + ["runs as its members: " + ", ".join(name for name, _ in built.members())])
        if isinstance(built, Attack) and built.adaptive:
            return "; ".join(parts + ["attacks through each defense of the grid (its cost there: --dry-run)"])
        cost = built.passes(ThreatModel(Norm.LINF, 8 / 255)) if isinstance(built, Attack) else built.passes()
        parts.append(f"cost {cost.forward:,.0f} forward + {cost.backward:,.0f} backward passes per example"
                     + (" before its prediction" if isinstance(built, Defense) else ""))
    except Exception:  # noqa: BLE001 - a plugin that needs parameters has no cost at its defaults
        parts.append("cost: set by its parameters")
    return "; ".join(parts)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``plugins`` sub-command and its options."""
    p = sub.add_parser("plugins", help="list every discovered plugin, its parameters and its distribution")
    p.add_argument("--kind", choices=["attack", "defense", "model", "dataset"])
    p.set_defaults(func=cmd_plugins)
