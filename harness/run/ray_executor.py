"""`--executor ray`: work units (or shards of them) as Ray tasks; the driver alone writes to SQLite.

- Each task evaluates one batch-aligned example range of one unit with the same code as the local
  runner (``Runner.batches``), so rows are identical whichever executor or sharding made them.
- A task returns its rows; the driver commits them and records the shard in one transaction. A task
  whose worker dies is retried by Ray (``max_retries``); nothing it computed before dying was written,
  and rows are keyed, so a retry can neither lose nor duplicate a row.
- A restarted driver resumes from the database: shards already recorded are not submitted again.
  ``units.done`` stays the finished prefix, so the local executor can resume a Ray run too.
- Tasks ask for one GPU each where the cluster has GPUs; ``address`` joins an existing cluster.
- A worker process is reused across tasks (GPU ones too: Ray would otherwise start a fresh process for each GPU
  task) and keeps its runner, with the last model it loaded, between them: consecutive shards of a model's units
  load it, initialise CUDA and compile it once per worker.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
from tqdm import tqdm

from harness.api.cost import Passes
from harness.api.errors import HarnessError
from harness.api.interfaces import LabelledData
from harness.grid.config import GridConfig
from harness.grid.plan import Unit
from harness.run.batch import Batch
from harness.run.provenance import device_name
from harness.run.runner import Runner
from harness.storage.store import Store


@dataclass(frozen=True)
class Shard:
    unit: Unit
    start: int
    stop: int


def shards_of(unit: Unit, grid: GridConfig, shard_size: int | None, done: set[int], prefix: int) -> list[Shard]:
    """Batch-aligned example ranges of a unit that are not yet in the database."""
    size = shard_size or grid.n_examples
    if size % grid.batch_size and size < grid.n_examples:
        raise HarnessError(f"--shard-size {size} must be a multiple of the grid's batch_size {grid.batch_size}, so "
                           "that shards draw the same random numbers as one pass over the unit")
    return [Shard(unit, start, min(start + size, grid.n_examples)) for start in range(0, grid.n_examples, size)
            if start not in done and min(start + size, grid.n_examples) > prefix]


def evaluate_range(grid: GridConfig, unit: Unit, start: int, stop: int, x: torch.Tensor, y: torch.Tensor,
                   classes: tuple, domain: str, display: str,
                   after_batch: Callable[[Batch], None] | None = None) -> dict[str, Any]:
    """The task body, on a worker: load the unit's model, evaluate [start, stop), return the rows.

    ``after_batch`` is called with each evaluated batch (e.g. a test that kills the worker mid-range). The worker
    computes with the driver's CPU thread count (``grid.threads``, set by the driver): a CPU's reductions are
    ordered by its threads, and a row must not depend on which process computed it."""
    if grid.threads is not None:
        torch.set_num_threads(grid.threads)
    runner = _worker_runner(grid)
    data = LabelledData(x.to(runner.device), y.to(runner.device), classes, domain, display)
    try:
        loaded = runner.load_model(grid.models.index(unit.model))
        records: dict[str, list] = {}
        seconds, counted, floor, messages, chunk = 0.0, Passes(0, 0), Passes(0, 0), [], None
        for batch in runner.batches(unit, loaded, data, start, stop):
            for table, rows in batch.records.items():
                records.setdefault(table, []).extend(rows)
            seconds, counted, floor = seconds + batch.seconds, counted + batch.counted, floor + batch.floor
            messages += batch.messages
            chunk = batch.smallest_chunk or chunk
            if after_batch is not None:
                after_batch(batch)
    except BaseException:
        _WORKER.clear()   # a task that failed may have left its model in any state: the retry loads it afresh
        raise
    return {"records": records, "seconds": seconds, "start": start, "stop": stop, "counted": counted, "floor": floor,
            "smallest_chunk": chunk, "messages": messages, "device": device_name(runner.device),
            "process": os.getpid(), "loads": runner.loads}


# this worker process's runner for the run it last evaluated (one run, one model in memory at a time)
_WORKER: dict[str, Runner] = {}


def _worker_runner(grid: GridConfig) -> Runner:
    if grid.run_id not in _WORKER:
        _WORKER.clear()
        _WORKER[grid.run_id] = Runner(grid, store=None, progress=False)  # never opens the database
    return _WORKER[grid.run_id]


def workers_device_type(device: str, cluster_gpus: float) -> str:
    """What a grid's device means on a Ray cluster: its workers', not the driver's (a CPU head with GPU workers
    computes on CUDA)."""
    return "cuda" if device != "cpu" and cluster_gpus else "cpu"


def on_cluster(grid: GridConfig, *, address: str | None = None, num_cpus: int | None = None) -> GridConfig:
    """Join (or start) the Ray cluster, and give the grid the type of device its workers compute on: it is part
    of the run's identity, and the driver's own device says nothing about it."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    workers = workers_device_type(grid.device, ray.cluster_resources().get("GPU", 0))
    return grid if workers == grid.device_type else dataclasses.replace(grid, device_type=workers)


