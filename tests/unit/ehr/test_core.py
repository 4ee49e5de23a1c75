"""The numpy kernels against brute force on random arrays."""

from __future__ import annotations

import numpy as np
import pytest

from tte_scale.ehr import core


def brute_first_after(subj_R, pred_R, subj_E, time_E, col_E, C):
    M = np.full((len(subj_R), C), core.INT64_MAX, np.int64)
    for i in range(len(subj_R)):
        for s, t, c in zip(subj_E, time_E, col_E):
            if s == subj_R[i] and t > pred_R[i]:
                M[i, c] = min(M[i, c], t)
    return M


@pytest.mark.parametrize("strategy", ["auto", "spread", "suffix"])
@pytest.mark.parametrize("seed", range(5))
def test_first_after_matches_brute_force(seed, strategy):
    rng = np.random.default_rng(seed)
    S, C = 6, 4
    subj_R = np.sort(rng.integers(0, S, 15))
    pred_R = np.zeros(15, np.int64)
    for s in range(S):  # sorted within subject, with ties
        m = subj_R == s
        pred_R[m] = np.sort(rng.integers(0, 10, m.sum()))
    subj_E, time_E, col_E = rng.integers(0, S, 80), rng.integers(0, 12, 80), rng.integers(0, C, 80)
    rows = core.RowIndex(subj_R, S)
    r = core.row_before(subj_E, time_E, rows, pred_R)
    keep = r >= 0
    buf = np.zeros(1000, np.int64)
    M = core.first_after(r[keep], col_E[keep], time_E[keep], rows, C, out=buf if seed % 2 else None, strategy=strategy)
    np.testing.assert_array_equal(M, brute_first_after(subj_R, pred_R, subj_E, time_E, col_E, C))
    D = core.occurs_after(r[keep], col_E[keep], rows, C, strategy=strategy)
    np.testing.assert_array_equal(D, M != core.INT64_MAX)


def test_row_blocks_never_split_a_subject():
    subj = np.array([0, 0, 0, 1, 2, 2, 3, 3, 3, 3, 4])
    rows = core.RowIndex(subj, 5)
    for cells in (1, 2, 3, 5, 100):
        bounds = core.row_blocks(rows, 1, cells)
        assert bounds[0][0] == 0 and bounds[-1][1] == len(subj)
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        for b0, b1 in bounds:
            assert b0 == 0 or subj[b0] != subj[b0 - 1]


def test_expand_csr():
    offsets, targets = np.array([0, 2, 2, 3]), np.array([5, 6, 7])
    src, tgt = core.expand_csr(np.array([0, 1, 2, 0]), offsets, targets)
    assert src.tolist() == [0, 0, 2, 3, 3] and tgt.tolist() == [5, 6, 7, 5, 6]


def test_bins_tiny_and_degenerate():
    h = core.hour_histogram_add(np.zeros(4, np.int64), np.array([1, 2, 3]) * core.US_PER_HOUR * 10)
    assert core.bin_starts_from_histogram(h, 4) == [0.0, 11 / 24, 21 / 24, 31 / 24]
    # All events in one hour: the quantiles collapse; fewer bins, still strictly increasing.
    one = core.hour_histogram_add(np.zeros(1, np.int64), np.full(50, 5 * core.US_PER_HOUR))
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
