"""Timing helpers shared by the benchmarks: CUDA events on a GPU, perf_counter on the CPU."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Callable

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu-{platform.machine()}-{torch.get_num_threads()}threads"


def timed(fn: Callable[[], object], device: torch.device, repeats: int = 1, warmup: int = 1) -> float:
    """Median seconds of fn() over ``repeats`` runs, after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def write(name: str, device: torch.device, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = device_name(device).replace(" ", "-").replace("/", "-")
    path = RESULTS / f"{name}-{tag}.json"
    path.write_text(json.dumps({"device": device_name(device), "torch": torch.__version__, **payload}, indent=2) + "\n")
    return path