def task_options(grid: GridConfig, cluster_gpus: float, max_retries: int) -> dict[str, Any]:
    """Ray's options for a shard task: one GPU where the cluster has them, and a worker reused across tasks
    (``max_calls = 0``; Ray's default for a GPU task is a fresh process each time)."""
    gpu = bool(cluster_gpus) and grid.device != "cpu"
    return {"num_gpus": 1 if gpu else 0, "max_retries": max_retries, "max_calls": 0}


def run_with_ray(grid: GridConfig, store: Store | None = None, *, address: str | None = None,
                 shard_size: int | None = None, max_retries: int = 3, num_cpus: int | None = None,
                 progress: bool = True, task_body: Callable[..., dict[str, Any]] = evaluate_range,
                 runner: Runner | None = None) -> str:
    """Evaluate the grid's unfinished units (or shards of them) as Ray tasks running ``task_body``."""
    try:
        import ray
    except ImportError:
        raise HarnessError("--executor ray needs Ray: pip install 'robustness-harness[ray]' (or pip install ray)") from None
    if grid.threads is None:   # the workers compute with the driver's thread count (see evaluate_range)
        grid = dataclasses.replace(grid, threads=torch.get_num_threads())
    # the driver checks every model on its CPU (a head machine need not have the workers' GPUs, and the models it
    # loads stay out of Ray's accounting); the workers record the device that computed the rows
    runner = runner or Runner(grid, store, progress=progress, device=torch.device("cpu"))
    data, units = runner.prepare()  # data loaded, every model checked and the run recorded before any task starts
    store = runner.store
    if not ray.is_initialized():
        ray.init(address=address, num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    gpus = ray.cluster_resources().get("GPU", 0)
    task = ray.remote(**task_options(grid, gpus, max_retries))(task_body)
    x_ref, y_ref = ray.put(data.x.cpu()), ray.put(data.y.cpu())  # one copy in the object store for all tasks
    pending: dict[Any, Shard] = {}
    for unit in units:
        state = store.unit_state(grid.run_id, unit.key)
        if state.finished:
            continue
        for shard in shards_of(unit, grid, shard_size, store.finished_shards(grid.run_id, unit.key), state.done):
            ref = task.remote(grid, unit, shard.start, shard.stop, x_ref, y_ref, data.classes, data.domain,
                              data.display_name)
            pending[ref] = shard
    bar = tqdm(total=sum(s.stop - s.start for s in pending.values()), desc=f"{len(pending)} tasks on Ray",
               unit="ex", disable=not runner.progress, dynamic_ncols=True)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        shard = pending.pop(ready[0])
        result = ray.get(ready[0])  # raises after max_retries failed attempts: the driver stops, the DB keeps the rest
        store.commit(grid.run_id, shard.unit.key, result["records"], start=shard.start, stop=shard.stop,
                     total=grid.n_examples, seconds=result["seconds"], counted=result.get("counted", Passes(0, 0)),
                     floor=result.get("floor", Passes(0, 0)), smallest_chunk=result.get("smallest_chunk"),
                     messages=result.get("messages", ()))
        if result.get("device"):    # the device that computed the rows, not the driver's
            store.record_device(grid.run_id, result["device"], instead_of=device_name(runner.device))
        bar.update(shard.stop - shard.start)
    bar.close()
    store.end_run(grid.run_id)
    return grid.run_id
