"""Per-batch observers: what the runner records beside the verdicts, without being part of them.

- :class:`GradientNorms`: ‖∇ₓ CE‖₁ at the clean input, for the baseline's units (the reports'
  zero-gradient check: attack success where the gradient is exactly zero points at masking).
- :class:`ExampleCapture`: images and SSIM of a unit's first examples (the reports' Figure 2c).
- :class:`LipschitzGaps`: for examples a defense flipped, the local-Lipschitz gap between the false
  and the true class (the paper's Section 4.2.2, Figure 2b); the grid's ``lipschitz`` option.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from harness.api.interfaces import Defense, Role
from harness.run.batch import BatchContext
from harness.storage.records import ExampleRow, GapRow


class Observer:
    """Hooks the runner calls on every batch; each returns what it adds to the batch's records."""

    def columns(self, ctx: BatchContext, x_adv: Tensor) -> dict[str, list[Any]]:
        """Extra per-example fields of the batch's result rows."""
        return {}

    def examples(self, ctx: BatchContext, label: str, defense: Defense, x_adv: Tensor, pred: Tensor) -> list[ExampleRow]:
        """Saved images for one defense of the batch."""
        return []

    def records(self, ctx: BatchContext, x_adv: Tensor, preds: dict[str, Tensor]) -> dict[str, list[Any]]:
        """Records of other tables, once every defense has predicted (``preds``: defense label → prediction)."""
        return {}


def input_gradient_norm(model: torch.nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """‖∇ₓ CE(f(x), y)‖₁ per example. Zero means gradient attacks have nothing to follow (masking)."""
    with torch.enable_grad():
        point = x.detach().clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(point), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, point)
    return grad.flatten(1).abs().sum(1)


class GradientNorms(Observer):
    def columns(self, ctx: BatchContext, x_adv: Tensor) -> dict[str, list[Any]]:
        if ctx.attack.role is not Role.BASELINE:  # once per (model, repeat) is enough: the clean point
            return {}
        return {"grad_norm": input_gradient_norm(ctx.model, ctx.x, ctx.y).tolist()}


@dataclass
class ExampleCapture(Observer):
    """Clean, adversarial and one defended draw of the first ``count`` examples of every unit."""

    count: int

    def examples(self, ctx: BatchContext, label: str, defense: Defense, x_adv: Tensor, pred: Tensor) -> list[ExampleRow]:
        from harness.analysis.analytics import png_bytes, ssim

        m = min(self.count - ctx.start, len(ctx.x))
        if m <= 0:
            return []
        defended = defense.purify(ctx.model, x_adv[:m], generator=ctx.generator("examples", label)).detach()
        with torch.no_grad():
            pred_adv = ctx.model(x_adv[:m]).argmax(1)
        x, unit = ctx.x, ctx.unit
        return [ExampleRow(
            run_id=ctx.run_id, unit_key=unit.key, model=unit.model.label, attack=unit.attack.label, defense=label,
            repeat=unit.repeat, idx=ctx.start + i, label=int(ctx.y[i]), pred_adv=int(pred_adv[i]),
            pred_defended=int(pred[i]), ssim_adv=ssim(x[i], x_adv[i]), ssim_defended=ssim(x[i], defended[i]),
            clean_png=png_bytes(x[i]), adv_png=png_bytes(x_adv[i]), defended_png=png_bytes(defended[i]),
        ) for i in range(m)]


@dataclass
class LipschitzGaps(Observer):
    """L(false class) − L(true class) for every example a defense flipped against the reference defense.

    FtoT (wrong without the defense, right with it): the false class is the bare model's prediction;
    TtoF: the defended prediction. L is :func:`harness.analysis.analytics.local_lipschitz` around the adversarial
    example, over the attack's radius. It costs 2 × (samples + 1) gradients per flipped example."""

    samples: int = 16

    def records(self, ctx: BatchContext, x_adv: Tensor, preds: dict[str, Tensor]) -> dict[str, list[Any]]:
        from harness.analysis.analytics import local_lipschitz

        reference = next((e.label for e, d in ctx.defenses if d.role is Role.REFERENCE), None)
        if ctx.unit.adaptive or reference is None:
            return {}
        rows, y, base = [], ctx.y, preds[reference]
        for label, pred in preds.items():
            if label == reference:
                continue
            for kind, flipped, false_class in (("FtoT", (base != y) & (pred == y), base),
                                               ("TtoF", (base == y) & (pred != y), pred)):
                idx = flipped.nonzero().flatten()
                if not len(idx):
                    continue
                gen = ctx.generator("lipschitz", label, kind)
                l_false = local_lipschitz(ctx.model, x_adv[idx], false_class[idx], ctx.threat.eps, self.samples, gen)
                l_true = local_lipschitz(ctx.model, x_adv[idx], y[idx], ctx.threat.eps, self.samples, gen)
                unit = ctx.unit
                rows += [GapRow(run_id=ctx.run_id, unit_key=unit.key, model=unit.model.label, attack=unit.attack.label,
                                defense=label, repeat=unit.repeat, idx=ctx.start + int(i), kind=kind, label=int(y[i]),
                                false_class=int(false_class[i]), l_false=float(f), l_true=float(t), gap=float(f - t))
                         for i, f, t in zip(idx.tolist(), l_false, l_true)]
        return {"gaps": rows}
