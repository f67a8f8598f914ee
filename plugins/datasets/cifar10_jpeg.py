"""The JPEG copy of the CIFAR-10 images that this project's machines provide (not the original CIFAR-10)."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.errors import DataError
from harness.interfaces import LabelledData
from harness.specs import param
from plugins.datasets.common import first_n

ROOT_ENV = "HARNESS_CIFAR10_JPEG"
DEFAULT_ROOT = "../shared/data/cifar10-jpeg"
CACHE_ENV = "HARNESS_CACHE"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "robustness-harness"))


def decode_split(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Decode every JPEG of one .npz split to uint8 (N,32,32,3); cached on disk after the first use."""
    try:
        archive = np.load(path, allow_pickle=False)
        blobs, offsets, labels = archive["jpeg"], archive["offsets"], archive["labels"]
        classes = tuple(str(c) for c in archive["classes"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path} is not a readable cifar10-jpeg split (need keys jpeg, offsets, labels, classes): {exc}") from exc
    stat = path.stat()
    tag = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cached = cache_dir() / f"cifar10-jpeg-{path.stem}-{tag}.npy"
    if cached.exists():
        return np.load(cached), labels, classes
    from PIL import Image

    images = np.empty((len(labels), 32, 32, 3), dtype=np.uint8)
    for i in range(len(labels)):
        images[i] = np.asarray(Image.open(io.BytesIO(blobs[offsets[i]:offsets[i + 1]].tobytes())).convert("RGB"))
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, images)
    tmp.replace(cached)  # atomic: a concurrent reader never sees half a file
    return images, labels, classes


@dataclass(frozen=True)
class Cifar10Jpeg:
    """CIFAR-10 (JPEG): the JPEG copy of the CIFAR-10 test images in ../shared; not the original pixels."""

    root: str = param("", f"folder with test.npz; default ${ROOT_ENV} or {DEFAULT_ROOT}")

    def folder(self) -> Path:
        return Path(self.root or os.environ.get(ROOT_ENV, DEFAULT_ROOT)).expanduser()

    def split_path(self, split: str) -> Path:
        path = self.folder() / f"{split}.npz"
        if not path.exists():
            raise DataError(f"cifar10-jpeg: {path} not found. Fix: set root = \"...\" in the grid's [dataset] table "
                            f"or the environment variable {ROOT_ENV} to the folder holding test.npz and train.npz")
        return path

    def load(self, n: int) -> LabelledData:
        images, labels, classes = decode_split(self.split_path("test"))
        return first_n("cifar10-jpeg", images, labels, n, classes, domain="cifar10", display_name="CIFAR-10 (JPEG)")
