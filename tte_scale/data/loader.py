"""`build_loader` and `TTELoader`: the resumable, elastic, integrity-checked batch iterator.

Example::

    loader = build_loader("runs/shards", LoaderConfig(format="wds", batch_size=2), rank, world)
    for epoch in range(start_epoch, epochs):
        loader.set_epoch(epoch)          # no-op when resuming inside this epoch
        for batch in loader:             # exactly loader.steps_per_epoch batches on every rank
            ...
            ckpt["loader"] = loader.state_dict()

The cursor (state_dict) is (seed, epoch, global samples consumed) plus guards: it does not
depend on the world size, batch size or worker count, so a run saved on N ranks resumes on N'
ranks and serves exactly the global positions an uninterrupted run would have served next.

Batches come from a `_Feed`: one endless stream of this rank's steps across epochs, whose
DataLoader workers live as long as the loader (not one epoch). Iterating the loader takes the
current epoch's batches from the feed; the feed is only restarted when the cursor moves
somewhere else than where the feed stands (`set_epoch` to another epoch, `load_state_dict`).
Batches the feed prefetched but nobody took yet are not counted as served, so the cursor
stays exact. Call `close()` to stop the workers (otherwise they stop when the loader is
garbage collected).

The loader never draws from the global torch RNG (the DataLoader would, for its worker seeds,
without a generator of its own): with workers or without, the model's dropout / drop-path
streams see exactly the same draws, so runs with 0, 1 or more workers, and a resumed run and
the uninterrupted one, train on identical random numbers.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import multiprocessing.util
import sys
import traceback

import numpy as np
import torch

from tte_scale.data.config import LoaderConfig
from tte_scale.data.lifeline import WorkerInit
from tte_scale.data.order import advance, steps_remaining
from tte_scale.data.shm import check_shm, ring_bytes
from tte_scale.data.split_index import SplitIndex, read_split_index
from tte_scale.data.storage import missing
from tte_scale.data.stream import BatchStream, DataIntegrityError, SlotRing, StreamSpec, to_torch

__all__ = ["TTELoader", "build_loader", "STATE_VERSION"]

log = logging.getLogger("tte_scale.data")

STATE_VERSION = 1
# Recycled unpinned batch buffers per feed: the batch being used, the one the caller may still hold
# (an optimizer step's inputs), and one spare; more held at once get fresh ones.
_POOL_MAX = 3
_COUNTERS = (
    "batches",
    "samples",
    "replaced_corrupt",
    "replaced_missing",
    "shards_missing",
    "shards_damaged",
    "shard_count_mismatch",
)


class TTELoader:
    """Iterates one rank's batches (dicts, docs/formats.md "Batch") of the current epoch."""

    def __init__(self, index: SplitIndex, cfg: LoaderConfig, rank: int = 0, world_size: int = 1):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} / world_size {world_size}: need 0 <= rank < world_size")
        self.index, self.cfg, self.rank, self.world_size = index, cfg, rank, world_size
        self.epoch = 0
        self.consumed = 0  # global positions of this epoch already served (all ranks together)
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._bad_this_epoch = 0
        self._bad_examples: list[str] = []
        self._seen_shard_events: set[tuple[str, str]] = set()
        self._feed: _Feed | None = None
        if self.steps_per_epoch == 0:
            raise DataIntegrityError(
                f"split {index.split!r} of {index.root} has {index.num_samples} samples, fewer than one global batch "
                f"({cfg.batch_size} x {world_size} ranks): no step possible"
            )

    # -- sizes ----------------------------------------------------------------------------------
    @property
    def global_batch(self) -> int:
        return self.cfg.batch_size * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        """Steps of a full epoch on every rank: floor(N / global_batch) (remainder dropped)."""
        return steps_remaining(self.index.num_samples, 0, self.cfg.batch_size, self.world_size)

    @property
    def steps_remaining(self) -> int:
        """Steps left in the current epoch from the cursor."""
        return steps_remaining(self.index.num_samples, self.consumed, self.cfg.batch_size, self.world_size)

    def __len__(self) -> int:
        return self.steps_remaining

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; the cursor restarts at 0 unless `epoch` is already the current one."""
        if epoch != self.epoch:
            self.epoch, self.consumed, self._bad_this_epoch = int(epoch), 0, 0

    # -- iteration ------------------------------------------------------------------------------
    def __iter__(self):
        for _ in range(self.steps_remaining):
            try:
                batch, events = self._feed_at_cursor().next()
            except BaseException as exc:
                self.close()  # a failed stream is not resumed: iterating again restarts at the cursor
                # The traceback's frames still reference the DataLoader iterator (whose finalizer
                # stops the workers): clear their locals so the workers stop now, not when the
                # caller lets go of the error. File and line of each frame stay in the traceback.
                traceback.clear_frames(exc.__traceback__)
                raise
            self._record(events, len(batch["scan_id"]))
            self.consumed += self.global_batch  # counts this batch as served
            yield batch
        if self.consumed + self.global_batch > self.index.num_samples:
            self.epoch, self.consumed, self._bad_this_epoch = self.epoch + 1, 0, 0

    def _cursor(self) -> tuple[int, int]:
        return advance(self.index.num_samples, self.epoch, self.consumed, 0, self.cfg.batch_size, self.world_size)

    def _feed_at_cursor(self) -> _Feed:
        """The running feed if its next batch is the cursor's, else a new one started there."""
        cursor = self._cursor()
        if self._feed is not None and self._feed.cursor != cursor:
            self.close()
        if self._feed is None:
            spec = StreamSpec(
                index=self.index,
                cfg=self.cfg,
                epoch=cursor[0],
                consumed=cursor[1],
                rank=self.rank,
                world_size=self.world_size,
            )
            self._feed = _Feed(spec)
        return self._feed

    def close(self) -> None:
        """Stop the feed's workers (if any); iterating again starts a new feed at the cursor."""
        feed, self._feed = self._feed, None
        if feed is not None:
            feed.close()

    def _record(self, events: list[dict], batch_len: int) -> None:
        self._counters["batches"] += 1
        self._counters["samples"] += batch_len
        for ev in events:
            kind = ev["kind"]
            if kind.startswith("replaced_"):
                self._counters[kind] += 1
                self._bad_this_epoch += 1
                if len(self._bad_examples) < 20:
                    self._bad_examples.append(f"{ev['scan_id']} (row {ev['row']}, {ev['shard']}: {ev['reason']})")
                log.warning(
                    "%s sample scan_id=%s row=%d shard=%s: %s; replaced by %s",
                    kind.removeprefix("replaced_"),
                    ev["scan_id"],
                    ev["row"],
                    ev["shard"],
                    ev["reason"],
                    ev.get("replacement"),
                )
            else:
                key = (kind, ev["shard"])
                if key not in self._seen_shard_events:  # several workers report the same shard
                    self._seen_shard_events.add(key)
                    self._counters[
                        {"shard_missing": "shards_missing", "shard_damaged": "shards_damaged"}.get(kind, kind)
                    ] += 1
                    log.warning("%s: %s: %s", kind, ev["shard"], ev["detail"])
        limit = self.cfg.max_bad_fraction * self.steps_per_epoch * self.cfg.batch_size
        if self._bad_this_epoch > limit:
            raise DataIntegrityError(
                f"rank {self.rank}: {self._bad_this_epoch} corrupt or missing samples in epoch {self.epoch} of split "
                f"{self.index.split!r} under {self.index.root}, more than max_bad_fraction={self.cfg.max_bad_fraction} "
                f"of {self.steps_per_epoch * self.cfg.batch_size}; first ones: " + "; ".join(self._bad_examples[:10])
            )

    # -- state ----------------------------------------------------------------------------------
    def stats(self) -> dict:
        """Named counters (replacements, damaged shards, ...) plus the cursor."""
        return {
            **self._counters,
            "bad_this_epoch": self._bad_this_epoch,
            "epoch": self.epoch,
            "consumed": self.consumed,
        }

    def state_dict(self) -> dict:
        return {
            "version": STATE_VERSION,
            "kind": "tte_scale.data.TTELoader",
            "seed": self.cfg.seed,
            "shuffle": self.cfg.shuffle,
            "shuffle_window": self.cfg.shuffle_window,
            "split": self.index.split,
            "fingerprint": self.index.fingerprint,
            "num_samples": self.index.num_samples,
            "epoch": self.epoch,
            "consumed": self.consumed,
            "bad_this_epoch": self._bad_this_epoch,
            "counters": dict(self._counters),
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume from `state_dict()` (any world size / batch size / worker count); refuses a mismatch."""
        where = "loader state"
        if not isinstance(state, dict) or state.get("kind") != "tte_scale.data.TTELoader":
            raise ValueError(f"{where}: not a TTELoader state (got {type(state).__name__})")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{where}: version {state.get('version')!r}, this loader reads version {STATE_VERSION}")
        for key, mine in (
            ("split", self.index.split),
            ("seed", self.cfg.seed),
            ("shuffle", self.cfg.shuffle),
            ("shuffle_window", self.cfg.shuffle_window),
            ("num_samples", self.index.num_samples),
            ("fingerprint", self.index.fingerprint),
        ):
            if state.get(key) != mine:
                raise ValueError(
                    f"{where}: saved with {key}={state.get(key)!r} but this loader has {key}={mine!r}; "
                    "the global sample order would differ, so resuming would duplicate or skip samples"
                )
        consumed = int(state["consumed"])
        if not 0 <= consumed <= self.index.num_samples:
            raise ValueError(f"{where}: consumed={consumed} outside [0, {self.index.num_samples}]")
        self.epoch, self.consumed = int(state["epoch"]), consumed
        self._bad_this_epoch = int(state.get("bad_this_epoch", 0))
        self._counters.update({k: int(v) for k, v in state.get("counters", {}).items() if k in self._counters})


class _Feed:
    """This rank's endless batch stream from a start cursor: in-process, or DataLoader workers
    decoding into a `SlotRing` (they start with the feed, i.e. when the loader's iterator is
    first asked for a batch: inside the caller's `signals_blocked()`, whose mask they inherit)."""

    def __init__(self, spec: StreamSpec):
        cfg = spec.cfg
        self.spec = spec
        self.cursor = (spec.epoch, spec.consumed)  # of the batch `next` returns
        self.pin = torch.cuda.is_available() if cfg.pin_memory is None else cfg.pin_memory
        self.batch_shape = (cfg.batch_size, 1, *spec.index.shape)
        self.ring = None
        # Unpinned batch volumes come from a few recycled buffers (see _volume_out).
        self._pool: list[np.ndarray] = []
        if cfg.num_workers == 0:
            self._it = iter(BatchStream(spec))
            return
        ctx = mp.get_context(cfg.start_method())
        # the forkserver's socket lives in this process's multiprocessing temp folder: a worker
        # that outlives a killed trainer removes it (tte_scale.data.lifeline)
        tempdir = multiprocessing.util.get_temp_dir() if ctx.get_start_method() == "forkserver" else None
        # one slot more than the batches the DataLoader lets each worker run ahead (see SlotRing)
        check_shm(
            ring_bytes(cfg.num_workers, cfg.prefetch_factor, cfg.batch_size, spec.index.shape),
            what=f"the {spec.index.split!r} loader's worker slots",
        )
        self.ring = SlotRing(ctx, cfg.num_workers, cfg.prefetch_factor + 1, self.batch_shape)
        spec.ring = self.ring
        # generator: the DataLoader draws its workers' base seed from it; by default it would draw
        # from the global torch RNG and shift the model's dropout stream whenever workers start.
        # pin_memory=False: the copy out of the ring goes straight into pinned memory instead.
        self._loader = torch.utils.data.DataLoader(
            BatchStream(spec),
            batch_size=None,
            num_workers=cfg.num_workers,
            prefetch_factor=cfg.prefetch_factor,
            pin_memory=False,
            persistent_workers=False,
            multiprocessing_context=ctx,
            collate_fn=_as_is,
            generator=torch.Generator().manual_seed(cfg.seed),
            worker_init_fn=WorkerInit(tempdir),  # each worker exits when this process does, even on SIGKILL
        )
        self._it = iter(self._loader)

    def next(self) -> tuple[dict, list[dict]]:
        arrays, events = next(self._it)
        vol = arrays.pop("volume")
        if self.ring is not None:
            worker, slot = vol
            vol = self._volume_out()
            self.ring.take(worker, slot, vol)
        elif self.pin:
            vol = vol.pin_memory()
        sp = self.spec
        self.cursor = advance(sp.index.num_samples, *self.cursor, 1, sp.cfg.batch_size, sp.world_size)
        return to_torch(arrays, vol, self.pin), events

    def _volume_out(self) -> torch.Tensor:
        """The tensor a batch's volumes are copied into, out of the worker's slot.

        Pinned: a fresh one; torch's pinned-memory allocator caches freed blocks itself. Unpinned:
        a fresh 64 MiB tensor per batch is fresh pages from the kernel each time, whose page faults
        and zeroing cost 3x the copy (7 of 9 CPU ms per 160 x 224 x 224 volume in the main process,
        benchmarks/results/loader_512.md). So a few numpy buffers are recycled instead, each only
        once nothing refers to it any more: a tensor made by ``torch.from_numpy`` (and every view of
        it) holds a reference to its array, so an array whose only reference is this pool belongs to
        no batch the caller still holds, however it was sliced.
        """
        if self.pin:
            return torch.empty(self.batch_shape, dtype=torch.int16, pin_memory=True)
        for i in range(len(self._pool)):
            if sys.getrefcount(self._pool[i]) == 2:  # the pool's reference and the argument's
                return torch.from_numpy(self._pool[i])
        buf = np.empty(self.batch_shape, dtype=np.int16)
        if len(self._pool) < _POOL_MAX:
            self._pool.append(buf)
        return torch.from_numpy(buf)

    def close(self) -> None:
        it, self._it = self._it, None
        if self.ring is None:
            it.close()  # the in-process stream closes its reader
        # With workers, this drops the last reference to the DataLoader iterator: torch's way to end
        # them early (the iterator's finalizer tells each worker to exit and joins it, at once
        # under CPython's reference counting).
        del it


def _as_is(item):
    # The default (default_convert) would turn the label arrays into tensors inside the worker,
    # and each tensor would then cross the queue as its own shared-memory segment.
    return item


def _check_shards(index: SplitIndex, cfg: LoaderConfig) -> None:
    """Fail fast, on every rank alike, when missing shards alone exceed max_bad_fraction."""
    if cfg.format != "wds":
        return
    paths = [index.wds_paths[int(shard)] for shard in index.stream_ids]
    lost = missing(paths)  # remote shards: one listing, not a request per shard
    lost_set = set(lost)
    lost_samples = sum(int(size) for path, size in zip(paths, index.stream_sizes) if path in lost_set)
    if lost:
        frac = lost_samples / index.num_samples
        msg = f"{len(lost)} shard(s) missing ({lost_samples} of {index.num_samples} samples): {lost[:5]}"
        if frac > cfg.max_bad_fraction:
            raise DataIntegrityError(f"{msg}; more than max_bad_fraction={cfg.max_bad_fraction}")
        log.warning("%s; their samples will be replaced", msg)


def build_loader(shards_dir: str, cfg: LoaderConfig, rank: int = 0, world_size: int = 1) -> TTELoader:
    """A loader over split `cfg.split` of a `tte-scale shard` output folder (local or fsspec URL)."""
    index = read_split_index(str(shards_dir), cfg.split, cfg.format)
    _check_shards(index, cfg)
    return TTELoader(index, cfg, rank=rank, world_size=world_size)
