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
"""

from __future__ import annotations

import logging

import torch

from tte_scale.data.config import LoaderConfig
from tte_scale.data.manifest import SplitIndex, read_split_index
from tte_scale.data.order import steps_remaining
from tte_scale.data.storage import exists
from tte_scale.data.stream import BatchStream, DataIntegrityError, StreamSpec, read_batch  # noqa: F401

__all__ = ["TTELoader", "build_loader", "STATE_VERSION"]

log = logging.getLogger("tte_scale.data")

STATE_VERSION = 1
_COUNTERS = ("batches", "samples", "replaced_corrupt", "replaced_missing", "shards_missing",
             "shards_damaged", "shard_count_mismatch")


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
        if self.steps_per_epoch == 0:
            raise DataIntegrityError(
                f"split {index.split!r} of {index.root} has {index.num_samples} samples, fewer than one global batch "
                f"({cfg.batch_size} x {world_size} ranks): no step possible")

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
        start, num_steps = self.consumed, self.steps_remaining
        spec = StreamSpec(index=self.index, cfg=self.cfg, epoch=self.epoch, consumed=start, num_steps=num_steps,
                          rank=self.rank, world_size=self.world_size)
        stream = BatchStream(spec)
        if self.cfg.num_workers == 0:
            it = iter(stream)
        else:
            pin = torch.cuda.is_available() if self.cfg.pin_memory is None else self.cfg.pin_memory
            it = iter(torch.utils.data.DataLoader(
                stream, batch_size=None, num_workers=min(self.cfg.num_workers, max(1, num_steps)),
                prefetch_factor=self.cfg.prefetch_factor, pin_memory=pin, persistent_workers=False,
                multiprocessing_context=self.cfg.start_method()))
        try:
            for step, (batch, events) in enumerate(it):
                self._record(events, len(batch["scan_id"]))
                self.consumed = start + (step + 1) * self.global_batch  # counts this batch as served
                yield batch
            if self.consumed + self.global_batch > self.index.num_samples:
                self.epoch, self.consumed, self._bad_this_epoch = self.epoch + 1, 0, 0
        finally:
            del it  # shuts the workers down when the caller stops early

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
                log.warning("%s sample scan_id=%s row=%d shard=%s: %s; replaced by %s",
                            kind.removeprefix("replaced_"), ev["scan_id"], ev["row"], ev["shard"], ev["reason"],
                            ev.get("replacement"))
            else:
                key = (kind, ev["shard"])
                if key not in self._seen_shard_events:  # several workers report the same shard
                    self._seen_shard_events.add(key)
                    self._counters[{"shard_missing": "shards_missing", "shard_damaged": "shards_damaged"}
                                   .get(kind, kind)] += 1
                    log.warning("%s: %s: %s", kind, ev["shard"], ev["detail"])
        limit = self.cfg.max_bad_fraction * self.steps_per_epoch * self.cfg.batch_size
        if self._bad_this_epoch > limit:
            raise DataIntegrityError(
                f"rank {self.rank}: {self._bad_this_epoch} corrupt or missing samples in epoch {self.epoch} of split "
                f"{self.index.split!r} under {self.index.root}, more than max_bad_fraction={self.cfg.max_bad_fraction} "
                f"of {self.steps_per_epoch * self.cfg.batch_size}; first ones: " + "; ".join(self._bad_examples[:10]))

    # -- state ----------------------------------------------------------------------------------
    def stats(self) -> dict:
        """Named counters (replacements, damaged shards, ...) plus the cursor."""
        return {**self._counters, "bad_this_epoch": self._bad_this_epoch, "epoch": self.epoch,
                "consumed": self.consumed}

    def state_dict(self) -> dict:
        return {"version": STATE_VERSION, "kind": "tte_scale.data.TTELoader", "seed": self.cfg.seed,
                "shuffle": self.cfg.shuffle, "shuffle_window": self.cfg.shuffle_window, "split": self.index.split,
                "fingerprint": self.index.fingerprint, "num_samples": self.index.num_samples,
                "epoch": self.epoch, "consumed": self.consumed, "bad_this_epoch": self._bad_this_epoch,
                "counters": dict(self._counters)}

    def load_state_dict(self, state: dict) -> None:
        """Resume from `state_dict()` (any world size / batch size / worker count); refuses a mismatch."""
        where = "loader state"
        if not isinstance(state, dict) or state.get("kind") != "tte_scale.data.TTELoader":
            raise ValueError(f"{where}: not a TTELoader state (got {type(state).__name__})")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{where}: version {state.get('version')!r}, this loader reads version {STATE_VERSION}")
        for key, mine in (("split", self.index.split), ("seed", self.cfg.seed), ("shuffle", self.cfg.shuffle),
                          ("shuffle_window", self.cfg.shuffle_window), ("num_samples", self.index.num_samples),
                          ("fingerprint", self.index.fingerprint)):
            if state.get(key) != mine:
                raise ValueError(f"{where}: saved with {key}={state.get(key)!r} but this loader has {key}={mine!r}; "
                                 "the global sample order would differ, so resuming would duplicate or skip samples")
        consumed = int(state["consumed"])
        if not 0 <= consumed <= self.index.num_samples:
            raise ValueError(f"{where}: consumed={consumed} outside [0, {self.index.num_samples}]")
        self.epoch, self.consumed = int(state["epoch"]), consumed
        self._bad_this_epoch = int(state.get("bad_this_epoch", 0))
        self._counters.update({k: int(v) for k, v in state.get("counters", {}).items() if k in self._counters})


def _check_shards(index: SplitIndex, cfg: LoaderConfig) -> None:
    """Fail fast, on every rank alike, when missing shards alone exceed max_bad_fraction."""
    if cfg.format != "wds":
        return
    lost_samples, lost = 0, []
    for shard, size in zip(index.stream_ids, index.stream_sizes):
        path = index.wds_paths[int(shard)]
        if not exists(path):
            lost.append(path)
            lost_samples += int(size)
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
