"""The numpy steps against brute force on random arrays: tte_scale.ehr.core and the kernels'
numpy reference (numpy_ref.py)."""

from __future__ import annotations

import numpy as np
import numpy_ref as ref
import pytest

from tte_scale.ehr import core


def brute_first_after(subj_R, pred_R, subj_E, time_E, col_E, C):
    M = np.full((len(subj_R), C), core.INT64_MAX, np.int64)
    for i in range(len(subj_R)):
        for s, t, c in zip(subj_E, time_E, col_E):
            if s == subj_R[i] and t > pred_R[i]:
                M[i, c] = min(M[i, c], t)
    return M


def random_rows_events(seed, S=6, C=4, R=15, E=80, max_time=12):
    rng = np.random.default_rng(seed)
    subj_R = np.sort(rng.integers(0, S, R))
    pred_R = np.zeros(R, np.int64)
    for s in range(S):  # sorted within subject, with ties
        m = subj_R == s
        pred_R[m] = np.sort(rng.integers(0, max_time - 2, m.sum()))
    subj_E, time_E, col_E = rng.integers(0, S, E), rng.integers(0, max_time, E), rng.integers(0, C, E)
    return subj_R, pred_R, subj_E, time_E, col_E


@pytest.mark.parametrize("strategy", ["auto", "spread", "suffix"])
@pytest.mark.parametrize("seed", range(5))
def test_first_after_matches_brute_force(seed, strategy):
    S, C = 6, 4
    subj_R, pred_R, subj_E, time_E, col_E = random_rows_events(seed, S, C)
    rows = core.RowIndex(subj_R, S)
    r = ref.row_before(subj_E, time_E, rows, pred_R)
    keep = r >= 0
    buf = np.zeros(1000, np.int64)
    M = ref.first_after(r[keep], col_E[keep], time_E[keep], rows, C, out=buf if seed % 2 else None, strategy=strategy)
    np.testing.assert_array_equal(M, brute_first_after(subj_R, pred_R, subj_E, time_E, col_E, C))


@pytest.mark.parametrize("seed", range(8))
def test_future_events_level_scan_equals_binary_search(seed, monkeypatch):
    S = 7
    subj_R, pred_R, subj_E, time_E, _ = random_rows_events(seed, S, R=30, E=300)
    timed_E = np.random.default_rng(seed).random(len(subj_E)) < 0.9
    rows = core.RowIndex(subj_R, S)
    r_all = ref.row_before(subj_E, time_E, rows, pred_R)
    want = np.flatnonzero(timed_E & (r_all >= 0))
    for max_levels in (0, 2, 100):  # binary search, mixed, level scan
        monkeypatch.setattr(ref, "LEVEL_SCAN_MAX", max_levels)
        fut = ref.future_events(subj_E, time_E, timed_E, rows, pred_R)
        np.testing.assert_array_equal(fut.pos, want)
        np.testing.assert_array_equal(fut.subj, subj_E[want])
        np.testing.assert_array_equal(fut.time, time_E[want])
        np.testing.assert_array_equal(fut.row, r_all[want])
        np.testing.assert_array_equal(fut.level, rows.level_R[r_all[want]])


@pytest.mark.parametrize("seed", range(5))
def test_count_rows_after_matches_brute_force(seed):
    S, C = 6, 5
    subj_R, pred_R, subj_E, time_E, col_E = random_rows_events(seed, S, C, R=20)
    rows = core.RowIndex(subj_R, S)
    r = ref.row_before(subj_E, time_E, rows, pred_R)
    keep = r >= 0
    want = (brute_first_after(subj_R, pred_R, subj_E, time_E, col_E, C) != core.INT64_MAX).sum(axis=0)
    for block_cells in (1, 7, 10_000):  # one subject per block ... everything in one block
        got = ref.count_rows_after(subj_E[keep], rows.level_R[r[keep]], col_E[keep], S, C, block_cells)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("strategy", ["auto", "spread", "suffix"])
@pytest.mark.parametrize("seed", range(5))
def test_fill_labels_matches_brute_force(seed, strategy):
    S, C = 6, 4
    subj_R, pred_R, subj_E, time_E, col_E = random_rows_events(seed, S, C)
    day = core.US_PER_DAY // 3  # durations that are not whole float32 days
    pred_R, time_E = pred_R * day, time_E * day
    eor_R = np.array(
        [max([t for s, t in zip(subj_E, time_E) if s == subj_R[i]], default=pred_R[i] + 1) for i in range(len(subj_R))]
    )
    eor_R = np.maximum(eor_R, pred_R + 1)
    rows = core.RowIndex(subj_R, S)
    r = ref.row_before(subj_E, time_E, rows, pred_R)
    keep = r >= 0
    time_RC = np.full((len(subj_R), C), np.nan, np.float32)
    event_RC = np.ones((len(subj_R), C), bool)
    ref.fill_labels(r[keep], col_E[keep], time_E[keep], rows, pred_R, eor_R, time_RC, event_RC, strategy=strategy)
    M = brute_first_after(subj_R, pred_R, subj_E, time_E, col_E, C)
    want_event = M != core.INT64_MAX
    want_time = ((np.where(want_event, M, eor_R[:, None]) - pred_R[:, None]) / core.US_PER_DAY).astype(np.float32)
    np.testing.assert_array_equal(event_RC, want_event)
    np.testing.assert_array_equal(time_RC, want_time)


