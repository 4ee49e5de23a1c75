"""The global sample order and how it is cut into ranks, steps and workers (pure functions).

The order of one epoch depends only on (seed, epoch, the canonical partition), never on the
number of ranks or workers:

1. Canonical partition: the split's samples grouped into canonical streams (one per WebDataset
   shard, samples in shard order). Sample k of the split is `stream_offsets[s] + j`.
2. The streams are permuted with a generator keyed by (seed, epoch).
3. The flattened list is cut into blocks of `window` consecutive positions and each block is
   permuted (a bounded shuffle: a sample moves less than `window` positions, so a reader needs
   at most ceil(window / shard_size) + 1 shards open at a time).

Cutting: the cursor `consumed` counts global positions already served this epoch. A global
step takes the next G = batch_size * world_size positions; rank r takes the contiguous block
`[consumed + s*G + r*b, consumed + s*G + (r+1)*b)` of step s (contiguous blocks keep each rank's
reads inside few shards). Worker w of n builds the steps s with s % n == w; the DataLoader's
round-robin over workers restores step order. Every rank takes floor((N - consumed) / G) steps,
the remainder (< G positions) is dropped, so ranks never diverge; resuming on W' ranks with
b' per rank continues the same global positions.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "epoch_order",
    "steps_remaining",
    "rank_step_positions",
    "worker_steps",
]

# Mixed into the generator seed so that this shuffle never shares a stream with other seeded code.
_ORDER_TAG = 0x7E5CA1E


def epoch_order(stream_sizes: np.ndarray | list[int], seed: int, epoch: int, window: int,
                shuffle: bool = True) -> np.ndarray:
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
            block = flat[start:start + window]
            flat[start:start + window] = block[rng.permutation(len(block))]
    return flat


def steps_remaining(num_samples: int, consumed: int, batch_size: int, world_size: int) -> int:
    """Steps every rank takes from cursor `consumed` to the end of the epoch (remainder dropped)."""
    return max(0, (num_samples - consumed) // (batch_size * world_size))


def rank_step_positions(consumed: int, step: int, rank: int, batch_size: int, world_size: int) -> np.ndarray:
    """Global positions (int64 [batch_size]) of rank `rank`'s batch at local step `step`."""
    start = consumed + step * batch_size * world_size + rank * batch_size
    return np.arange(start, start + batch_size, dtype=np.int64)


def worker_steps(num_steps: int, worker: int, num_workers: int) -> range:
    """Steps built by DataLoader worker `worker` (the loader takes workers round-robin)."""
    return range(worker, num_steps, max(1, num_workers))
