"""The global sample order and how it is cut into ranks, steps and workers (pure functions).

The order of one epoch depends only on (seed, epoch, the canonical partition), never on the
number of ranks or workers:

1. Canonical partition: the split's samples grouped into canonical streams (one per WebDataset
   shard, samples in shard order). Sample k of the split is `stream_offsets[s] + j`.
2. The streams are permuted with a generator keyed by (seed, epoch).
3. The flattened list is cut into blocks of `window` consecutive positions and each block is
   permuted (a bounded shuffle: a sample moves less than `window` positions, so a reader needs
   at most ceil(window / shard_size) + 1 shards open at a time).

Cutting: the cursor (epoch, consumed) counts global positions already served this epoch. A
global step takes the next G = batch_size * world_size positions; rank r takes the contiguous
block `[consumed + r*b, consumed + (r+1)*b)` (contiguous blocks keep each rank's reads inside few
shards). Every rank takes floor((N - consumed) / G) steps of an epoch, the remainder (< G
positions) is dropped, so ranks never diverge; resuming on W' ranks with b' per rank continues the
same global positions.

Across epochs the steps form one endless stream: `advance` gives the cursor t steps after a
start cursor, the next epoch starting at consumed = 0 once fewer than G positions are left.
Worker w of n builds the stream steps t with t % n == w (epochs included, so workers never
restart at an epoch boundary); the DataLoader's round-robin over workers restores step order.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "epoch_order",
    "steps_remaining",
    "rank_step_positions",
    "advance",
]

# Mixed into the generator seed so that this shuffle never shares a stream with other seeded code.
_ORDER_TAG = 0x7E5CA1E


def epoch_order(
    stream_sizes: np.ndarray | list[int], seed: int, epoch: int, window: int, shuffle: bool = True
) -> np.ndarray:
    """Split-local sample indices (int64 [N]) in the global order of (seed, epoch)."""
    sizes = np.asarray(stream_sizes, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    n = int(offsets[-1])
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    rng = np.random.Generator(np.random.PCG64([_ORDER_TAG, int(seed) & 0xFFFFFFFFFFFF, int(epoch)]))
    streams = rng.permutation(len(sizes))
    parts = [np.arange(offsets[s], offsets[s + 1], dtype=np.int64) for s in streams]
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if window > 1:
        for start in range(0, n, window):
            block = flat[start : start + window]
            flat[start : start + window] = block[rng.permutation(len(block))]
    return flat


def steps_remaining(num_samples: int, consumed: int, batch_size: int, world_size: int) -> int:
    """Steps every rank takes from cursor `consumed` to the end of the epoch (remainder dropped)."""
    return max(0, (num_samples - consumed) // (batch_size * world_size))


def rank_step_positions(consumed: int, step: int, rank: int, batch_size: int, world_size: int) -> np.ndarray:
    """Global positions (int64 [batch_size]) of rank `rank`'s batch at local step `step`."""
    start = consumed + step * batch_size * world_size + rank * batch_size
    return np.arange(start, start + batch_size, dtype=np.int64)


def advance(
    num_samples: int, epoch: int, consumed: int, steps: int, batch_size: int, world_size: int
) -> tuple[int, int]:
    """The cursor (epoch, consumed) `steps` global steps after (`epoch`, `consumed`).

    A cursor with fewer than one global batch left in its epoch is the start of the next epoch,
    so `advance(..., 0)` gives the canonical form of a cursor (two cursors that serve the same
    next batch compare equal).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    per_epoch = steps_remaining(num_samples, 0, batch_size, world_size)
    if per_epoch == 0:
        raise ValueError(f"{num_samples} samples are fewer than one global batch ({batch_size} x {world_size})")
    first = steps_remaining(num_samples, consumed, batch_size, world_size)
    if steps < first:
        return epoch, consumed + steps * batch_size * world_size
    steps -= first
    return epoch + 1 + steps // per_epoch, (steps % per_epoch) * batch_size * world_size