def test_map_codes_fast_path_equals_expand_csr():
    offsets, targets = np.array([0, 1, 1, 2, 3]), np.array([7, 5, 6])
    idx = np.array([0, 1, 2, 3, 3, 1, 0])
    src, tgt = ref.map_codes(idx, offsets, targets)
    want_src, want_tgt = ref.expand_csr(idx, offsets, targets)
    assert src.tolist() == want_src.tolist() and tgt.tolist() == want_tgt.tolist()


@pytest.mark.parametrize("num_parts", [4, 9])  # compare path, radix-sort path
def test_partition_is_stable(num_parts):
    key = np.array([2, 0, 1, 0, 2, 2, 1, 3])
    parts = ref.partition(key, num_parts)
    want = [[1, 3], [2, 6], [0, 4, 5], [7]] + [[]] * (num_parts - 4)
    assert [p.tolist() for p in parts] == want


def test_row_blocks_never_split_a_subject():
    subj = np.array([0, 0, 0, 1, 2, 2, 3, 3, 3, 3, 4])
    rows = core.RowIndex(subj, 5)
    for cells in (1, 2, 3, 5, 100):
        bounds = core.row_blocks(rows, 1, cells)
        assert bounds[0][0] == 0 and bounds[-1][1] == len(subj)
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        for b0, _b1 in bounds:
            assert b0 == 0 or subj[b0] != subj[b0 - 1]


@pytest.mark.parametrize("offset", [0, 3, 7])
def test_row_blocks_aligned_to_chunks(offset):
    subj = np.repeat(np.arange(12), np.random.default_rng(offset).integers(1, 4, 12))
    rows = core.RowIndex(subj, 12)
    for cells, align in ((100, 4), (3, 5), (2, 1)):
        bounds = core.row_blocks(rows, 1, cells, align=align, offset=offset)
        assert bounds[0][0] == 0 and bounds[-1][1] == len(subj)
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        for b0, b1 in bounds:
            assert b1 > b0 and (b1 == len(subj) or subj[b1] != subj[b1 - 1])
            # Ends at the first subject boundary at or after the nearer of the cell budget and
            # the next chunk boundary: never earlier, never more than one subject later.
            target = min(b0 + cells, (offset + b0) // align * align + align - offset, len(subj))
            assert b1 >= target and (b1 == target or subj[b1 - 1] == subj[target - 1])


def test_expand_csr():
    offsets, targets = np.array([0, 2, 2, 3]), np.array([5, 6, 7])
    src, tgt = ref.expand_csr(np.array([0, 1, 2, 0]), offsets, targets)
    assert src.tolist() == [0, 0, 2, 3, 3] and tgt.tolist() == [5, 6, 7, 5, 6]


def test_bins_tiny_and_degenerate():
    h = ref.hour_histogram_add(np.zeros(4, np.int64), np.array([10, 20, 30]))
    assert core.bin_starts_from_histogram(h, 4) == [0.0, 11 / 24, 21 / 24, 31 / 24]
    # All events in one hour: the quantiles collapse; fewer bins, still strictly increasing.
    one = ref.hour_histogram_add(np.zeros(1, np.int64), np.full(50, 5))
    assert core.bin_starts_from_histogram(one, 8) == [0.0, 6 / 24]
    assert core.bin_starts_from_histogram(np.zeros(3, np.int64), 8) == [0.0]


def test_rank_codes_ties_and_entropy_symmetry():
    codes = np.array(["b", "a", "c", "d"], dtype=object)
    counts = np.array([3, 3, 7, 5])
    idx, _ = core.rank_codes(codes, counts, 10, 10, 1, "frequency")
    assert codes[idx].tolist() == ["c", "d", "a", "b"]
    idx, score = core.rank_codes(codes, counts, 10, 10, 1, "entropy")
    # p = .5 first; p = .3 and .7 tie on entropy -> higher count first; then code string.
    assert codes[idx].tolist() == ["d", "c", "a", "b"]
    assert score[0] == pytest.approx(np.log(2))


@pytest.mark.parametrize("shape", [(600, 16), (3, 8), (300, 13), (0, 24)])  # > 255 rows, tiny, odd width, empty
def test_column_counts(shape):
    ev = np.random.default_rng(shape[0]).random(shape) < 0.7
    np.testing.assert_array_equal(ref.column_counts(ev), ev.sum(axis=0))
    np.testing.assert_array_equal(ref.column_counts(ev[::2]), ev[::2].sum(axis=0))  # not contiguous
