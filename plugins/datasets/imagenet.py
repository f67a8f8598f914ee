"""ImageNet validation images from an ImageFolder directory, in RobustBench's 5,000-image order."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.api import DataError, DataSource, LabelledData, param
from harness_plugins.datasets.common import first_n


def robustbench_helper(name: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec("robustbench")  # the list ships in robustbench's wheel; no import needed
    if spec is None or spec.origin is None:
        raise DataError("robustbench is not installed; its ImageNet subset list ships with it. Fix: pip install robustbench")
    return Path(spec.origin).parent / "helper_files" / name


def load_image(path: Path) -> np.ndarray:
    """Resize the shorter side to 256, centre-crop 224 (RobustBench's ImageNet preprocessing); uint8 HWC."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            scale = 256 / min(w, h)
            img = img.resize((max(256, round(w * scale)), max(256, round(h * scale))), Image.BILINEAR)
            w, h = img.size
            left, top = (w - 224) // 2, (h - 224) // 2
            return np.asarray(img.crop((left, top, left + 224, top + 224)))
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"{path} is not a readable image: {exc}") from None


@dataclass(frozen=True)
class ImageNet(DataSource, name="imagenet"):
    """ImageNet validation set (ImageFolder: <root>/<wnid>/<file>.JPEG); RobustBench's 5,000-image subset order."""

    root: str = param(help="the validation folder, one sub-folder per class wnid")
    order: str = param("robustbench", "'robustbench' (its 5,000-image list) or 'sorted' (every file, sorted)")

    def image_list(self) -> list[str]:
        root = Path(self.root).expanduser()
        if not root.is_dir():
            raise DataError(f"imagenet: {root} is not a folder. Fix: set root = \"...\" to the ImageNet validation "
                            "folder in ImageFolder layout (<root>/<wnid>/<image>.JPEG)")
        if self.order == "robustbench":
            return robustbench_helper("imagenet_test_image_ids.txt").read_text().split()
        if self.order == "sorted":
            return sorted(str(p.relative_to(root)) for p in root.glob("*/*") if p.is_file())
        raise DataError(f"imagenet: order = {self.order!r}; allowed: 'robustbench', 'sorted'")

    def source_files(self, n: int) -> list[Path]:
        root = Path(self.root).expanduser()
        return [root / relative for relative in self.image_list()[:n]]

    def load(self, n: int) -> LabelledData:
        root = Path(self.root).expanduser()
        wnid_to_index = json.loads(robustbench_helper("imagenet_class_to_id_map.json").read_text())
        names = self.image_list()
        if n > len(names):
            raise DataError(f"dataset 'imagenet' has {len(names)} examples in this order; n_examples = {n} is larger")
        images, labels = [], []
        for relative in names[:n]:
            wnid = relative.split("/")[0]
            path = root / relative
            if not path.exists():
                raise DataError(f"imagenet: {path} not found (from RobustBench's subset list). Fix: point root at the "
                                "full validation folder, or use order = \"sorted\"")
            if wnid not in wnid_to_index:
                raise DataError(f"imagenet: folder {wnid!r} is not an ImageNet class id (wnid)")
            images.append(load_image(path))
            labels.append(wnid_to_index[wnid])
        classes = tuple(sorted(wnid_to_index, key=wnid_to_index.get))
        return first_n("imagenet", np.stack(images), np.asarray(labels), n, classes, domain="imagenet",
                       display_name="ImageNet (val)")
