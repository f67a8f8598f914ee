"""How the model computes: fp32 (strict), TF32 or bf16 autocast; channels_last; torch.compile.

One setting per grid, applied to everything that runs the model: clean evaluation, our attacks,
library attacks and defenses. It changes the numbers (slightly), so it is part of a run's identity.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Iterator

import torch
from torch import Tensor, nn


class Precision(str, Enum):
    FP32 = "fp32"   # strict: TF32 off for matmuls and convolutions (cuDNN turns it on by default)
    TF32 = "tf32"   # fp32 storage, TF32 tensor-core math on CUDA (no effect on the CPU)
    BF16 = "bf16"   # autocast to bfloat16; inputs, gradients and projections stay fp32


@dataclass(frozen=True)
class Compute:
    precision: Precision = Precision.FP32
    channels_last: bool = False
    compile: bool = False

    @property
    def is_default(self) -> bool:
        return self == Compute()

    def describe(self) -> str:
        return "+".join([self.precision.value] + ["channels_last"] * self.channels_last + ["compile"] * self.compile)

    def as_json(self) -> dict:
        return {"precision": self.precision.value, "channels_last": self.channels_last, "compile": self.compile}

    @contextmanager
    def context(self, device: torch.device) -> Iterator[None]:
        """Run the model under this setting. The TF32 switches are process-wide: restored on exit."""
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        tf32 = self.precision is Precision.TF32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        try:
            if self.precision is Precision.BF16:
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                    yield
            else:
                yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

    def prepare_model(self, module: nn.Module) -> nn.Module:
        """channels_last and compile; the module must already be in eval mode on its device."""
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        if self.compile:
            # dynamic=False: attacks reuse a few batch shapes; a recompile per shape is cheaper than guards
            module = torch.compile(module, dynamic=False)
        return module

    def prepare_inputs(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x
