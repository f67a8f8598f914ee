"""Fashion-MNIST and MNIST from the standard IDX files (gzipped or not)."""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from harness.api import DataError, DataSource, LabelledData, param
from harness_plugins.datasets.common import first_n, torchvision_download

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file; truncated or malformed files raise a DataError that names the file."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} cannot be read (corrupt or truncated gzip?): {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated: its header announces {ndim} dimensions but ends after "
                        f"{len(raw)} bytes")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: header says {dims} ({int(np.prod(dims))} bytes), found {body.size}")
    return body.reshape(dims)


@dataclass(frozen=True)
class IdxDataset(DataSource):
    """Base for (Fashion-)MNIST: the four IDX files in ``root``; torchvision download when online."""

    root: str = param("", "folder holding the IDX files")
    download: bool = param(False, "download through torchvision when the files are missing (needs internet)")

    name = "mnist"
    default_root = ""
    classes: ClassVar[tuple[str, ...]] = tuple(str(i) for i in range(10))
    display = "MNIST"
    torchvision_class = "MNIST"

    def folder(self) -> Path:
        return Path(self.root or self.default_root).expanduser()

    def _find(self, stem: str) -> Path:
        folder = self.folder()
        for candidate in (folder / f"{stem}.gz", folder / stem, folder / self.torchvision_class / "raw" / f"{stem}.gz",
                          folder / self.torchvision_class / "raw" / stem):
            if candidate.exists():
                return candidate
        if self.download:
            torchvision_download(self.name, self.torchvision_class, str(folder), stem.startswith("train"), self._fix())
            return self._find(stem)
        raise DataError(f"{self.name}: {folder / (stem + '.gz')} not found. {self._fix()}")

    def _fix(self) -> str:
        return (f"Fix: set root = \"...\" to the folder with the IDX files, or download = true when online "
                f"(torchvision.datasets.{self.torchvision_class}).")

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        images, labels = (read_idx(self._find(stem)) for stem in _FILES[split])
        if images.ndim != 3 or labels.ndim != 1:
            raise DataError(f"{self.name}: expected images (N, H, W) and labels (N,), got {images.shape}, {labels.shape}")
        return images, labels

    def load(self, n: int) -> LabelledData:
        images, labels = self.arrays("test")
        return first_n(self.name, images, labels, n, self.classes, domain=self.name, display_name=self.display)

    def train_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        images, labels = self.arrays("train")
        return (images.astype(np.float32) / 255.0)[:, None], labels.astype(np.int64)

    def source_files(self, n: int) -> list[Path]:
        return [self._find(stem) for stem in _FILES["test"]]


@dataclass(frozen=True)
class FashionMNIST(IdxDataset, name="fashion-mnist"):
    """Fashion-MNIST (IDX files; by default Debian's dataset-fashion-mnist in /usr/share/datasets)."""

    name = "fashion-mnist"
    default_root = "/usr/share/datasets/fashion-mnist"
    classes = FASHION_CLASSES
    display = "Fashion-MNIST"
    torchvision_class = "FashionMNIST"

    def _fix(self) -> str:
        return "Fix: apt-get install dataset-fashion-mnist, or set root = \"...\", or download = true when online."


@dataclass(frozen=True)
class MNIST(IdxDataset, name="mnist"):
    """MNIST (IDX files in root; torchvision download when online)."""

    default_root = "~/.cache/robustness-harness/mnist"
