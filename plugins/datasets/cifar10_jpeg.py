"""A JPEG copy of the CIFAR-10 images (not the original CIFAR-10 pixels): test.npz / train.npz in one folder."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from harness.api import DataError, DataSource, LabelledData, param
from harness_plugins.datasets.common import first_n

ROOT_ENV = "HARNESS_CIFAR10_JPEG"
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
        try:
            image = Image.open(io.BytesIO(blobs[offsets[i]:offsets[i + 1]].tobytes())).convert("RGB")
            images[i] = np.asarray(image)
        except (OSError, ValueError) as exc:  # PIL's UnidentifiedImageError is an OSError
            raise DataError(f"{path}: image {i} is not a decodable 32×32 JPEG ({type(exc).__name__}); the file is "
                            "corrupt. Fix: replace it with an intact copy") from None
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, images)
    tmp.replace(cached)  # atomic: a concurrent reader never sees half a file
    return images, labels, classes


# where the project's machines keep the JPEG copy: beside the current folder, or beside the harness checkout
DEFAULT_ROOTS = (Path("../shared/data/cifar10-jpeg"), Path(__file__).resolve().parents[2] / ".." / "shared" / "data" /
                 "cifar10-jpeg")


@dataclass(frozen=True)
class Cifar10Jpeg(DataSource, name="cifar10-jpeg"):
    """CIFAR-10 (JPEG): a JPEG re-encoding of the CIFAR-10 images; not the original pixels."""

    caveat: ClassVar[str | None] = (
        "The images are a JPEG re-encoding of the CIFAR-10 test set, not the original PNG-exact images: "
        "accuracies are close to, but not the same as, those on CIFAR-10.")

    root: str = param("", f"folder with test.npz and train.npz; default: the environment variable {ROOT_ENV}, else "
                          "../shared/data/cifar10-jpeg beside the current folder or the harness checkout")

    def folder(self) -> Path:
        root = self.root or os.environ.get(ROOT_ENV, "")
        if root:
            return Path(root).expanduser()
        found = next((folder for folder in DEFAULT_ROOTS if (folder / "test.npz").exists()), None)
        if found is None:
            raise DataError(f"cifar10-jpeg: no folder given, and none of {', '.join(map(str, DEFAULT_ROOTS))} holds "
                            f"test.npz. Fix: set root = \"...\" in the grid's [dataset] table, or the environment "
                            f"variable {ROOT_ENV}, to the folder holding test.npz and train.npz")
        return found

    def split_path(self, split: str) -> Path:
        path = self.folder() / f"{split}.npz"
        if not path.exists():
            raise DataError(f"cifar10-jpeg: {path} not found. Fix: set root = \"...\" in the grid's [dataset] table "
                            f"or the environment variable {ROOT_ENV} to the folder holding test.npz and train.npz")
        return path

    def load(self, n: int) -> LabelledData:
        images, labels, classes = decode_split(self.split_path("test"))
        return first_n("cifar10-jpeg", images, labels, n, classes, domain="cifar10", display_name="CIFAR-10 (JPEG)")

    def train_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        images, labels, _ = decode_split(self.split_path("train"))
        return (images.astype(np.float32) / 255.0).transpose(0, 3, 1, 2), labels.astype(np.int64)

    def source_files(self, n: int) -> list[Path]:
        return [self.split_path("test")]
