"""Throughput of the hot paths, side by side in one process, on the same model and batch.

    python benchmarks/throughput.py                       # CPU: PreActResNet-18, fp32
    python benchmarks/throughput.py --arch wrn-28-10      # RobustBench's "Standard" WRN-28-10, the GPU anchor model
    python benchmarks/throughput.py --precisions fp32,tf32,bf16,bf16+cl,bf16+cl+compile   # on a GPU

For each precision: one forward + input-gradient step (the measured step ceiling), our Hedge (K = 20)
against the paper's released loop, our PGD-20 against torchattacks.PGD, and our APGD-CE path against
pyautoattack's APGDAttack called directly, all under the same autocast/TF32 setting. Reports images/s,
our speed-up over the reference, and the fraction of the step ceiling a K-step loop reaches
(ceiling = step rate / (K + 1)). Writes benchmarks/results/throughput-<device>.json.

It also counts the FLOPs of each loop (torch.utils.flop_counter; convolutions and matmuls, which are
nearly all the work): the released loop's backward() also computes every weight gradient, ours does
not, and nothing else differs in arithmetic. And it reports the most our Hedge could gain on this
device without changing the arithmetic: a loop at the step ceiling (K + 1 measured steps) over the
released loop's measured rate.

Weights do not change speed, so the architectures are built without weights (no download needed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import device_name, timed, write  # noqa: E402
from benchmarks.reference_loops import released_hedge  # noqa: E402
from harness.api.threat import Norm, ThreatModel  # noqa: E402
from harness.run.precision import Compute, Precision  # noqa: E402
from harness_plugins.attacks.autoattack_bridge import APGD  # noqa: E402
from harness_plugins.attacks.pgd import PGD  # noqa: E402
from harness_plugins.defenses.hedge import Hedge  # noqa: E402
from harness_plugins.models.checkpoint import build_arch  # noqa: E402

ARCHS = {"preact-resnet18": "robustbench:cifar10:Linf:Wong2020Fast", "wrn-28-10": "robustbench:cifar10:Linf:Standard"}
SETTINGS = {
    "fp32": Compute(Precision.FP32), "fp32+cl": Compute(Precision.FP32, channels_last=True),
    "fp32+compile": Compute(Precision.FP32, compile=True), "tf32": Compute(Precision.TF32), "bf16": Compute(Precision.BF16),
    "bf16+cl": Compute(Precision.BF16, channels_last=True),
    "bf16+cl+compile": Compute(Precision.BF16, channels_last=True, compile=True),
}


def flop_counts(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, k: int) -> dict:
    """FLOPs per image of a forward pass, our gradient step, the released loop's step, and of the K-step loops."""
    from torch.utils.flop_counter import FlopCounterMode

    def count(fn) -> float:
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops() / len(x)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def input_gradient_step() -> None:  # ours: the graph asks for the input's gradient only
        xi = x.detach().clone().requires_grad_(True)
        # model(xi + 0): the counter's module hooks reject a leaf input under autograd.grad; the FLOPs are the same
        torch.autograd.grad(F.cross_entropy(model(xi + 0), y, reduction="sum"), xi)

    def released_step() -> None:  # the released code: backward() fills the weights' gradients too
        xi = x.detach().clone().requires_grad_(True)
        F.cross_entropy(model(xi), y, reduction="sum").backward()
        for p in model.parameters():
            p.grad = None

    fwd, ours, released = count(forward), count(input_gradient_step), count(released_step)
    ours_loop, released_loop = k * ours + fwd, k * released  # ours predicts with one more forward pass
    return {"forward": fwd, "ours_step": ours, "released_step": released, f"ours_hedge_{k}": ours_loop,
            f"released_hedge_{k}": released_loop, "released_over_ours": released_loop / ours_loop}


