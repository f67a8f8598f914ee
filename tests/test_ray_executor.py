"""`--executor ray` on a local two-worker Ray cluster: same rows as the local executor, through worker kills
and driver restarts, with shards of a unit spread over workers."""

from __future__ import annotations

import dataclasses
import os

import pytest

from conftest import PGD_AND_SQUARE, digits_grid, none_and_hedge
from harness.grid.reader import load_grid
from harness.run.runner import Runner, run_grid
from harness.storage.store import Store

ray = pytest.importorskip("ray")
from harness.run.ray_executor import evaluate_range, run_with_ray  # noqa: E402

ATTACKS = PGD_AND_SQUARE
DEFENSES = none_and_hedge(steps=3)
COLUMNS = ("unit_key", "model", "attack", "defense", "repeat", "idx", "label", "pred", "correct", "vote_frac",
           "linf", "l2", "queries", "grad_norm")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def killing_once(marker: str):
    """A task body that, the first time any worker runs it, kills that worker halfway through its range, as a
    preempted or OOM-killed machine would (a hard exit: no exception handling, no cleanup, like SIGKILL)."""
    def body(grid, unit, start, stop, *data):
        def after_batch(batch):
            if not os.path.exists(marker) and batch.stop < stop:
                open(marker, "w").close()
                os._exit(1)
        return evaluate_range(grid, unit, start, stop, *data, after_batch=after_batch)
    return body


def rows_of(store: Store, run_id: str) -> list[tuple]:
    frame = store.results(run_id).fillna(-1)  # NaN != NaN would fail equal rows
    return sorted(tuple(r) for r in frame[list(COLUMNS)].itertuples(index=False))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, registry):
    """The same grid, uninterrupted, on the local executor."""
    tmp = tmp_path_factory.mktemp("local")
    grid = load_grid(digits_grid(tmp, attacks=ATTACKS, defenses=DEFENSES, n=60, batch_size=20), registry)
    store = Store(grid.db)
    run_grid(grid, store=store, progress=False)
    return rows_of(store, grid.run_id)


def ray_grid(tmp_path, registry):
    return load_grid(digits_grid(tmp_path, attacks=ATTACKS, defenses=DEFENSES, n=60, batch_size=20), registry)


def test_sharded_ray_run_gives_the_local_rows(cluster, reference, tmp_path, registry):
    grid = ray_grid(tmp_path, registry)
    store = Store(grid.db)
    run_with_ray(grid, store, shard_size=20, progress=False)
    assert rows_of(store, grid.run_id) == reference
    units = store.units(grid.run_id)
    assert units.finished.all() and (units.done == 60).all()
    shards = list(store.db["shards"].rows)
    assert len(shards) == 3 * 3 and {s["start"] for s in shards} == {0, 20, 40}  # 3 units × 3 shards
    # the workers report the passes they made, as the local runner does, and the device that computed the rows
    assert (units.counted_forward > 0).all() and (units.floor_forward > 0).all()
    assert "; then" not in store.run(grid.run_id).device and store.run(grid.run_id).device.startswith("cpu")


def test_a_worker_killed_mid_unit_is_retried_and_loses_or_duplicates_nothing(cluster, reference, tmp_path, registry):
    marker = tmp_path / "killed"  # absent: the first task kills its worker after its first batch of three
    grid = ray_grid(tmp_path, registry)
    store = Store(grid.db)
    run_with_ray(grid, store, progress=False, task_body=killing_once(str(marker)))  # whole units
    assert marker.exists(), "no worker was killed: the fault was not exercised"
    got = rows_of(store, grid.run_id)
    assert got == reference
    assert len(got) == len({r[:6] for r in got})  # no (unit, defense, example) twice


