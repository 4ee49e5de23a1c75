"""Where the work runs: this process (0 workers), Ray tasks, or a Ray Data pipeline.

All three expose the same calls, so the driver in :mod:`sharding.job` is one piece of code and
the in-process loop is an honest baseline for the benchmark:

- ``map_scans(items, ...)`` yields ``(meta, data, volume)`` per scan as scans finish, in any
  order; ``meta`` is a small dict held by the driver, ``data`` (encoded bytes) and ``volume``
  (int16 array, only when Zarr is written) are Ray object refs or, in-process, the values.
- ``write_wds`` / ``write_zarr`` start the one writer of an output shard; ``wait`` / ``get``
  collect writers. Writers are Ray tasks with both Ray executors, so a shard file still has
  exactly one writer whatever maps the scans.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator

from tte_scale.sharding.plan import PlanItem
from tte_scale.sharding.processes import descendants, reap, sigint_deferred
from tte_scale.sharding.samples import process_scan
from tte_scale.sharding.writers import write_tar, write_zarr_shard


def ray_init_kwargs(workers: int, address: str | None) -> dict:
    """ray.init options of the job (start-up measured in benchmarks/results/shard.md).

    No dashboard; worker output is not forwarded to the driver (scan tasks report failures as
    results, writer errors come back through ray.get, and nothing a worker prints can then reach
    the job's console); no runtime_env: workers import the installed packages.
    """
    kw = {"logging_level": "ERROR", "log_to_driver": False}
    if address:
        return {"address": address, **kw}
    return {"num_cpus": workers, "include_dashboard": False, **kw}


class Done:
    """A finished in-process result; hashable by identity like a Ray ObjectRef."""

    __slots__ = ("value",)

    def __init__(self, value) -> None:
        self.value = value


class LocalExecutor:
    """Runs each step at once in this process; "refs" are the values themselves."""

    name = "local"
    workers = 1

    def map_scans(self, items, imaging, codec, keep_volume, storage=None) -> Iterator[tuple]:
        for item in items:
            yield process_scan(item, imaging, codec, keep_volume, storage)

    def write_wds(self, path, samples):
        return Done(write_tar(path, samples))

    def write_zarr(self, zarr_dir, rows, volumes, shape):
        return Done(write_zarr_shard(zarr_dir, rows, volumes, shape))

    def wait(self, refs, num_returns=1, timeout=None):
        return list(refs), []

    def get(self, ref):
        return ref.value

    def shutdown(self):
        pass


class RayTasksExecutor:
    """Ray tasks: one scan task per scan (3 returns), a bounded window of them in flight."""

    name = "tasks"

    def __init__(self, workers: int, address: str | None = None) -> None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray

        self.ray = ray
        # processes already here are not Ray's: shutdown() reaps only the ones Ray starts
        self._before = None if address else set(descendants())
        try:
            # A Ctrl-C in the middle of ray.init left the raylet's agents running and the driver
            # crashing at exit: the interrupt waits until Ray is up, then shuts it down again.
            with sigint_deferred():
                ray.init(**ray_init_kwargs(workers, address))
            self.workers = max(1, int(ray.cluster_resources().get("CPU", 1))) if address else workers
        except BaseException:
            self.shutdown()
            raise
        # Each task uses one core; torch inside a task must not spread over all of them.
        opts = {"num_cpus": 1, "max_retries": 1}
        self._scan = ray.remote(_scan_task).options(num_returns=3, **opts)
        self._wds = ray.remote(write_tar).options(**opts)
        self._zarr = ray.remote(write_zarr_shard).options(**opts)

    def map_scans(self, items, imaging, codec, keep_volume, storage=None) -> Iterator[tuple]:
        # A window of ~2 tasks per core keeps every core busy while the driver holds only the
        # refs of the scans whose shards are not complete yet.
        window = 2 * self.workers + 2
        todo = iter(items)
        in_flight: dict = {}
        while True:
            while len(in_flight) < window and (item := next(todo, None)) is not None:
                meta, data, vol = self._scan.remote(item, imaging, codec, keep_volume, storage)
                in_flight[meta] = (data, vol)
            if not in_flight:
                return
            done, _ = self.ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                data, vol = in_flight.pop(ref)
                yield self.ray.get(ref), data, vol

    def write_wds(self, path, samples):
        return self._wds.remote(path, samples)

    def write_zarr(self, zarr_dir, rows, volumes, shape):
        return self._zarr.remote(zarr_dir, rows, volumes, shape)

    def wait(self, refs, num_returns=1, timeout=None):
        return self.ray.wait(list(refs), num_returns=min(num_returns, len(refs)), timeout=timeout)

    def get(self, ref):
        return self.ray.get(ref)

    def shutdown(self):
        """Stop Ray, uninterrupted; a local cluster's leftover processes are waited for (bounded)
        and killed (:mod:`sharding.processes`)."""
        with sigint_deferred():
            started = [p for p in descendants() if p not in self._before] if self._before is not None else []
            self.ray.shutdown()
            reap(started)


class RayDataExecutor(RayTasksExecutor):
    """Ray Data: ``from_items(plan items).map(read -> canonicalize -> encode)``, streamed back.

    Ray Data schedules the map tasks and applies backpressure; the driver consumes rows as they
    come (``preserve_order=False``: the output does not depend on order) and puts each sample's
    bytes into the object store for the shard writer tasks, which are the same as with tasks.
    """

    name = "data"

    def map_scans(self, items, imaging, codec, keep_volume, storage=None) -> Iterator[tuple]:
        import logging

        import numpy as np
        import ray.data

        # Ray Data's console handler logs plan/finish lines at INFO and a warning about the
        # disabled progress bars: the job's console shows its own bar and summary only.
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the job has its own bar (volumes/s)
        ctx.print_on_execution_start = False
        ctx.enable_auto_log_stats = False
        ctx.execution_options.preserve_order = False
        ctx.execution_options.verbose_progress = False
        rows = [dataclasses.asdict(it) for it in items]
        if not rows:
            return
        # one row per block: each scan is its own map task, as many in flight as there are cores
        ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map(
            _scan_row,
            fn_kwargs={"imaging": imaging, "codec": codec, "keep_volume": keep_volume, "storage": storage},
            num_cpus=1,
        )
        for row in ds.iter_rows():
            meta = json.loads(row["meta"])
            data = None if row["data"] is None else self.ray.put(bytes(row["data"]))
            vol = None
            if row["volume"] is not None:
                vol = self.ray.put(np.frombuffer(row["volume"], dtype=np.int16).reshape(meta["shape"]))
            yield meta, data, vol


def task_threads(cpus: int = 1) -> dict:
    """Hold the libraries a scan task uses to the ``cpus`` cores Ray reserved for it (num_cpus=1):
    N workers on N cores then run N compute threads, not N x cores. Returns what each library
    now uses (benchmarks/bench_shard.py --input scanner512 records it from inside a Ray worker).

    torch (grid_sample) would start one intra-op thread per core of the machine; Blosc, used from
    the worker's main thread, likewise (sharding.codec turns its threads off for byte-identical
    shards anyway); numexpr (imported by pandas, when installed) reads NUMEXPR_MAX_THREADS; Ray
    itself sets OMP_NUM_THREADS to the task's num_cpus.
    """
    import torch

    from tte_scale.sharding.codec import deterministic_blosc

    if torch.get_num_threads() != cpus:
        torch.set_num_threads(cpus)
    deterministic_blosc()
    os.environ.setdefault("NUMEXPR_MAX_THREADS", str(cpus))
    import numcodecs.blosc

    return {
        "torch_threads": torch.get_num_threads(),
        "blosc_threads_in_tasks": 1 if numcodecs.blosc.use_threads is False else numcodecs.blosc.get_nthreads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "NUMEXPR_MAX_THREADS": os.environ.get("NUMEXPR_MAX_THREADS"),
    }


def _scan_task(item, imaging, codec, keep_volume, storage=None):
    import ray

    task_threads(1)
    meta, data, vol = process_scan(item, imaging, codec, keep_volume, storage)
    # Where the scan was read: the shard records (_state/) show which Ray nodes did the work
    # (`launch ray-shard` lists the cluster's nodes); no output file depends on it.
    meta["node_id"] = ray.get_runtime_context().get_node_id()
    return meta, data, vol


def _scan_row(row: dict, *, imaging, codec, keep_volume, storage=None) -> dict:
    """Ray Data row function: a plan item in, meta (JSON) + encoded bytes + raw volume bytes out."""
    # Arrow hands back numpy/Arrow scalars: rebuild the plan item with plain Python values
    item = PlanItem(
        row=int(row["row"]),
        scan_id=str(row["scan_id"]),
        subject_id=int(row["subject_id"]),
        split=str(row["split"]),
        image_path=str(row["image_path"]),
        modality=None if row["modality"] is None else str(row["modality"]),
        wds_shard=int(row["wds_shard"]),
        zarr_shard=int(row["zarr_shard"]),
        scans_table=str(row["scans_table"]),
    )
    meta, data, vol = _scan_task(item, imaging, codec, keep_volume, storage)
    return {
        "row": int(item.row),
        "meta": json.dumps(meta),
        "data": data,
        "volume": None if vol is None else vol.tobytes(),
    }


EXECUTORS = {"tasks": RayTasksExecutor, "data": RayDataExecutor}


def make_executor(workers: int, address: str | None, kind: str = "tasks"):
    if address is None and workers == 0:
        return LocalExecutor()
    return EXECUTORS[kind](max(1, workers), address)
