"""The passes a unit actually makes through the model, counted where they happen.

The plan's cost (``Attack.passes``) is what a plugin declares; this is what it did. Every call of the
model, by the attack, a library inside it, a defense or the runner, goes through one counter.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from torch import Tensor, nn

from harness.api.cost import Passes


class PassCounter(nn.Module):
    """The model, counting in images: a forward pass per input row, and a backward pass per row whose logits
    a gradient flowed back through (``torch.autograd.grad`` and ``backward`` alike; twice if taken twice).

    Its logits leave in fp32 (under bf16 autocast: the rounded values, exactly): libraries that index or compare
    them against their own fp32 tensors (pyautoattack's Square) would otherwise fail under a bf16 grid."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.training = model.training   # its own flag only: train() would set every module of the model
        self.forward_rows = 0
        self.backward_rows = 0
        self._listener: Callable[[Passes], None] | None = None

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x).float()
        self.forward_rows += x.shape[0]
        if self._listener is not None:
            self._listener(Passes(x.shape[0], 0))
        if out.requires_grad:
            out.register_hook(self._count_backward)
        return out

    def _count_backward(self, grad: Tensor) -> None:
        self.backward_rows += grad.shape[0]
        if self._listener is not None:
            self._listener(Passes(0, grad.shape[0]))

    @contextlib.contextmanager
    def listening(self, listener: Callable[[Passes], None]) -> Iterator[None]:
        """Tell ``listener`` of every pass while inside (progress within a batch: a unit of one batch would
        otherwise show nothing until it ends)."""
        self._listener = listener
        try:
            yield
        finally:
            self._listener = None

    def counted(self) -> Passes:
        return Passes(self.forward_rows, self.backward_rows)
