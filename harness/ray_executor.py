"""`--executor ray`: work units (or shards of them) as Ray tasks; the driver alone writes to SQLite.

- Each task evaluates one batch-aligned example range of one unit with the same code as the local
  runner (``Runner.batches``), so rows are identical whichever executor or sharding made them.
- A task returns its rows; the driver commits them and records the shard in one transaction. A task
  whose worker dies is retried by Ray (``max_retries``); nothing it computed before dying was written,
  and rows are keyed, so a retry can neither lose nor duplicate a row.
- A restarted driver resumes from the database: shards already recorded are not submitted again.
  ``units.done`` stays the finished prefix, so the local executor can resume a Ray run too.
- Tasks ask for one GPU each where the cluster has GPUs; ``address`` joins an existing cluster.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from harness.config import GridConfig
from harness.errors import HarnessError
from harness.interfaces import LabelledData
from harness.plan import Unit
from harness.registry import Registry
from harness.runner import Runner
from harness.store import Store

# Test-only fault injection: the first task to see this path (absent) creates it and kills its worker
# process halfway through its range, as a preempted or OOM-killed machine would.
KILL_ONCE_ENV = "HARNESS_FAULT_KILL_WORKER_ONCE"


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


def _evaluate(grid: GridConfig, unit: Unit, start: int, stop: int, x: torch.Tensor, y: torch.Tensor,
              classes: tuple, domain: str, display: str) -> dict[str, Any]:
    """The task body, on a worker: load the unit's model, evaluate [start, stop), return the rows."""
    registry = Registry()
    runner = Runner(grid, registry, store=None, progress=False)  # never opens the database
    data = LabelledData(grid.compute.prepare_inputs(x.to(runner.device)), y.to(runner.device), classes, domain, display)
    loaded = runner.load_model(grid.models.index(unit.model))
    rows, examples, seconds = [], [], 0.0
    marker = os.environ.get(KILL_ONCE_ENV)
    for batch in runner.batches(unit, loaded, data, start, stop):
        rows += batch.rows
        examples += batch.examples
        seconds += batch.seconds
        if marker and not os.path.exists(marker) and batch.stop < stop:
            open(marker, "w").close()
            os._exit(1)  # a hard kill: no exception handling, no cleanup, like SIGKILL
    return {"rows": rows, "examples": examples, "seconds": seconds, "start": start, "stop": stop}


def run_with_ray(grid: GridConfig, registry: Registry, store: Store, *, address: str | None = None,
                 shard_size: int | None = None, max_retries: int = 3, num_cpus: int | None = None,
                 progress: bool = True) -> str:
    try:
        import ray
    except ImportError:
        raise HarnessError("--executor ray needs Ray: pip install 'robustness-harness[ray]' (or pip install ray)") from None
    runner = Runner(grid, registry, store, progress=progress)
    data, units = runner.prepare()  # data loaded, every model checked and the run recorded before any task starts
    if not ray.is_initialized():
        env = {KILL_ONCE_ENV: os.environ[KILL_ONCE_ENV]} if KILL_ONCE_ENV in os.environ else {}
        ray.init(address=address, num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": env} if env else None)
    gpus = ray.cluster_resources().get("GPU", 0)
    task = ray.remote(num_gpus=1 if gpus and grid.device != "cpu" else 0, max_retries=max_retries)(_evaluate)
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
               unit="ex", disable=not progress, dynamic_ncols=True)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        shard = pending.pop(ready[0])
        result = ray.get(ready[0])  # raises after max_retries failed attempts: the driver stops, the DB keeps the rest
        store.commit_shard(grid.run_id, shard.unit.key, result["rows"], result["examples"], shard.start, shard.stop,
                           grid.n_examples, result["seconds"])
        bar.update(shard.stop - shard.start)
    bar.close()
    store.end_run(grid.run_id)
    return grid.run_id
