"""Attack speed, side by side in one process: ours against torchattacks and pyautoattack.

    python benchmarks/attacks.py [--model ../shared/models/cifar10-jpeg/fastat40.pt] [--batch 64] [--steps 10]

Prints images/s for each, the ratio to ours, and the floor of a K-step attack: K+1 times one
forward plus input-gradient pass. Writes benchmarks/results/attacks-<device>.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import device_name, timed, write  # noqa: E402
from harness.api.threat import Norm, ThreatModel  # noqa: E402
from harness_plugins.attacks.autoattack_bridge import APGD  # noqa: E402
from harness_plugins.attacks.deepfool import DeepFool  # noqa: E402
from harness_plugins.attacks.pgd import CW, PGD  # noqa: E402
from harness_plugins.datasets.cifar10_jpeg import Cifar10Jpeg  # noqa: E402
from harness_plugins.models.checkpoint import Checkpoint  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="../shared/models/cifar10-jpeg/fastat40.pt")
    ap.add_argument("--data", default="../shared/data/cifar10-jpeg")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    model = Checkpoint(arch="robustbench:cifar10:Linf:Wong2020Fast", path=args.model).load(device).module
    data = Cifar10Jpeg(root=args.data).load(args.batch)
    x, y = data.x.to(device), data.y.to(device)
    threat, k, eps = ThreatModel(Norm.LINF, 8 / 255), args.steps, 8 / 255
    gen = lambda: torch.Generator(device=device).manual_seed(0)  # noqa: E731

    def one_step():
        xi = x.clone().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(xi), y, reduction="sum"), xi)

    import torchattacks
    from pyautoattack.autopgd_base import APGDAttack

    step_s = timed(one_step, device, repeats=args.repeats)
    cases = {
        f"ours pgd-{k}": lambda: PGD(steps=k, step_size=2 / 255)(model, x, y, threat, generator=gen()),
        f"torchattacks PGD-{k}": lambda: torchattacks.PGD(model, eps=eps, alpha=2 / 255, steps=k)(x, y),
        f"ours cw-{k}": lambda: CW(steps=k, step_size=2 / 255)(model, x, y, threat, generator=gen()),
        f"ours apgd-ce-{k} (pyautoattack inside)": lambda: APGD(n_iter=k)(model, x, y, threat, generator=gen()),
        f"pyautoattack APGD-CE-{k} direct": lambda: APGDAttack(model, n_iter=k, eps=eps, norm="Linf", seed=0,
                                                               device=device).perturb(x, y),
        "ours deepfool Linf (batched)": lambda: DeepFool()(model, x, y, threat, generator=gen()),
        "torchattacks DeepFool (L2, per example)": lambda: torchattacks.DeepFool(model, steps=50, overshoot=0.02)(x, y),
    }
    rows = {}
    for name, fn in cases.items():
        seconds = timed(fn, device, repeats=1 if "DeepFool" in name or "deepfool" in name else args.repeats)
        rows[name] = {"seconds": seconds, "images_per_s": len(x) / seconds}
    floor = (k + 1) * step_s
    print(f"device: {device_name(device)}; model PreActResNet-18 (Wong2020Fast); batch {len(x)}; K = {k}")
    print(f"one forward + input-gradient pass: {step_s * 1000:.1f} ms; floor of a {k}-step attack: {floor:.3f} s "
          f"({len(x) / floor:.1f} img/s)")
    ours = rows[f"ours pgd-{k}"]["seconds"]
    for name, row in rows.items():
        row["seconds_over_floor"] = row["seconds"] / floor
        print(f"  {name:<42} {row['images_per_s']:9.1f} img/s   {row['seconds'] / ours:5.2f}× ours-pgd time   "
              f"{row['seconds_over_floor']:5.2f}× floor")
    path = write("attacks", device, {"batch": len(x), "steps": k, "step_seconds": step_s, "floor_seconds": floor,
                                     "results": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
