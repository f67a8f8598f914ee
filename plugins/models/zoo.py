"""Models that come from a zoo: RobustBench by ID, and the ResNet-18 that ships inside pyautoattack."""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from harness.api import DataError, LoadedModel, ModelSource, PluginError, param, suggest
from harness_plugins.models.checkpoint import IMAGE_SHAPES, load_into, load_state_dict

NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}


def zoo_entry(dataset: str, threat_model: str, name: str) -> dict[str, Any]:
    """RobustBench's model-zoo entry (architecture factory, download ids) for an ID, or a clear error."""
    from harness.api import import_robustbench

    import_robustbench()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    try:
        zoo = model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat_model)]
    except (ValueError, KeyError):
        raise PluginError(f"RobustBench has no zoo for dataset {dataset!r} and threat model {threat_model!r}") from None
    if name not in zoo:
        raise PluginError(f"RobustBench has no {dataset} {threat_model} model {name!r}{suggest(name, list(zoo))}")
    return zoo[name]


# What RobustBench's architectures set themselves and some of its checkpoints lack.
NORMALISATION_BUFFERS = ("mu", "sigma", "mean", "std")


@dataclass(frozen=True, kw_only=True)
class RobustBenchModel(ModelSource, name="robustbench"):
    """A RobustBench zoo model by ID: its architecture, and its weights from a local model_dir.

    The weights are read with ``torch.load(weights_only=True)`` into the architecture RobustBench's
    model zoo names, so a checkpoint cannot run code (RobustBench's own ``load_model`` unpickles it
    fully). RobustBench is used to download a missing file; ensembles load member by member.
    """

    label_param: ClassVar[str | None] = "name"   # an entry without a label is named by its model ID

    name: str = param(help="RobustBench model ID, e.g. Wong2020Fast or Carmon2019Unlabeled")
    dataset: Literal["cifar10", "cifar100", "imagenet"] = param("cifar10", "RobustBench dataset")
    threat_model: Literal["Linf", "L2", "corruptions"] = param("Linf", "RobustBench threat model")
    model_dir: str = param("./models", "RobustBench's model folder: <model_dir>/<dataset>/<threat_model>/<name>.pt")

    def expected_path(self) -> Path:
        return Path(self.model_dir).expanduser() / self.dataset / self.threat_model / f"{self.name}.pt"

    def _ids(self) -> list[str]:
        ids = zoo_entry(self.dataset, self.threat_model, self.name)["gdrive_id"]
        return ids if isinstance(ids, list) else [ids]

    def source_files(self) -> list[Path]:
        path = self.expected_path()
        ids = self._ids()
        return [path] if len(ids) == 1 else [Path(f"{path}_m{i}.pt") for i in range(len(ids))]

    def check(self) -> None:
        zoo_entry(self.dataset, self.threat_model, self.name)

    def _download(self, gdrive_id: str, path: Path) -> None:
        from harness.api import import_robustbench

        import_robustbench()
        from robustbench.utils import download_gdrive_new

        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            download_gdrive_new(gdrive_id, path)
        except Exception as exc:  # noqa: BLE001 - a network failure surfaces as many types
            path.unlink(missing_ok=True)
            raise DataError(
                f"RobustBench model {self.name!r} is not in {path} and could not be downloaded here "
                f"({type(exc).__name__}). Fix: on a machine with internet run\n"
                f"  harness run --grid GRID  (it downloads into model_dir = {self.model_dir!r})\n"
                f"or fetch Google Drive id {gdrive_id} yourself, and copy the file to {path}") from None
        if not path.exists():
            raise DataError(f"RobustBench model {self.name!r}: the download of {path} produced no file. Fix: "
                            f"fetch Google Drive id {gdrive_id} on a machine with internet and copy it to {path}")

    def architecture(self) -> tuple[torch.nn.Module, tuple[int, ...]] | None:
        return zoo_entry(self.dataset, self.threat_model, self.name)["model"]().eval(), IMAGE_SHAPES[self.dataset]

    def load(self, device: torch.device) -> LoadedModel:
        entry = zoo_entry(self.dataset, self.threat_model, self.name)
        module = entry["model"]()
        files, ids = self.source_files(), self._ids()
        members = [module] if len(ids) == 1 else list(module.models)
        if len(members) != len(files):
            raise PluginError(f"RobustBench model {self.name!r} is an ensemble this harness cannot load member by "
                              "member; use robustbench.load_model outside the harness and save a state_dict")
        for member, path, gdrive_id in zip(members, files, ids):
            if not path.exists():
                self._download(gdrive_id, path)
            load_into(member, fit_prefixes(load_state_dict(path), member), path,
                      architecture_buffers=NORMALISATION_BUFFERS)
        return LoadedModel(module=module.eval().to(device), dataset=self.dataset,
                           num_classes=NUM_CLASSES[self.dataset])


def fit_prefixes(state: dict[str, torch.Tensor], module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Add the ``model.`` prefix RobustBench's ImageNet wrappers expect where the file's keys lack it."""
    expected = module.state_dict()
    if state and not any(k in expected for k in state) and all(f"model.{k}" in expected or k.endswith(
            NORMALISATION_BUFFERS) for k in state):
        return {f"model.{k}": v for k, v in state.items()}
    return state


@dataclass(frozen=True)
class AutoAttackExample(ModelSource, name="autoattack-example"):
    """The standard (not robust) CIFAR-10 ResNet-18 inside the pyautoattack wheel (examples/model_test.pt)."""

    def weights(self) -> Path:
        return Path(str(importlib.resources.files("pyautoattack"))) / "examples" / "model_test.pt"

    def load(self, device: torch.device) -> LoadedModel:
        from pyautoattack.examples.resnet import ResNet18  # its architecture ships beside the weights

        module = ResNet18()  # AutoAttack's eval.py feeds it ToTensor() images: [0,1], no normalisation
        path = self.weights()
        load_into(module, load_state_dict(path), path)
        return LoadedModel(module=module.eval().to(device), dataset="cifar10", num_classes=10)

    def source_files(self) -> list[Path]:
        return [self.weights()]

    def architecture(self) -> tuple[torch.nn.Module, tuple[int, ...]] | None:
        from pyautoattack.examples.resnet import ResNet18

        return ResNet18().eval(), IMAGE_SHAPES["cifar10"]
