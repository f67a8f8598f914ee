"""CIFAR-10 and CIFAR-100 from torchvision's python-pickle folders, read without running code."""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.api import DataError, DataSource, LabelledData, param
from harness_plugins.datasets.common import first_n, torchvision_download

_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("builtins", "list"), ("builtins", "dict")}


class _DataOnly(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only; anything that could run code is refused."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: the file is not plain CIFAR data")


def read_batch(path: Path) -> dict:
    try:
        return _DataOnly(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{path} is not a readable CIFAR pickle (corrupt, truncated, or not data): {exc}") from None


@dataclass(frozen=True)
class CifarPickle(DataSource):
    """Base of cifar10 / cifar100: torchvision's `cifar-*-batches-py` folder in root."""

    root: str = param("~/.cache/robustness-harness/cifar", "folder holding the cifar-*-batches-py folder")
    download: bool = param(False, "download through torchvision when missing (needs internet)")

    name = "cifar10"
    folder_name = "cifar-10-batches-py"
    test_file, meta_file, label_key, names_key = "test_batch", "batches.meta", "labels", "label_names"
    num_classes = 10
    torchvision_class = "CIFAR10"
    display = "CIFAR-10"

    def folder(self) -> Path:
        return Path(self.root).expanduser() / self.folder_name

    def _ensure(self) -> Path:
        folder = self.folder()
        if (folder / self.test_file).exists():
            return folder
        if self.download:
            torchvision_download(self.name, self.torchvision_class, str(folder.parent), False, self._fix())
            return folder
        raise DataError(f"{self.name}: {folder / self.test_file} not found. {self._fix()}")

    def _fix(self) -> str:
        return (f"Fix: set root = \"...\" to the folder that holds {self.folder_name}, or download = true when online; "
                f"or fetch it with: python -c \"import torchvision; torchvision.datasets.{self.torchvision_class}("
                f"'{Path(self.root).expanduser()}', train=False, download=True)\"")

    def source_files(self, n: int) -> list[Path]:
        folder = self._ensure()
        return [folder / self.test_file] + ([folder / self.meta_file] if (folder / self.meta_file).exists() else [])

    def load(self, n: int) -> LabelledData:
        folder = self._ensure()
        batch = read_batch(folder / self.test_file)
        try:
            data, labels = np.asarray(batch["data"], dtype=np.uint8), np.asarray(batch[self.label_key])
        except KeyError as exc:
            raise DataError(f"{folder / self.test_file} lacks the key {exc}; is it a {self.display} batch?") from None
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(f"{folder / self.test_file}: expected data of shape (N, 3072), got {data.shape}")
        meta_path = folder / self.meta_file
        classes = tuple(read_batch(meta_path)[self.names_key]) if meta_path.exists() else \
            tuple(str(i) for i in range(self.num_classes))
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return first_n(self.name, images, labels, n, classes, domain=self.name, display_name=self.display)


@dataclass(frozen=True)
class Cifar10(CifarPickle, name="cifar10"):
    """CIFAR-10 test set from torchvision's cifar-10-batches-py (download when online)."""


@dataclass(frozen=True)
class Cifar100(CifarPickle, name="cifar100"):
    """CIFAR-100 test set from torchvision's cifar-100-python (fine labels; download when online)."""

    name = "cifar100"
    folder_name = "cifar-100-python"
    test_file, meta_file, label_key, names_key = "test", "meta", "fine_labels", "fine_label_names"
    num_classes = 100
    torchvision_class = "CIFAR100"
    display = "CIFAR-100"
