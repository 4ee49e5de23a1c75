"""The global order and its cut into ranks/steps/workers (pure functions)."""

from __future__ import annotations

import numpy as np
import pytest

from tte_scale.data.order import advance, epoch_order, rank_step_positions, steps_remaining

SIZES = [4, 4, 3, 5, 4]


def test_order_is_a_deterministic_permutation():
    a = epoch_order(SIZES, seed=3, epoch=1, window=4)
    assert sorted(a.tolist()) == list(range(sum(SIZES)))
    np.testing.assert_array_equal(a, epoch_order(SIZES, seed=3, epoch=1, window=4))
    assert not np.array_equal(a, epoch_order(SIZES, seed=3, epoch=2, window=4))
    assert not np.array_equal(a, epoch_order(SIZES, seed=4, epoch=1, window=4))


def test_window_bounds_the_shuffle():
    # window=1 is the shard order alone; a window-w shuffle only permutes inside blocks of w positions
    base = epoch_order(SIZES, seed=7, epoch=0, window=1)
    offsets = np.concatenate([[0], np.cumsum(SIZES)])
    shard_of = np.searchsorted(offsets, base, side="right") - 1
    assert all(np.all(np.diff(base[shard_of == s]) == 1) for s in range(len(SIZES)))  # shards stay whole
    for w in (3, 8):
        shuffled = epoch_order(SIZES, seed=7, epoch=0, window=w)
        for start in range(0, len(base), w):
            assert set(shuffled[start : start + w]) == set(base[start : start + w])


def test_no_shuffle_is_manifest_order():
    np.testing.assert_array_equal(epoch_order(SIZES, 1, 5, 8, shuffle=False), np.arange(20))


@pytest.mark.parametrize("world,batch,consumed", [(1, 4, 0), (2, 2, 0), (3, 2, 6), (2, 3, 5)])
def test_ranks_partition_the_global_positions(world, batch, consumed):
    n = 20
    steps = steps_remaining(n, consumed, batch, world)
    assert steps == (n - consumed) // (batch * world)
    got = [rank_step_positions(consumed, s, r, batch, world) for s in range(steps) for r in range(world)]
    flat = np.concatenate(got)
    np.testing.assert_array_equal(flat, np.arange(consumed, consumed + steps * batch * world))


@pytest.mark.parametrize(
    "n,batch,world,epoch,consumed",
    [(20, 4, 1, 0, 0), (20, 3, 2, 2, 6), (13, 2, 3, 0, 12), (12, 2, 3, 1, 12), (7, 7, 1, 0, 0)],
)
def test_advance_walks_the_epochs_step_by_step(n, batch, world, epoch, consumed):
    """advance(t) equals t single steps, each within its epoch while a global batch fits, then the
    next epoch from 0; so worker w of m serving t = w, w+m, ... covers the stream once, in order."""
    g = batch * world
    cur = (epoch, consumed) if consumed + g <= n else (epoch + 1, 0)
    assert advance(n, epoch, consumed, 0, batch, world) == cur  # canonical form
    for t in range(1, 3 * (n // g) + 2):
        e, c = cur
        cur = (e, c + g) if c + 2 * g <= n else (e + 1, 0)
        assert advance(n, epoch, consumed, t, batch, world) == cur, t
        assert cur[1] + g <= n
    with pytest.raises(ValueError, match="steps"):
        advance(n, epoch, consumed, -1, batch, world)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        advance(3, 0, 0, 1, 2, 2)
