"""Test-time transformation ensembling (Pérez et al., "Enhancing Adversarial Robustness via Test-time
Transformation Ensembling", ICCV Workshops 2021)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api import Defense, Passes, PluginError, param

Transform = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class TTE(Defense, name="tte"):
    r"""TTE: the logits averaged over the input, its horizontal flip, padded crops and flipped padded crops.

    Paper: Pérez et al., "Enhancing Adversarial Robustness via Test-time Transformation Ensembling", ICCVW 2021;
    released code juancprzs/TTE, ``utils.AugWrapper`` (``DiffFlip``, ``DiffCrop``).
    Norm: none (a deterministic, differentiable transformation of the model).

    Each crop pads the image by ``pad`` pixels on every side with zeros and takes a window of the input's size at
    an offset drawn once, uniformly in [0, 2·pad), as the released code draws it when the wrapper is built; here
    from ``crop_seed``, so the same offsets on every run. Differences from the released code, on purpose: it
    pads in the model's normalised space, so its zeros are the dataset's mean colour for a model that
    normalises; here the defense sees the [0,1] image, so its zeros are black (the same for a model without
    normalisation, as in the paper's TRADES and AWP models). The ensemble is differentiable, so an attack
    through it takes the exact gradient whether it asks for BPDA or the full gradient.

    Arguments:
        flip (bool): include the horizontal flip. Default: True.
        crops (int): n, the number of padded crops. Default: 4.
        flip_crops (bool): include the flip of each crop. Default: True (with the defaults: 1 + 1 + 4 + 4 = 10
            views, the paper's "flip + 4 crops + flipped crops").
        pad (int): padding of each crop, in pixels. Default: 4.
        crop_seed (int): seed of the crop offsets. Default: 0.

    Shape: x (N, C, H, W) in [0,1]; the model sees each view, of the same shape.

    Example grid entry::

        [[defenses]]
        plugin = "tte"
        crops = 4
    """

    display_name: ClassVar[str] = "TTE"

    flip: bool = param(True, "include the horizontal flip")
    crops: int = param(4, "n, the number of padded crops", minimum=0)
    flip_crops: bool = param(True, "include the horizontal flip of each crop (needs flip)")
    pad: int = param(4, "zero padding of each crop, in pixels", minimum=0)
    crop_seed: int = param(0, "seed of the crop offsets, drawn once")

    def check(self) -> None:
        if self.flip_crops and self.crops and not self.flip:
            raise PluginError("tte flip_crops = true flips each crop, which needs flip = true (the released code "
                              "adds flipped crops only with the flip); set flip = true or flip_crops = false")
        if self.crops and not self.pad:
            raise PluginError("tte crops need pad >= 1: a crop of the unpadded image is the image itself")

    def offsets(self) -> list[tuple[int, int]]:
        """(row, column) origin of each crop in the padded image."""
        generator = torch.Generator().manual_seed(self.crop_seed)
        drawn = torch.randint(0, 2 * self.pad, (self.crops, 2), generator=generator) if self.pad else \
            torch.zeros((self.crops, 2), dtype=torch.int64)
        return [(int(r), int(c)) for r, c in drawn]

    def views(self) -> list[Transform]:
        """The transformations, identity first, in the released code's order."""
        pad = self.pad

        def crop(row: int, column: int) -> Transform:
            def view(x: Tensor) -> Tensor:
                height, width = x.shape[-2:]
                return F.pad(x, (pad, pad, pad, pad))[..., row:row + height, column:column + width]
            return view

        def flipped(t: Transform) -> Transform:
            return lambda x: t(x.flip(-1))

        crops = [crop(r, c) for r, c in self.offsets()]
        views: list[Transform] = [lambda x: x]
        if self.flip:
            views.append(lambda x: x.flip(-1))
        views += crops
        if self.flip and self.flip_crops:
            views += [flipped(t) for t in crops]
        return views

    def purify(self, model: nn.Module, x: Tensor, *, generator: torch.Generator,
               differentiable: bool = False) -> Tensor:
        """The input itself: TTE changes how the model is applied, not the input."""
        return x if differentiable else x.detach()

    def logits(self, model: nn.Module, x: Tensor, *, generator: torch.Generator,
               differentiable: bool = False) -> Tensor:
        # one call per view (not one stacked call), so that a scoring pass may compute only some rows
        return torch.stack([model(view(x)) for view in self.views()]).mean(dim=0)

    def bpda_logits(self, model: nn.Module, x: Tensor, *, generator: torch.Generator) -> Tensor:
        return self.logits(model, x, generator=generator, differentiable=True)

    def passes(self) -> Passes:
        return Passes(len(self.views()) - 1, 0)

    def attacked(self, attack: Passes) -> Passes:
        """Each pass of the attack, forward and backward, runs the model on every view (BPDA's surrogate is the
        ensemble itself)."""
        return attack * len(self.views())