def bench(model_fp32: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, setting: Compute, k: int, repeats: int,
          device: torch.device) -> dict:
    model = setting.prepare_model(model_fp32)
    threat = ThreatModel(Norm.LINF, 8 / 255)
    gen = lambda: torch.Generator(device=device).manual_seed(0)  # noqa: E731

    def steps() -> None:  # K steps in one timed call, like the loops: one short call is too noisy a ceiling
        for _ in range(k):
            xi = x.detach().clone().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(xi), y, reduction="sum"), xi)

    def ours_hedge() -> None:
        hedge = Hedge(steps=k, step_size=0.007, eps_d=0.031)
        with torch.no_grad():
            hedge.logits(model, x, generator=gen()).argmax(1)

    def released() -> None:
        released_hedge(model, x, gen(), steps=k)
        for p in model.parameters():  # the released loop's backward() fills weight gradients
            p.grad = None

    import torchattacks
    from pyautoattack.autopgd_base import APGDAttack

    cases = {
        f"{k} plain gradient steps": (steps, k),
        f"ours hedge-{k}": (ours_hedge, k + 1),
        f"released hedge loop-{k}": (released, k),
        f"ours pgd-{k}": (lambda: PGD(steps=k, step_size=2 / 255)(model, x, y, threat, generator=gen()), k + 1),
        f"torchattacks PGD-{k}": (lambda: torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=k)(x, y), k + 1),
        f"ours apgd-ce-{k}": (lambda: APGD(n_iter=k)(model, x, y, threat, generator=gen()), k + 1),
        f"pyautoattack APGD-CE-{k}": (lambda: APGDAttack(model, n_iter=k, eps=8 / 255, norm="Linf", seed=0,
                                                          device=device).perturb(x, y), k + 1),
    }
    rows = {}
    with setting.context(device):
        for name, (fn, passes) in cases.items():
            seconds = timed(fn, device, repeats=repeats)
            rows[name] = {"seconds": seconds, "images_per_s": len(x) / seconds, "passes": passes}
    plain = rows[f"{k} plain gradient steps"]
    step_rate = plain["images_per_s"] * plain["passes"]  # one forward + input-gradient step
    for name, row in rows.items():
        row["fraction_of_step_ceiling"] = row["images_per_s"] / (step_rate / row["passes"])
    # a K-step loop costs K gradient steps plus (ours) one cheaper forward pass: ≈ K + 1 steps at most
    pairs = {"hedge": (f"ours hedge-{k}", f"released hedge loop-{k}"), "pgd": (f"ours pgd-{k}", f"torchattacks PGD-{k}"),
             "apgd": (f"ours apgd-ce-{k}", f"pyautoattack APGD-CE-{k}")}
    speedups = {what: rows[ours]["images_per_s"] / rows[ref]["images_per_s"] for what, (ours, ref) in pairs.items()}
    # the most a Hedge loop can gain here at the same arithmetic: K + 1 steps at the measured step rate
    ceiling = (step_rate / rows[f"ours hedge-{k}"]["passes"]) / rows[f"released hedge loop-{k}"]["images_per_s"]
    return {"results": rows, "speedup_over_reference": speedups, "step_images_per_s": step_rate,
            "hedge_speedup_ceiling": ceiling}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=sorted(ARCHS), default="preact-resnet18")
    ap.add_argument("--batch", type=int, default=None, help="default: 32 on CPU, 500 on CUDA")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=None, help="default: 1 on CPU, 3 on CUDA")
    ap.add_argument("--precisions", default=None, help=f"comma-separated from {', '.join(SETTINGS)}; "
                    "default: fp32,bf16+cl on CPU, all on CUDA")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch or (500 if cuda else 32)
    repeats = args.repeats or (3 if cuda else 1)
    # bf16 autocast on a CPU without bf16 units (AVX512-BF16/AMX) is ~13x slower than fp32: not a CPU default
    precisions = (args.precisions or ("fp32,tf32,bf16,bf16+cl,bf16+cl+compile" if cuda else "fp32")).split(",")
    model = build_arch(ARCHS[args.arch], num_classes=10, in_channels=3)[0].to(device).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, 32, 32, generator=g).to(device)
    with torch.no_grad():  # labels the model agrees with: APGD skips misclassified inputs, which would flatter it
        y = model(x).argmax(1)
    flops = flop_counts(model, x, y, args.steps)
    out = {"arch": args.arch, "batch": batch, "steps": args.steps, "flops_per_image": flops, "precisions": {}}
    print(f"device: {device_name(device)}; {args.arch}; batch {batch}; K = {args.steps}")
    print(f"GFLOP per image: forward {flops['forward'] / 1e9:.2f}, our step {flops['ours_step'] / 1e9:.2f}, "
          f"released step {flops['released_step'] / 1e9:.2f}; the released Hedge-{args.steps} loop does "
          f"{flops['released_over_ours']:.2f}× our loop's arithmetic")
    for name in precisions:
        result = bench(model, x, y, SETTINGS[name], args.steps, repeats, device)
        out["precisions"][name] = result
        print(f"[{name}] one forward + input-gradient step: {result['step_images_per_s']:.1f} img/s "
              f"({result['step_images_per_s'] * flops['ours_step'] / 1e12:.3f} TFLOP/s)")
        for case, row in result["results"].items():
            print(f"  {case:<28} {row['images_per_s']:10.1f} img/s   {row['fraction_of_step_ceiling']:6.1%} of the "
                  f"step ceiling")
        print("  speed-up over the reference: " + ", ".join(f"{k} {v:.2f}×" for k, v in
                                                              result["speedup_over_reference"].items())
              + f"; a Hedge loop at the step ceiling would be {result['hedge_speedup_ceiling']:.2f}×")
        path = write("throughput", device, out)  # after every precision: a timeout loses only the one running
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
