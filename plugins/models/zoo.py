"""Models that come from a zoo: RobustBench by ID, and the ResNet-18 that ships inside pyautoattack."""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from harness.errors import DataError, PluginError
from harness.interfaces import LoadedModel
from harness.registry import suggest
from harness.specs import param
from plugins.models.checkpoint import load_into, load_state_dict

NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}


@dataclass(frozen=True, kw_only=True)
class RobustBenchModel:
    """A RobustBench zoo model by ID, through robustbench.load_model, from a local model_dir."""

    name: str = param(help="RobustBench model ID, e.g. Wong2020Fast or Carmon2019Unlabeled")
    dataset: Literal["cifar10", "cifar100", "imagenet"] = param("cifar10", "RobustBench dataset")
    threat_model: Literal["Linf", "L2", "corruptions"] = param("Linf", "RobustBench threat model")
    model_dir: str = param("./models", "RobustBench's model folder: <model_dir>/<dataset>/<threat_model>/<name>.pt")

    def expected_path(self) -> Path:
        return Path(self.model_dir).expanduser() / self.dataset / self.threat_model / f"{self.name}.pt"

    def validate(self) -> None:
        """Checks that need no weights (used by --dry-run): the ID exists in RobustBench's zoo."""
        from harness.compat import import_robustbench

        import_robustbench()
        from robustbench.model_zoo import model_dicts
        from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

        zoo = model_dicts[BenchmarkDataset(self.dataset)][ThreatModel(self.threat_model)]
        if self.name not in zoo:
            raise PluginError(f"RobustBench has no {self.dataset} {self.threat_model} model {self.name!r}"
                              f"{suggest(self.name, list(zoo))}")

    def load(self, device: torch.device) -> LoadedModel:
        from harness.compat import import_robustbench

        rb = import_robustbench()
        self.validate()
        path = self.expected_path()
        try:
            module = rb.load_model(self.name, model_dir=self.model_dir, dataset=self.dataset,
                                   threat_model=self.threat_model)
        except Exception as exc:  # noqa: BLE001 - robustbench's download failures surface as many types
            if path.exists():
                raise DataError(f"RobustBench could not load {path}: {type(exc).__name__}: {exc}") from None
            raise DataError(
                f"RobustBench model {self.name!r} is not in {path} and could not be downloaded here "
                f"({type(exc).__name__}). Fix: on a machine with internet run\n"
                f"  python -c \"import harness.compat as c; c.import_robustbench().load_model('{self.name}', "
                f"model_dir='{self.model_dir}', dataset='{self.dataset}', threat_model='{self.threat_model}')\"\n"
                f"and copy the file it writes to {path}") from None
        return LoadedModel(module=module.eval().to(device), dataset=self.dataset,
                           num_classes=NUM_CLASSES[self.dataset])

    def files(self) -> list[str]:
        return [str(self.expected_path())]


@dataclass(frozen=True)
class AutoAttackExample:
    """The standard (not robust) CIFAR-10 ResNet-18 inside the pyautoattack wheel (examples/model_test.pt)."""

    def weights(self) -> Path:
        return Path(str(importlib.resources.files("pyautoattack"))) / "examples" / "model_test.pt"

    def load(self, device: torch.device) -> LoadedModel:
        from pyautoattack.examples.resnet import ResNet18  # its architecture ships beside the weights

        module = ResNet18()  # AutoAttack's eval.py feeds it ToTensor() images: [0,1], no normalisation
        path = self.weights()
        load_into(module, load_state_dict(path), path)
        return LoadedModel(module=module.eval().to(device), dataset="cifar10", num_classes=10)

    def files(self) -> list[str]:
        return [str(self.weights())]