def test_a_restarted_driver_resumes_from_the_database(cluster, reference, tmp_path, registry, monkeypatch):
    grid = ray_grid(tmp_path, registry)
    store = Store(grid.db)
    real_commit = Store.commit
    calls = []

    def crash_after_two(self, *args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt("driver killed")
        calls.append(args[1])
        return real_commit(self, *args, **kwargs)

    monkeypatch.setattr(Store, "commit", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_with_ray(grid, store, shard_size=20, progress=False)
    monkeypatch.setattr(Store, "commit", real_commit)
    partial = store.db["shards"].count
    assert partial == 2
    restarted = Store(grid.db)  # a new driver process would open the database afresh
    submitted = []
    real_shards = __import__("harness.run.ray_executor", fromlist=["shards_of"]).shards_of

    def counting(*args, **kwargs):
        out = real_shards(*args, **kwargs)
        submitted.extend(out)
        return out

    monkeypatch.setattr("harness.run.ray_executor.shards_of", counting)
    run_with_ray(grid, restarted, shard_size=20, progress=False)
    assert len(submitted) == 9 - partial  # the finished shards were not submitted again
    assert rows_of(restarted, grid.run_id) == reference


def test_shard_size_must_align_with_batches(cluster, tmp_path, registry):
    from harness.api.errors import HarnessError

    grid = ray_grid(tmp_path, registry)
    with pytest.raises(HarnessError, match="multiple of the grid's batch_size 20"):
        run_with_ray(grid, Store(grid.db), shard_size=30, progress=False)


def recording_workers(log: str):
    """A task body that notes which process ran it and how many models that process had loaded by then."""
    def body(grid, unit, start, stop, *data):
        result = evaluate_range(grid, unit, start, stop, *data)
        with open(log, "a") as f:
            f.write(f"{result['process']} {result['loads']}\n")
        return result
    return body


def test_workers_are_reused_and_load_the_model_once_each(cluster, reference, tmp_path, registry):
    log = tmp_path / "workers.log"
    grid = ray_grid(tmp_path, registry)
    store = Store(grid.db)
    run_with_ray(grid, store, shard_size=20, progress=False, task_body=recording_workers(str(log)))
    assert rows_of(store, grid.run_id) == reference
    seen = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
    assert len(seen) == 9 and len({pid for pid, _ in seen}) < 9            # processes ran several shards each
    assert all(loads == 1 for _, loads in seen)                            # and loaded the model once


def test_gpu_tasks_keep_their_worker_between_tasks(tmp_path, registry):
    from harness.run.ray_executor import task_options

    grid = dataclasses.replace(ray_grid(tmp_path, registry), device="auto")
    assert task_options(grid, 4, 3) == {"num_gpus": 1, "max_retries": 3, "max_calls": 0}
    assert task_options(grid, 0, 3)["num_gpus"] == 0
    assert task_options(dataclasses.replace(grid, device="cpu"), 4, 3)["num_gpus"] == 0


def test_a_cpu_head_with_gpu_workers_takes_the_workers_device(tmp_path, registry):
    """A driver without a GPU accepts device = "cuda" for its workers; "auto" means the workers' device; and the
    run records the device the workers computed on, not the head's."""
    from harness.api.errors import ConfigError
    from harness.grid.config import Overrides
    from harness.run.ray_executor import workers_device_type

    path = digits_grid(tmp_path, attacks=ATTACKS, defenses=DEFENSES, n=60, batch_size=20)
    path.write_text(path.read_text().replace('device = "cpu"', 'device = "cuda"'))
    import torch
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="torch sees no GPU"):
            load_grid(path, registry)
    grid = load_grid(path, registry, overrides=Overrides(remote_workers=True))
    assert grid.device_type == "cuda"
    assert workers_device_type("auto", 2) == "cuda" and workers_device_type("auto", 0) == "cpu"
    assert workers_device_type("cpu", 2) == "cpu"


def test_the_run_records_the_device_its_workers_computed_on(cluster, tmp_path, registry):
    def on_a_gpu(grid, unit, start, stop, *data):
        return {**evaluate_range(grid, unit, start, stop, *data), "device": "cuda (NVIDIA H200)"}

    grid = ray_grid(tmp_path, registry)
    store = Store(grid.db)
    run_with_ray(grid, store, progress=False, task_body=on_a_gpu)
    assert store.run(grid.run_id).device == "cuda (NVIDIA H200)"


def test_a_task_evaluates_the_grid_it_is_sent_without_discovering_plugins(reference, tmp_path, registry, monkeypatch):
    """A task gets the grid pickled, each entry with the plugin object built when the grid was read: the worker
    evaluates it as sent, and never builds a registry (no entry-point scan, no plugin module imported anew)."""
    import pickle

    from harness.api.registry import Registry
    from harness.grid.plan import plan

    grid = ray_grid(tmp_path, registry)
    sent = pickle.loads(pickle.dumps(grid))
    assert sent.run_id == grid.run_id and all(e.built == f.built for e, f in zip(sent.attacks, grid.attacks))

    def refused(*args, **kwargs):
        raise AssertionError("a task discovered the plugins again")

    monkeypatch.setattr(Registry, "__init__", refused)
    data = Runner(grid, progress=False).load_data()
    unit = next(u for u in plan(sent) if u.attack.plugin == "pgd")
    result = evaluate_range(sent, unit, 20, 40, data.x, data.y, data.classes, data.domain, data.display_name)
    rows = sorted((r.defense, r.idx, r.pred) for r in result["records"]["results"])
    expected = sorted((d, i, p) for key, _, _, d, _, i, _, p, *_ in reference if key == unit.key and 20 <= i < 40)
    assert rows == expected and len(rows) == 20 * len(grid.defenses)
