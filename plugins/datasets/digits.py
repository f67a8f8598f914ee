"""scikit-learn's bundled 8×8 handwritten digits: real data that ships inside a wheel."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.api import DataSource, LabelledData
from harness_plugins.datasets.common import first_n

TEST_SIZE = 497  # the last 497 of the 1,797 images are the test split; the first 1,300 train


def digits_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images in [0,1] as float32 (N,1,8,8), labels) of the fixed train or test split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]
    y = bunch.target.astype(np.int64)
    cut = len(x) - TEST_SIZE
    return (x[:cut], y[:cut]) if split == "train" else (x[cut:], y[cut:])


@dataclass(frozen=True)
class Digits(DataSource, name="digits"):
    """scikit-learn's 8×8 digits (1,797 images, no download); fixed split, the last 497 are the test set."""

    def load(self, n: int) -> LabelledData:
        x, y = digits_arrays("test")
        return first_n("digits", x, y, n, tuple(str(i) for i in range(10)), domain="digits",
                       display_name="Digits 8×8 (scikit-learn)")

    def train_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return digits_arrays("train")

    def source_files(self, n: int) -> list[Path]:
        import sklearn.datasets

        return [Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"]
