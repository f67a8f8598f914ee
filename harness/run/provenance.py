"""Where a run's numbers came from: the harness version and source commit, packages, device."""

from __future__ import annotations

import dataclasses
import json
import platform
import subprocess
import time
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from harness.api.interfaces import Attack, Defense, plugin_facts
from harness.storage.records import RunRecord

if TYPE_CHECKING:
    from harness.api.interfaces import DataSource, LabelledData
    from harness.grid.config import Entry, GridConfig

VERSIONED = ("robustness-harness", "torch", "torchvision", "numpy", "torchattacks", "pyautoattack", "robustbench",
             "pluggy", "sqlite-utils")
SOURCE = Path(__file__).resolve().parent


def package_versions() -> dict[str, str]:
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def plugin_distributions(grid: GridConfig) -> dict[str, str]:
    """The distribution and version of every plugin the grid uses (the reports' Packages line)."""
    out = {}
    for entry in (grid.dataset, *grid.models, *grid.attacks, *grid.defenses):
        code = entry.code
        if code is not None and code.distribution is not None:
            out[code.distribution] = code.version + (" (editable)" if code.editable else "")
        elif code is not None:
            out[f"{entry.plugin} (registered in code)"] = f"source {code.source[:12]}" if code.source else "unversioned"
    return out


def harness_version() -> str:
    try:
        return metadata.version("robustness-harness")
    except metadata.PackageNotFoundError:
        return "(not installed)"


@lru_cache(maxsize=1)
def harness_commit() -> str:
    """The commit of the checkout the harness runs from (not of the current directory); "" if not a checkout.

    A checkout with uncommitted changes to tracked files is marked "+modified".
    """
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(SOURCE), *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()

    try:
        top = git("rev-parse", "--show-toplevel")
        if not top or not SOURCE.is_relative_to(Path(top).resolve()):
            return ""
        commit = git("rev-parse", "HEAD")
        modified = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError, ValueError):
        return ""
    return f"{commit}+modified" if commit and modified else commit


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def entry_facts(entry: Entry, obj: object, **extra: object) -> dict:
    """A grid entry with its parameters resolved (defaults included) and what its plugin declares."""
    params = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else {}
    facts = plugin_facts(obj) if isinstance(obj, (Attack, Defense)) else {}
    return {"label": entry.label, "plugin": entry.plugin, "params": json.loads(json.dumps(params, default=str)),
            **facts, **extra}


def run_record(grid: GridConfig, device: torch.device, data: LabelledData,
               dataset: DataSource) -> RunRecord:
    """The run as recorded: its identity, every entry with what its plugin declares, and where it ran."""

    plugins = {
        "attacks": [entry_facts(a, a.built, eps=grid.threat_for(a).eps, suite=a.suite,
                                ladder=list(a.ladder) if a.ladder else None) for a in grid.attacks],
        "defenses": [entry_facts(d, d.built) for d in grid.defenses],
        "models": [{"label": m.label, "plugin": m.plugin, "params": dict(m.params)} for m in grid.models],
    }
    return RunRecord(
        run_id=grid.run_id, config_path=grid.path, config_text=grid.text,
        identity=json.dumps(grid.identity(), sort_keys=True), plugins=json.dumps(plugins),
        dataset=grid.dataset.label, dataset_display=data.display_name, dataset_caveat=dataset.caveat,
        classes=json.dumps(list(data.classes)), n_examples=grid.n_examples, norm=grid.threat.norm.value,
        eps=grid.threat.eps, repeats=grid.repeats, votes=grid.votes, preset=grid.preset.name,
        precision=grid.compute.describe(),
        device=device_name(device) + (f"; continues a run computed on {grid.resumed_from}" if grid.resumed_from else ""),
        harness_version=harness_version(), harness_commit=harness_commit(),
        versions=json.dumps({**package_versions(), **plugin_distributions(grid)}), started=time.time(),
        reported=grid.reported.as_json() if grid.reported else None)
