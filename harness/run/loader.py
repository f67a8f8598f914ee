"""Loading what a grid evaluates: its data and its models, each model prepared once (eval mode, frozen weights,
the grid's layout and compilation, every pass counted), one model in memory at a time."""

from __future__ import annotations

import math

import torch

from harness.api.errors import ConfigError, HarnessError
from harness.api.interfaces import DataSource, LabelledData, LoadedModel
from harness.api.threat import Norm
from harness.grid.config import GridConfig
from harness.run.checks import plugin_call
from harness.run.counting import PassCounter


class Loader:
    def __init__(self, grid: GridConfig, device: torch.device):
        self.grid, self.device = grid, device
        self._loaded: tuple[int, LoadedModel, LoadedModel] | None = None
        self.loads = 0   # models loaded (a Ray worker reuses its loader across shards)
        self.stand_ins: list[str] = []   # models --estimate timed as their architecture, their weights being absent

    def dataset(self) -> DataSource:
        return self.grid.dataset.built

    def load_data(self) -> LabelledData:
        entry = self.grid.dataset
        with plugin_call("dataset", entry.label, entry.plugin):
            return self.dataset().load(self.grid.n_examples)

    def load_model(self, index: int, *, eager: bool = False) -> LoadedModel:
        """The grid's ``index``-th model on the device, under the grid's channels_last and compile, counted
        (``eager``: the module alone, for a one-off probe not worth a compilation). The last model loaded is
        kept, so that the one a run starts with is not loaded again after the checks."""
        if self._loaded is None or self._loaded[0] != index:
            self._loaded = None   # one model in memory at a time
            self.loads += 1
            entry = self.grid.models[index]
            with plugin_call("model", entry.label, entry.plugin):
                plain = entry.built.load(self.device)
            # eval mode and frozen weights once, here: plugins must not change either, and no backward pass of an
            # attack then computes a weight gradient it does not need
            plain.module.eval().requires_grad_(False)
            counted = PassCounter(self.grid.compute.prepare_model(plain.module))  # every pass of a unit is counted
            self._loaded = (index, plain, LoadedModel(counted, plain.dataset, plain.num_classes))
        return self._loaded[1] if eager else self._loaded[2]


def check_data_fits(grid: GridConfig, data: LabelledData) -> None:
    """What can be checked only once the data is loaded, before anything is recorded: radii that mean something
    for images of this size, and attacks that fit the number of classes."""
    for index, entry in enumerate(grid.attacks):
        threat = grid.threat_for(entry)
        diameter = math.sqrt(data.x[0].numel())
        if threat.norm is Norm.L2 and threat.eps > diameter:
            key = f"attacks[{index}].eps" if entry.eps is not None else "eps"
            raise ConfigError(grid.path, key, f"an L2 radius of {threat.eps:g} is larger than the whole image box "
                              f"[0,1]^{data.x[0].numel()} (its diameter is {diameter:.4g})",
                              f"a number in [0, {diameter:.4g}]")
        try:
            entry.built.check_data(data.num_classes)
        except HarnessError as exc:
            raise ConfigError(grid.path, f"attacks: {entry.label}", str(exc)) from None
