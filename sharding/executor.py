"""Where tasks run: Ray (local embedded or a cluster) or, with 0 workers, this process.

Both expose the same three calls, so the driver in :mod:`sharding.job` is one piece of code
and the in-process loop is an honest baseline for the benchmark.
"""

from __future__ import annotations

import os

from sharding.samples import process_scan
from sharding.writers import write_tar, write_zarr_shard


class Done:
    """A finished in-process result; hashable by identity like a Ray ObjectRef."""

    __slots__ = ("value",)

    def __init__(self, value) -> None:
        self.value = value


class LocalExecutor:
    """Runs each task at submission; volume "refs" are the values themselves."""

    workers = 1

    def scan(self, item, imaging, codec, keep_volume):
        meta, data, vol = process_scan(item, imaging, codec, keep_volume)
        return Done(meta), data, vol

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


class RayExecutor:
    """Ray tasks: a scan task per scan (3 returns), a writer task per output shard."""

    def __init__(self, workers: int, address: str | None = None) -> None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray

        self.ray = ray
        if address:
            ray.init(address=address, logging_level="ERROR", log_to_driver=True)
            self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        else:
            ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR", log_to_driver=True)
            self.workers = workers
        # Each task uses one core; torch inside a task must not spread over all of them.
        opts = {"num_cpus": 1, "max_retries": 1}
        self._scan = ray.remote(_scan_task).options(num_returns=3, **opts)
        self._wds = ray.remote(write_tar).options(**opts)
        self._zarr = ray.remote(write_zarr_shard).options(**opts)

    def scan(self, item, imaging, codec, keep_volume):
        return tuple(self._scan.remote(item, imaging, codec, keep_volume))

    def write_wds(self, path, samples):
        return self._wds.remote(path, samples)

    def write_zarr(self, zarr_dir, rows, volumes, shape):
        return self._zarr.remote(zarr_dir, rows, volumes, shape)

    def wait(self, refs, num_returns=1, timeout=None):
        return self.ray.wait(list(refs), num_returns=min(num_returns, len(refs)), timeout=timeout)

    def get(self, ref):
        return self.ray.get(ref)

    def shutdown(self):
        self.ray.shutdown()


def _scan_task(item, imaging, codec, keep_volume):
    import torch

    torch.set_num_threads(1)
    return process_scan(item, imaging, codec, keep_volume)


def make_executor(workers: int, address: str | None):
    if address is None and workers == 0:
        return LocalExecutor()
    return RayExecutor(max(1, workers), address)
