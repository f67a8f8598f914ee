"""What a grid would cost on a GPU, from FLOPs: an estimate stated as one, for planning before any weights exist.

A pass of one image costs the architecture's forward FLOPs (counted on the meta device: no weights, no memory);
a pass that also takes the input gradient costs about twice that (measured on PreActResNet-18: 1.11 GFLOP
forward, 2.22 with the input gradient; the weights' gradients are never taken). Hours assume the GPU sustains
``EFFICIENCY`` of its dense bf16 peak; `harness run --estimate` on the GPU itself measures instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from harness.api.cost import Passes


@dataclass(frozen=True)
class Gpu:
    name: str
    bf16_dense_flops: float   # per second, the vendor's dense (not sparse) peak


GPUS = {gpu.name: gpu for gpu in (Gpu("h100", 989e12), Gpu("h200", 989e12), Gpu("a100", 312e12), Gpu("l40s", 362e12))}
EFFICIENCY = 0.4   # convolutional classifiers at large batches reach about 30–50 % of the dense bf16 peak


def forward_flops(module: nn.Module, image_shape: tuple[int, ...]) -> float:
    """Forward FLOPs of one image, counted on the meta device (shapes only)."""
    meta = module.to("meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta(torch.zeros((1, *image_shape), device="meta"))
    return float(counter.get_total_flops())


def gpu_hours(passes: Passes, flops: float, gpu: Gpu) -> float:
    """Hours for ``passes`` (total over examples) of an architecture of ``flops`` forward FLOPs per image."""
    return (passes.forward + passes.backward) * flops / (gpu.bf16_dense_flops * EFFICIENCY) / 3600
