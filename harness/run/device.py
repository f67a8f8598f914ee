"""Device helpers shared by the runner, the defended model and the estimator."""

from __future__ import annotations

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a wall-clock timing measures the work, not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
