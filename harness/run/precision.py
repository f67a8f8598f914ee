"""How the model computes: fp32 (strict), TF32 or bf16 autocast; channels_last; torch.compile.

One setting per grid, applied to everything that runs the model: clean evaluation, our attacks,
library attacks and defenses. It changes the numbers (slightly), so it is part of a run's identity.
channels_last and compile live inside wrappers around the model: everything outside it (the data, the
attacks, the libraries they call, the gradients they get) keeps the plain NCHW layout and eager mode.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Iterator

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
    backend: str | Callable = "inductor"   # torch.compile's backend (the tests: "aot_eager" on the CPU); not identity

    def describe(self) -> str:
        return "+".join([self.precision.value] + ["channels_last"] * self.channels_last + ["compile"] * self.compile)

    def as_json(self) -> dict:
        return {"precision": self.precision.value, "channels_last": self.channels_last, "compile": self.compile}

    @contextmanager
    def context(self, device: torch.device) -> Iterator[None]:
        """Run the model under this setting. cuDNN runs its deterministic algorithms (a resumed unit must give the
        rows of an uninterrupted one). The switches are process-wide: restored on exit."""
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                 torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
        tf32 = self.precision is Precision.TF32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        try:
            if self.precision is Precision.BF16:
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                    yield
            else:
                yield
        finally:
            (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) = saved

    def prepare_model(self, module: nn.Module) -> nn.Module:
        """channels_last and compile, as wrappers; the module must already be in eval mode on its device."""
        if self.channels_last:
            module = ChannelsLast(module)
        if self.compile:
            module = Compiled(module, self.backend)
        return module


class _NHWC(torch.autograd.Function):
    """To channels_last on the way in; the gradient goes back out contiguous (NCHW), as it came in."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        return x.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return grad.contiguous()


class ChannelsLast(nn.Module):
    """The model computing in NHWC. Inputs and input gradients stay NCHW outside it: libraries flatten them with
    ``.view(N, -1)`` (pyautoattack's APGD, Square, checks), which a channels_last tensor refuses."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = copy.deepcopy(model).to(memory_format=torch.channels_last)   # the caller's model stays as it is
        self.training = model.training   # a new module starts in train mode: take the model's (eval), never set it

    def forward(self, x: Tensor) -> Tensor:
        return self.model(_NHWC.apply(x) if x.dim() == 4 else x)


class Compiled(nn.Module):
    """torch.compile around the model, made safe for attacks:

    - dynamic shapes: every subset an attack takes (APGD, Square, RayS, the last batch) is one graph, not a
      recompile each, and not the silent fall back to eager after eight;
    - donated buffers off (process-wide: the backward reads the switch when it runs, not when it compiles): a
      graph kept for a second backward (DeepFool, a differentiable Hedge, FAB) would otherwise fail once it
      meets a batch size a plain backward already used;
    - a compilation error is reported naming ``compile``, with the fix; ``eager`` is the module itself, for
      one-off probes that are not worth a compilation."""

    def __init__(self, model: nn.Module, backend: str | Callable = "inductor"):
        super().__init__()
        from harness.api.errors import HarnessError

        self.eager = model
        self.training = model.training
        torch._functorch.config.donated_buffer = False
        try:
            self.compiled = torch.compile(model, dynamic=True, backend=backend)
        except Exception as exc:  # noqa: BLE001 - torch reports an unusable backend in several ways
            raise HarnessError(f"compile = true: torch.compile cannot use backend {backend!r}: {exc}. Fix: set "
                               "compile = false in the grid") from None

    def forward(self, x: Tensor) -> Tensor:
        from harness.api.errors import HarnessError

        try:
            return self.compiled(x)
        except torch._dynamo.exc.BackendCompilerFailed as exc:   # the compiler's failure, not the model's
            raise HarnessError(f"compile = true: torch.compile could not compile the model ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0]}). Fix: set compile = false in the grid") from None
