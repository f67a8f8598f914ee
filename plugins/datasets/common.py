"""Checks every dataset plugin applies before it hands examples to the runner."""

from __future__ import annotations

import numpy as np
import torch

from harness.api import DataError, LabelledData


def first_n(name: str, images: np.ndarray, labels: np.ndarray, n: int, classes: tuple[str, ...], *,
            domain: str, display_name: str) -> LabelledData:
    """Validate and convert uint8 (N,H,W[,C]) or float [0,1] (N,C,H,W) arrays to the first n examples."""
    if n > len(images):
        raise DataError(f"dataset '{name}' has {len(images)} test examples; n_examples = {n} is larger. "
                        f"Fix: set n_examples <= {len(images)}")
    if len(images) != len(labels):
        raise DataError(f"dataset '{name}': {len(images)} images but {len(labels)} labels")
    images, labels = images[:n], labels[:n]
    if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DataError(f"dataset '{name}': labels must lie in 0..{len(classes) - 1}, found {labels.min()}..{labels.max()}")
    x = torch.from_numpy(np.array(images))  # a copy: the source may be a read-only buffer
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
        if x.dim() == 3:
            x = x[:, None]
        elif x.dim() == 4:
            x = x.permute(0, 3, 1, 2).contiguous()
    if x.dim() != 4:
        raise DataError(f"dataset '{name}': expected images of shape (N, C, H, W), got {tuple(x.shape)}")
    return LabelledData(x=x.float(), y=torch.from_numpy(labels.astype(np.int64)), classes=classes,
                        domain=domain, display_name=display_name)


def torchvision_download(name: str, torchvision_class: str, folder: str, train: bool, fix: str) -> None:
    """Fetch a dataset through torchvision (for users who are online); a network failure is one clear error."""
    import torchvision

    try:
        getattr(torchvision.datasets, torchvision_class)(folder, train=train, download=True)
    except Exception as exc:  # noqa: BLE001 - any network failure becomes one clear message
        raise DataError(f"{name}: download into {folder} failed ({type(exc).__name__}). {fix}") from None
