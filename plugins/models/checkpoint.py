"""Models from a weights file: a RobustBench zoo architecture or one of ours, plus a state_dict."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from harness.api import DataError, LoadedModel, ModelSource, PluginError, param, suggest
from harness_plugins.models.archs import ARCHS

ROBUSTBENCH_PREFIX = "robustbench:"
# the input of one image in each data domain the model plugins know (for costing a grid without its weights)
IMAGE_SHAPES = {"cifar10": (3, 32, 32), "cifar100": (3, 32, 32), "imagenet": (3, 224, 224), "digits": (1, 8, 8),
                "mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28)}
_STRIP_PREFIXES = ("module.", "model.", "_orig_mod.")


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a plain tensor state_dict; a file that would run code when unpickled is refused."""
    if not path.exists():
        raise DataError(f"checkpoint {path} not found. Fix: set path = \"...\" to an existing weights file")
    if not path.is_file() and not path.is_dir():  # a FIFO or a device would block the read, or never end
        raise DataError(f"checkpoint {path} is not a regular file (a pipe, socket or device); pass the weights file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DataError(f"checkpoint {path} was refused: it is not a plain weights file (torch.load with "
                        f"weights_only=True found objects that could run code). Re-save it as a state_dict. "
                        f"Detail: {str(exc).splitlines()[0]}") from exc
    except IsADirectoryError:
        raise DataError(f"checkpoint {path} is a directory; expected a weights file saved with torch.save") from None
    except Exception as exc:  # noqa: BLE001 - torch reports a non-checkpoint file in many ways
        raise DataError(f"checkpoint {path} is not a readable torch.save file (truncated, corrupt, or another "
                        f"format): {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    for key in ("state_dict", "model_state_dict", "model", "last"):  # common wrappers around a state_dict
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DataError(f"checkpoint {path} does not hold a state_dict of tensors")
    meta = [k for k, v in obj.items() if v.is_meta]
    if meta:
        raise DataError(f"checkpoint {path} holds tensors without data (on the meta device: {', '.join(meta[:3])}); "
                        "it was saved from a model that was never materialised. Save the trained weights instead")
    for prefix in _STRIP_PREFIXES:
        if obj and all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def load_into(module: nn.Module, state: dict[str, torch.Tensor], path: Path, *,
              architecture_buffers: tuple[str, ...] = ()) -> None:
    """load_state_dict with an error that lists the first offending keys.

    ``architecture_buffers``: key suffixes the file may lack because the architecture sets them itself
    (RobustBench's normalisation buffers, e.g. ``mu``, ``sigma``; its own loader tolerates these too).
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(architecture_buffers)]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                  if k in state and state[k].shape != v.shape]
    wrong_type = [f"{k} holds {state[k].dtype} values for a {v.dtype} tensor" for k, v in expected.items()
                  if k in state and v.is_floating_point() and not state[k].is_floating_point()]
    if missing or unexpected or mismatched or wrong_type:
        parts = [f"{label}: {', '.join(keys[:5])}{' …' if len(keys) > 5 else ''}"
                 for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                     ("shape mismatch (file vs model)", mismatched),
                                     ("integer values for floating-point weights", wrong_type)) if keys]
        raise DataError(f"checkpoint {path} does not fit the architecture: " + "; ".join(parts))
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=False)


def build_arch(arch: str, num_classes: int, in_channels: int) -> tuple[nn.Module, str]:
    """(an untrained module, the data domain it implies or "") for an architecture name."""
    if arch.startswith(ROBUSTBENCH_PREFIX):
        return _robustbench_arch(arch)
    if arch not in ARCHS:
        raise PluginError(f"unknown arch {arch!r}{suggest(arch, sorted(ARCHS))}. Allowed: {', '.join(sorted(ARCHS))}, "
                          f"or {ROBUSTBENCH_PREFIX}<dataset>:<threat_model>:<zoo name>")
    return ARCHS[arch](num_classes, in_channels), ""


def _zoo_parts(arch: str) -> tuple[str, str, str]:
    parts = arch.split(":")
    if len(parts) != 4:
        raise PluginError(f"arch {arch!r} must read {ROBUSTBENCH_PREFIX}<dataset>:<threat_model>:<name>, "
                          "e.g. robustbench:cifar10:Linf:Wong2020Fast")
    return parts[1], parts[2], parts[3]


def _robustbench_arch(arch: str) -> tuple[nn.Module, str]:
    from harness_plugins.models.zoo import zoo_entry

    dataset, threat, name = _zoo_parts(arch)
    return zoo_entry(dataset, threat, name)["model"](), dataset


@dataclass(frozen=True)
class Checkpoint(ModelSource, name="checkpoint"):
    """A weights file loaded into a RobustBench zoo architecture or one of the project's own."""

    arch: str = param(help="'robustbench:cifar10:Linf:Wong2020Fast', or one of the project's archs (small-cnn)")
    path: str = param(help="the state_dict file, loaded with torch.load(weights_only=True)")
    dataset: str = param("", "the data domain it was trained on (e.g. cifar10, digits); implied by robustbench archs")
    num_classes: int = param(10, "number of classes", minimum=1)
    in_channels: int = param(3, "input channels of the project's own archs", minimum=1)

    def load(self, device: torch.device) -> LoadedModel:
        module, implied = build_arch(self.arch, self.num_classes, self.in_channels)
        domain = self.dataset or implied
        if not domain:
            raise PluginError(f"model arch {self.arch!r} needs dataset = \"...\" (the data it was trained on)")
        path = Path(self.path).expanduser()
        load_into(module, load_state_dict(path), path)
        return LoadedModel(module=module.eval().to(device), dataset=domain, num_classes=self.num_classes)

    def check(self) -> None:
        if self.arch.startswith(ROBUSTBENCH_PREFIX):
            from harness_plugins.models.zoo import zoo_entry

            zoo_entry(*_zoo_parts(self.arch))
        elif self.arch not in ARCHS:
            build_arch(self.arch, self.num_classes, self.in_channels)  # raises with the allowed names

    def source_files(self) -> list[Path]:
        return [Path(self.path).expanduser()]

    def architecture(self) -> tuple[nn.Module, tuple[int, ...]] | None:
        module, implied = build_arch(self.arch, self.num_classes, self.in_channels)
        shape = IMAGE_SHAPES.get(self.dataset or implied)
        return (module.eval(), shape) if shape is not None else None
