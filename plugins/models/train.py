"""``harness train``: small robust models of this package's architectures, on any dataset plugin's training split.

Methods: standard, fgsm-rs (Wong et al. 2020, "Fast is better than free"), pgd (Madry et al. 2018)
and trades (Zhang et al. 2019: CE + β·KL(f(x) ‖ f(x')), x' maximising that KL).
A checkpoint (weights + optimiser + epoch) is written every epoch, so an interrupted run resumes;
the best epoch by PGD accuracy on a held-out slice is kept, which guards against catastrophic
overfitting of FGSM training. Writes ``<out>`` (a plain state_dict) and ``<out>.json`` (its record).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from harness.api import Command, HarnessError, Kind, Norm, Registry, ThreatModel, ascend, cross_entropy, generator_for
from harness_plugins.models.archs import ARCHS


@dataclass(frozen=True)
class TrainConfig:
    arch: str
    dataset: str
    out: str
    method: Literal["standard", "fgsm-rs", "pgd", "trades"] = "fgsm-rs"
    eps: float = 0.1
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    pgd_steps: int = 7
    beta: float = 6.0
    holdout: int = 200
    seed: int = 0
    device: str = "cpu"


def _perturb(model: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig, gen: torch.Generator) -> Tensor:
    ball = ThreatModel(Norm.LINF, cfg.eps)
    if cfg.method == "standard":
        return x
    start = ball.random_start(x, gen)
    if cfg.method == "fgsm-rs":  # one step of 1.25·ε from a random start (Wong et al.)
        return ascend(model, x, start, lambda z: cross_entropy(z, y), ball=ball, steps=1, step_size=1.25 * cfg.eps)
    if cfg.method == "trades":  # maximise KL(f(x) ‖ f(x')) from x + 0.001·N(0, 1) (Zhang et al.)
        with torch.no_grad():
            clean = F.softmax(model(x), dim=1)
        start = (x + 0.001 * torch.randn(x.shape, generator=gen, device=x.device)).clamp(0, 1)
        kl = lambda z: F.kl_div(F.log_softmax(z, dim=1), clean, reduction="none").sum(1)  # noqa: E731
        return ascend(model, x, start, kl, ball=ball, steps=cfg.pgd_steps, step_size=2.5 * cfg.eps / cfg.pgd_steps)
    return ascend(model, x, start, lambda z: cross_entropy(z, y), ball=ball, steps=cfg.pgd_steps,
                  step_size=2.5 * cfg.eps / cfg.pgd_steps)


def pgd_accuracy(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int = 10) -> float:
    ball = ThreatModel(Norm.LINF, eps)
    gen = generator_for(0, "eval", device=x.device)
    x_adv = ascend(model, x, ball.random_start(x, gen), lambda z: cross_entropy(z, y), ball=ball, steps=steps,
                   step_size=2.5 * eps / steps)
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).float().mean())


def train(cfg: TrainConfig, train_x: np.ndarray, train_y: np.ndarray, test_x: Tensor, test_y: Tensor,
          progress: bool = True) -> dict:
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    x_all = torch.as_tensor(train_x, dtype=torch.float32, device=device)
    y_all = torch.as_tensor(train_y, dtype=torch.int64, device=device)
    x_hold, y_hold = x_all[-cfg.holdout:], y_all[-cfg.holdout:]
    x_tr, y_tr = x_all[:-cfg.holdout], y_all[:-cfg.holdout]
    model = ARCHS[cfg.arch](int(y_all.max()) + 1, x_all.shape[1]).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps_per_epoch = (len(x_tr) + cfg.batch_size - 1) // cfg.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    out = Path(cfg.out)
    state_path = out.with_suffix(".train-state.pt")
    record = {"config": asdict(cfg), "epochs": [], "best_epoch": None}
    best = -1.0
    first_epoch = 0
    if state_path.exists():  # resume
        state = torch.load(state_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        first_epoch, best = int(state["epoch"]) + 1, float(state["best"])
        record = json.loads(state_path.with_suffix(".json").read_text())
    for epoch in range(first_epoch, cfg.epochs):
        model.train()
        gen = generator_for(cfg.seed, "train", epoch, device=device)
        order = torch.randperm(len(x_tr), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch)).to(device)
        started, total_loss = time.time(), 0.0
        for i in tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False):
            idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            x, y = x_tr[idx], y_tr[idx]
            model.eval()  # attack the network as it will be evaluated (no batch-norm updates)
            x_in = _perturb(model, x, y, cfg, gen)
            model.train()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                if cfg.method == "trades":
                    logits = model(x)
                    loss = F.cross_entropy(logits, y) + cfg.beta * F.kl_div(
                        F.log_softmax(model(x_in), dim=1), F.softmax(logits, dim=1), reduction="batchmean")
                else:
                    loss = F.cross_entropy(model(x_in), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            total_loss += float(loss.detach())
        model.eval()
        with torch.no_grad():
            hold_clean = float((model(x_hold).argmax(1) == y_hold).float().mean())
        hold_pgd = pgd_accuracy(model, x_hold, y_hold, cfg.eps)
        record["epochs"].append({"epoch": epoch + 1, "loss": total_loss / steps_per_epoch, "holdout_clean": hold_clean,
                                 "holdout_pgd": hold_pgd, "seconds": time.time() - started})
        score = hold_pgd if cfg.method != "standard" else hold_clean
        if score > best:
            best, record["best_epoch"] = score, epoch + 1
            out.parent.mkdir(parents=True, exist_ok=True)
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "epoch": epoch, "best": best}, state_path)
        state_path.with_suffix(".json").write_text(json.dumps(record))
    best_model = ARCHS[cfg.arch](int(y_all.max()) + 1, x_all.shape[1]).to(device)
    best_model.load_state_dict(torch.load(out, map_location=device, weights_only=True))
    best_model.eval()
    test_x, test_y = test_x.to(device), test_y.to(device)
    with torch.no_grad():
        record["test_clean"] = float((best_model(test_x).argmax(1) == test_y).float().mean())
    record["test_pgd10"] = pgd_accuracy(best_model, test_x, test_y, cfg.eps)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    state_path.unlink(missing_ok=True)
    state_path.with_suffix(".json").unlink(missing_ok=True)
    return record


def _arguments(p) -> None:
    p.add_argument("--dataset", required=True, help="a dataset plugin with a training split (harness plugins --kind dataset)")
    p.add_argument("--dataset-root", help="the dataset's root folder, where its plugin takes one")
    p.add_argument("--arch", default="small-cnn", choices=sorted(ARCHS))
    p.add_argument("--method", choices=["standard", "fgsm-rs", "pgd", "trades"], default="fgsm-rs")
    p.add_argument("--beta", type=float, default=6.0, help="TRADES' β")
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-test", type=int, default=497, help="test examples for the final accuracies")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True)
    p.add_argument("--quiet", action="store_true")


def _check_arguments(args) -> None:
    """Every argument that cannot mean anything is refused before a dataset is read."""
    import math

    for name, value, low, high in (("--eps", args.eps, 0, 1), ("--lr", args.lr, 0, None), ("--beta", args.beta, 0, None)):
        if not math.isfinite(value) or value < low or (high is not None and value > high) or (name == "--lr" and value == 0):
            bound = f"in [{low}, {high}]" if high is not None else f"> {low}" if name == "--lr" else f">= {low}"
            raise HarnessError(f"{name} must be a finite number {bound}; got {value}")
    for name, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size), ("--n-test", args.n_test)):
        if value < 1:
            raise HarnessError(f"{name} must be >= 1; got {value}")
    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        raise HarnessError(f"--device {args.device!r} is not a torch device; use cpu, cuda or cuda:N")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError(f"--device {args.device} was asked for but torch sees no GPU here; use --device cpu")
    out = Path(args.out)
    if out.is_dir() or not out.name:
        raise HarnessError(f"--out {args.out} is a directory; pass the weights file to write, e.g. --out model.pt")


def _run(args, registry: Registry) -> int:
    import sys

    _check_arguments(args)
    spec = registry.get(Kind.DATASET, args.dataset)
    dataset = spec.factory(**({"root": args.dataset_root} if args.dataset_root else {}))
    train_x, train_y = dataset.train_arrays()
    test = dataset.load(args.n_test)
    cfg = TrainConfig(arch=args.arch, dataset=args.dataset, out=args.out, method=args.method, eps=args.eps,
                      beta=args.beta, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      device=args.device)
    record = train(cfg, train_x, train_y, test.x, test.y, progress=not args.quiet)
    record["command"] = "harness " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("harness") else None
    Path(args.out).with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"best epoch {record['best_epoch']}: test clean {record['test_clean']:.4f}, "
          f"PGD-10 at eps {args.eps:g} {record['test_pgd10']:.4f} -> {args.out}")
    return 0


TRAIN = Command(name="train", help="train a small (robust) model of this package's architectures on a dataset "
                "plugin's training split", configure=_arguments, run=_run)
