"""The per-rank batch stream run inside each DataLoader worker (or in-process).

Shape legend: B batch (per rank), D/H/W volume axes, K TTE tasks, T benchmark tasks.

A worker builds whole batches (steps s with s % num_workers == worker), so the DataLoader's
round-robin over workers yields the rank's steps in order, whatever the number of workers.
Inside a batch, samples are read grouped by shard and in shard order (one seek + one read per
sample, never a shard re-read), and decoded straight into a shared-memory int16 buffer.

A sample that fails to read (missing or corrupt) is replaced by the first readable sample at
the following global positions (p+1, p+2, ... wrapping around the epoch order): deterministic,
so the batch is always full and every rank takes the same number of steps. Each replacement
is reported as an event that the loader counts and logs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tte_scale.data.config import LoaderConfig
from tte_scale.data.manifest import SplitIndex
from tte_scale.data.order import epoch_order, rank_step_positions, worker_steps
from tte_scale.data.readers import LABEL_KEYS, SampleError, WdsReader, ZarrReader
from tte_scale.data.storage import ShardCache
from tte_scale.errors import TteScaleError

__all__ = ["DataIntegrityError", "StreamSpec", "BatchStream", "make_reader", "read_batch"]


class DataIntegrityError(TteScaleError):
    """Too many corrupt or missing samples (or no readable substitute): the run must stop."""


@dataclass(slots=True)
class StreamSpec:
    """Everything a worker needs (picklable: sent to spawn/forkserver workers)."""

    index: SplitIndex
    cfg: LoaderConfig
    epoch: int
    consumed: int
    num_steps: int
    rank: int
    world_size: int


def make_reader(index: SplitIndex, cfg: LoaderConfig):
    if cfg.format == "zarr":
        return ZarrReader(index)
    return WdsReader(index, ShardCache(cfg.cache_dir, cfg.cache_max_bytes))


def read_batch(reader, index: SplitIndex, order: np.ndarray, positions: np.ndarray, tries: int,
               shared: bool) -> tuple[dict, list[dict]]:
    """The batch at global `positions` of the epoch `order`, with the integrity events it caused."""
    B = len(positions)
    D, H, W = index.shape
    n = len(order)
    vol_B1DHW = torch.empty((B, 1, D, H, W), dtype=torch.int16)
    if shared:
        vol_B1DHW.share_memory_()  # decoded in place, then handed to the main process without a copy
    vol_np = vol_B1DHW.numpy()
    ks = order[positions % n]
    slots = sorted(range(B), key=lambda j: (index.stream[ks[j]], index.shard_index[ks[j]]))
    labels: list[dict | None] = [None] * B
    chosen = [0] * B
    events: list[dict] = []
    for j in slots:
        p = int(positions[j])
        for attempt in range(tries + 1):
            k = int(order[(p + attempt) % n])
            try:
                labels[j] = reader.read(k, vol_np[j, 0])
                chosen[j] = k
                break
            except SampleError as exc:
                if attempt == 0:  # only the sample owning position p counts as bad
                    events.append({"kind": f"replaced_{exc.kind}", "scan_id": index.scan_ids[k],
                                   "row": int(index.rows[k]), "shard": exc.shard, "reason": exc.reason,
                                   "position": p})
        else:
            raise DataIntegrityError(
                f"no readable sample in global positions {p}..{p + tries} of split {index.split!r} "
                f"under {index.root}: the shards are badly damaged (see the warnings above)")
        if attempt:
            events[-1]["replacement"] = index.scan_ids[chosen[j]]
    events.extend(reader.shard_events)
    reader.shard_events.clear()
    batch = {"volume": vol_B1DHW}
    for name in LABEL_KEYS:
        batch[name] = torch.from_numpy(np.stack([lab[name] for lab in labels]))
    batch["row"] = torch.from_numpy(index.rows[chosen].astype(np.int64))
    batch["scan_id"] = [index.scan_ids[k] for k in chosen]
    return batch, events


class BatchStream(torch.utils.data.IterableDataset):
    """Yields (batch, events) for this rank's remaining steps; workers split the steps."""

    def __init__(self, spec: StreamSpec):
        super().__init__()
        self.spec = spec

    def __iter__(self):
        sp = self.spec
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        order = epoch_order(sp.index.stream_sizes, sp.cfg.seed, sp.epoch, sp.cfg.shuffle_window, sp.cfg.shuffle)
        reader = make_reader(sp.index, sp.cfg)  # opened here, i.e. inside the worker
        try:
            for step in worker_steps(sp.num_steps, worker, num_workers):
                positions = rank_step_positions(sp.consumed, step, sp.rank, sp.cfg.batch_size, sp.world_size)
                yield read_batch(reader, sp.index, order, positions, sp.cfg.replacement_tries,
                                 shared=info is not None)
        finally:
            reader.close()
