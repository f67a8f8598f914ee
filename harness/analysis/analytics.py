"""The analyses the Hedge paper uses, computed from the store or from a model.

- FtoT / TtoF / FtoF (Figure 2a): per (model, attack, defense, repeat), how the defense changes the
  bare model's verdict on the *same* adversarial examples (transfer attacks only; an adaptive
  attack's examples differ per defense, so the comparison has no meaning there). FtoF is the
  paper's (Section 4.2.1): wrong before the defense and a *different* wrong class after it; an
  example wrong both times in the same class is FtoSame.
- The local-Lipschitz gap of flipped examples (Figure 2b): recorded during a run by
  ``harness.run.observers.LipschitzGaps`` when the grid asks for it (``lipschitz = true``).
- SSIM (Figure 2c): the runner stores, for the first few examples of each unit, the clean,
  adversarial and defended images with their SSIM against the clean image (scikit-image).
- Local Lipschitzness (Section 4.2.2): see :func:`local_lipschitz`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.storage import queries
from harness.storage.store import Store


def flip_counts(store: Store, run_id: str) -> pd.DataFrame:
    """FtoT (wrong without the defense, right with it), TtoF, FtoF (wrong, then another wrong class), FtoSame and
    TtoT per (model, attack, defense, repeat), against the reference defense."""
    reference = store.run(run_id).reference_defense
    if reference is None:
        return pd.DataFrame(columns=["model", "attack", "defense", "repeat", "FtoT", "TtoF", "FtoF", "FtoSame",
                                     "TtoT", "n"])
    return queries.flip_counts(store, run_id, reference)


def ssim(a: Tensor, b: Tensor) -> float:
    """Structural similarity of two (C, H, W) images in [0,1] (scikit-image, data_range 1)."""
    from skimage.metrics import structural_similarity

    a_np, b_np = a.detach().cpu().permute(1, 2, 0).numpy(), b.detach().cpu().permute(1, 2, 0).numpy()
    side = min(a_np.shape[:2])
    window = min(7, side if side % 2 else side - 1)
    return float(structural_similarity(a_np, b_np, channel_axis=-1, data_range=1.0, win_size=window))


def png_bytes(image: Tensor) -> bytes:
    """A (C, H, W) [0,1] image as PNG bytes, for reports."""
    import io

    from PIL import Image

    array = (image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(buffer, format="PNG")
    return buffer.getvalue()


def local_lipschitz(model: nn.Module, x: Tensor, classes: Tensor, eps: float, samples: int = 16,
                    generator: torch.Generator | None = None) -> Tensor:
    r"""Local Lipschitz constant of the class-c loss around each x, for L∞ perturbations of radius ε.

    Estimator (stated here because the figure depends on it): for each example i with class c_i,

        L_i = max_{x' ∈ S_i} ‖∇_{x'} CE(f(x'), c_i)‖₁,

    the ℓ1 norm being the dual of L∞, over S_i = {x_i} ∪ {``samples`` points drawn uniformly from the
    L∞ ball B(x_i, ε) ∩ [0,1]}. This is a sampled lower bound of the true local constant (as in CLEVER,
    Weng et al. 2018, without the extreme-value fit). The Hedge paper's Section 4.2.2 compares the
    local Lipschitzness of the false class and of the true class ("the approximated Lipschitzness")
    without stating its estimator, so this one is ours. Returns (N,).
    """
    generator = generator or torch.Generator(device=x.device).manual_seed(0)
    best = torch.zeros(len(x), device=x.device)
    for s in range(samples + 1):
        point = x if s == 0 else (x + (2 * torch.rand(x.shape, generator=generator, device=x.device) - 1) * eps).clamp(0, 1)
        with torch.enable_grad():
            point = point.detach().requires_grad_(True)
            loss = F.cross_entropy(model(point), classes, reduction="sum")
            (grad,) = torch.autograd.grad(loss, point)
        best = torch.maximum(best, grad.flatten(1).abs().sum(1))
    return best
