"""The per-rank batch stream run inside each DataLoader worker (or in-process).

Shape legend: B batch (per rank), D/H/W volume axes, K TTE tasks, T benchmark tasks.

The stream is endless: from its start cursor it runs through the rest of that epoch and on
into the following ones (`order.advance`), so the DataLoader workers are started once per
loader, not once per epoch (starting forkserver workers that import torch and zarr took
seconds, and every epoch boundary stalled the trainer that long). A worker builds whole
batches (stream steps t with t % num_workers == worker), so the DataLoader's round-robin over
workers yields the rank's steps in order, whatever the number of workers. Inside a batch,
samples are read grouped by shard and in shard order (one seek + one read per sample, never a
shard re-read).

Volumes are decoded straight into a `SlotRing`: shared memory allocated once per stream, a few
batch-sized slots per worker. Only the slot number crosses the worker queue; the main process
copies the slot into the batch tensor (pinned when it goes to a GPU, a copy that pinning needs
anyway) and frees the slot. A fresh shared-memory tensor per batch, the DataLoader's default,
costs page faults on both sides each time: it cost more CPU than the decode itself here.
Labels travel as numpy arrays (pickled in the queue message: a few KiB).

A sample that fails to read (missing or corrupt) is replaced by the first readable sample at
the following global positions (p+1, p+2, ... wrapping around the epoch order): deterministic,
so the batch is always full and every rank takes the same number of steps. Each replacement
is reported as an event that the loader counts and logs.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from tte_scale.data.config import LoaderConfig
from tte_scale.data.order import advance, epoch_order, rank_step_positions
from tte_scale.data.readers import SampleError, WdsReader, ZarrReader
from tte_scale.data.split_index import SplitIndex
from tte_scale.data.storage import ShardCache
from tte_scale.errors import TteScaleError
from tte_scale.formats.shards import LABEL_KEYS

__all__ = ["DataIntegrityError", "StreamSpec", "SlotRing", "BatchStream", "make_reader", "read_batch", "to_torch"]


class DataIntegrityError(TteScaleError):
    """Too many corrupt or missing samples (or no readable substitute): the run must stop."""


class SlotRing:
    """Per-worker batch slots in shared memory, and a semaphore per worker counting free slots.

    Made by the main process before the workers start and handed to them with the dataset
    (inherited on fork, passed as file descriptors to spawn/forkserver workers).
    """

    def __init__(self, ctx, num_workers: int, slots: int, batch_shape: tuple[int, ...]):
        self.slots = slots
        self.vol_WSB1DHW = torch.empty((num_workers, slots, *batch_shape), dtype=torch.int16).share_memory_()
        self.free = [ctx.Semaphore(slots) for _ in range(num_workers)]

    def acquire(self, worker: int) -> None:
        """Wait until the main process has copied out one of this worker's slots."""
        # The DataLoader keeps at most prefetch_factor batches in flight per worker and the ring
        # has one slot more, so this normally returns at once; it only waits if the main process
        # is slow to copy. If the main process dies meanwhile, the worker's lifeline thread
        # (tte_scale.data.lifeline) ends the worker.
        self.free[worker].acquire()

    def take(self, worker: int, slot: int, out_B1DHW: torch.Tensor) -> None:
        """Copy a filled slot into `out_B1DHW` (main process) and hand the slot back."""
        try:
            # numpy, not Tensor.copy_: torch would split this memcpy over its intra-op threads,
            # whose spin-waiting cost ~5x the CPU time of a plain single-threaded copy here.
            np.copyto(out_B1DHW.numpy(), self.vol_WSB1DHW[worker, slot].numpy())
        finally:
            self.free[worker].release()


@dataclass(slots=True)
class StreamSpec:
    """Everything a worker needs (picklable: sent to spawn/forkserver workers).

    The stream starts at the cursor (`epoch`, `consumed`) and never ends.
    """

    index: SplitIndex
    cfg: LoaderConfig
    epoch: int
    consumed: int
    rank: int
    world_size: int
    ring: SlotRing | None = None


def make_reader(index: SplitIndex, cfg: LoaderConfig):
    if cfg.format == "zarr":
        return ZarrReader(index, verify_sha256=cfg.verify_volume_sha256)
    return WdsReader(index, ShardCache(cfg.cache_dir, cfg.cache_max_bytes), verify_sha256=cfg.verify_volume_sha256)


