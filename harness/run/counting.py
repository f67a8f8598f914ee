"""The passes a unit actually makes through the model, counted where they happen.

The plan's cost (``Attack.passes``) is what a plugin declares; this is what it did. Every call of the
model, by the attack, a library inside it, a defense or the runner, goes through one counter.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch._C._functorch as functorch
from torch import Tensor, nn

from harness.api.cost import Passes


class PassCounter(nn.Module):
    """The model, counting in images: a forward pass per input row, and a backward pass per row whose logits
    a gradient flowed back through (``torch.autograd.grad`` and ``backward`` alike; twice if taken twice).
    Under ``torch.func`` transforms (DENT adapts one example at a time under ``vmap(grad(...))``) a row is
    counted once per example of every vmapped batch, not once per call, and a gradient taken outside ``vmap``
    is counted too.

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
        rows = _rows(out)
        self.forward_rows += rows
        if self._listener is not None:
            self._listener(Passes(rows, 0))
        tracked = _tracked(out)
        if tracked is not None:
            tracked.register_hook(lambda grad: self._count_backward(rows))
        return out

    def _count_backward(self, rows: int) -> None:
        self.backward_rows += rows
        if self._listener is not None:
            self._listener(Passes(0, rows))

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


def _tracked(t: Tensor) -> Tensor | None:
    """The tensor a backward pass through ``t`` flows through: ``t`` where its own level tracks gradients (outside
    torch.func, or inside ``grad``); under ``vmap`` alone, the batched tensor beneath, since vmap keeps no graph of
    its own and the gradient is taken outside it (DENT's prediction from its adapted parameters). None: no
    gradient will flow."""
    while not t.requires_grad and functorch.is_batchedtensor(t):
        t = functorch.get_unwrapped(t)
    return t if t.requires_grad else None


def _rows(t: Tensor) -> int:
    """The rows ``t`` stands for: its first dimension times the size of every ``vmap`` batch it lives in.

    Inside ``vmap`` a tensor shows only its per-example shape; torch.func has no public way to ask for the
    batch, so its wrappers are opened with the private functions ``torch.func`` itself is built on."""
    rows = t.shape[0]
    while functorch.is_functorch_wrapped_tensor(t):
        inner = functorch.get_unwrapped(t)
        if functorch.is_batchedtensor(t):
            rows *= inner.shape[functorch.maybe_get_bdim(t)]
        t = inner
    return rows
