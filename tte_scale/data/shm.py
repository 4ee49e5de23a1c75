"""Room in /dev/shm for the loaders' shared-memory slot rings, checked before a run starts.

Each loader with workers decodes into a `SlotRing` (tte_scale/data/stream.py) in shared
memory: ``num_workers x (prefetch_factor + 1)`` batch-sized int16 slots, allocated when its
first batch is asked for. torch places shared tensors in /dev/shm, and when it is too small
the first worker that touches a slot dies of SIGBUS, long after the run started (Docker's
default /dev/shm is 64 MiB; the ViT-B config needs ~1.5 GiB per rank). So the need is
checked up front against the free space, and a shortfall is one line saying how much is
needed and how to get it.
"""

from __future__ import annotations

import math
import shutil

from tte_scale.errors import TteScaleError

__all__ = ["SHM_PATH", "SharedMemoryTooSmall", "check_shm", "ring_bytes"]

SHM_PATH = "/dev/shm"


class SharedMemoryTooSmall(TteScaleError):
    """/dev/shm cannot hold the loaders' slot rings."""


def ring_bytes(num_workers: int, prefetch_factor: int, batch_size: int, volume_shape: tuple[int, ...]) -> int:
    """Bytes of one loader's slot ring (0 without workers: batches are read in-process)."""
    if num_workers == 0:
        return 0
    slots = num_workers * (prefetch_factor + 1)
    return slots * batch_size * math.prod(volume_shape) * 2  # int16 voxels


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def check_shm(need_per_rank: int, ranks_on_node: int = 1, path: str = SHM_PATH, what: str = "the loaders") -> None:
    """Raise :class:`SharedMemoryTooSmall` unless ``path`` has room for every rank's rings on this node."""
    if need_per_rank <= 0:
        return
    try:
        free = shutil.disk_usage(path).free
    except OSError:  # no /dev/shm (not Linux): torch then uses another mechanism, nothing to check
        return
    need = need_per_rank * max(1, ranks_on_node)
    if free >= need:
        return
    ranks = f" x {ranks_on_node} ranks on this node" if ranks_on_node > 1 else ""
    raise SharedMemoryTooSmall(
        f"{path}: {_gib(free)} free, but {what} need {_gib(need_per_rank)} per rank{ranks} = {_gib(need)} of "
        f"shared memory (data.num_workers x (data.prefetch_factor + 1) x micro-batch volumes, int16); "
        f"give the container more (docker run --shm-size={math.ceil(need * 1.25 / 2**30)}g, or a larger "
        f"/dev/shm mount) or lower data.num_workers / data.prefetch_factor (data.num_workers=0 reads in the "
        f"training process, slower)"
    )
