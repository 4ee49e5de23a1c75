"""The global order and its cut into ranks/steps/workers (pure functions)."""

from __future__ import annotations

import numpy as np
import pytest

from tte_scale.data.order import epoch_order, rank_step_positions, steps_remaining, worker_steps

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
            assert set(shuffled[start:start + w]) == set(base[start:start + w])


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


def test_workers_round_robin_covers_every_step_once():
    for n_workers in (1, 2, 3, 5):
        steps = sorted(s for w in range(n_workers) for s in worker_steps(7, w, n_workers))
        assert steps == list(range(7))