def read_batch(
    reader, index: SplitIndex, order: np.ndarray, positions: np.ndarray, tries: int, vol_B1DHW: np.ndarray
) -> tuple[dict, list[dict]]:
    """Decode the batch at global `positions` of the epoch `order` into `vol_B1DHW` (int16
    [B, 1, D, H, W]); returns its labels, rows and scan ids (numpy / lists) and the integrity
    events it caused."""
    B = len(positions)
    n = len(order)
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
                labels[j] = reader.read(k, vol_B1DHW[j, 0])
                chosen[j] = k
                break
            except SampleError as exc:
                if attempt == 0:  # only the sample owning position p counts as bad
                    events.append(
                        {
                            "kind": f"replaced_{exc.kind}",
                            "scan_id": index.scan_ids[k],
                            "row": int(index.rows[k]),
                            "shard": exc.shard,
                            "reason": exc.reason,
                            "position": p,
                        }
                    )
        else:
            raise DataIntegrityError(
                f"no readable sample in global positions {p}..{p + tries} of split {index.split!r} "
                f"under {index.root}: the shards are badly damaged (see the warnings above)"
            )
        if attempt:
            events[-1]["replacement"] = index.scan_ids[chosen[j]]
    events.extend(reader.shard_events)
    reader.shard_events.clear()
    batch = {name: np.stack([lab[name] for lab in labels]) for name in LABEL_KEYS}
    batch["row"] = index.rows[chosen].astype(np.int64)
    batch["scan_id"] = [index.scan_ids[k] for k in chosen]
    return batch, events


def to_torch(batch: dict, vol_B1DHW: torch.Tensor, pin: bool) -> dict:
    """The loader's batch (docs/formats.md "Batch") from `read_batch`'s arrays and the volume."""
    out = {"volume": vol_B1DHW}
    for name in (*LABEL_KEYS, "row"):
        t = torch.from_numpy(batch[name])
        out[name] = t.pin_memory() if pin else t
    out["scan_id"] = batch["scan_id"]
    return out


class BatchStream(torch.utils.data.IterableDataset):
    """Yields (batch, events) for this rank's steps from the start cursor on, endlessly; workers
    split the steps."""

    def __init__(self, spec: StreamSpec):
        super().__init__()
        self.spec = spec

    def __iter__(self):
        sp = self.spec
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None:
            # A worker decodes on one core: the loader's parallelism is its workers. Blosc would
            # otherwise start a thread per core of the node in every worker (it threads when called
            # from a main thread, which a worker's loop is), N workers x cores threads in all.
            import numcodecs.blosc

            numcodecs.blosc.use_threads = False
        b, world = sp.cfg.batch_size, sp.world_size
        order_epoch, order = None, None
        # A worker goes away when the main process does, however that ends: the loader starts
        # every worker with a lifeline to the main process (tte_scale.data.lifeline), since the
        # worker's parent may be the forkserver, which outlives a killed main process.
        reader = make_reader(sp.index, sp.cfg)  # opened here, i.e. inside the worker
        try:
            for i, t in enumerate(itertools.count(worker, num_workers)):
                epoch, consumed = advance(sp.index.num_samples, sp.epoch, sp.consumed, t, b, world)
                if epoch != order_epoch:
                    order_epoch = epoch
                    order = epoch_order(
                        sp.index.stream_sizes, sp.cfg.seed, epoch, sp.cfg.shuffle_window, sp.cfg.shuffle
                    )
                positions = rank_step_positions(consumed, 0, sp.rank, b, world)
                if sp.ring is None:  # in-process: decode straight into the batch tensor
                    vol = torch.empty((len(positions), 1, *sp.index.shape), dtype=torch.int16)
                    batch, events = read_batch(
                        reader, sp.index, order, positions, sp.cfg.replacement_tries, vol.numpy()
                    )
                    batch["volume"] = vol
                else:
                    slot = i % sp.ring.slots
                    sp.ring.acquire(worker)
                    batch, events = read_batch(
                        reader,
                        sp.index,
                        order,
                        positions,
                        sp.cfg.replacement_tries,
                        sp.ring.vol_WSB1DHW[worker, slot].numpy(),
                    )
                    batch["volume"] = (worker, slot)
                yield batch, events
        finally:
            reader.close()
