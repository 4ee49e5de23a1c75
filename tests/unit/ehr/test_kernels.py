"""The compiled kernels against the numpy kernels of ``core`` (and brute force), on random
shards with the edge cases: events at exactly a prediction time, static rows (null time),
unsorted events, subjects without rows or without events after their scans, subjects with many
rows (the binary-search path), codes mapping to several columns (ontology)."""

from __future__ import annotations

import numpy as np
import numpy_ref as ref
import pytest

from tte_scale.ehr import core, kernels


def random_shard(seed, S=9, E=400, max_rows=4, max_time=40, many_rows=False):
    rng = np.random.default_rng(seed)
    size_S = rng.integers(0, max_rows + 1, S)
    if many_rows:
        size_S[0] = 12  # > 8 rows: the binary search
    subj_R = np.repeat(np.arange(S), size_S)
    pred_R = np.zeros(len(subj_R), np.int64)
    for s in range(S):  # sorted within the subject, with ties
        pred_R[subj_R == s] = np.sort(rng.integers(0, max_time - 5, size_S[s]))
    subj_E = rng.integers(0, S, E).astype(np.int32)
    time_E = rng.integers(0, max_time, E).astype(np.int64)
    # Some events exactly at a prediction time of their subject (history, never future).
    at = np.flatnonzero(rng.random(E) < 0.15)
    for e in at:
        p = pred_R[subj_R == subj_E[e]]
        if len(p):
            time_E[e] = rng.choice(p)
    timed_E = rng.random(E) < 0.9
    time_E[~timed_E] = 0  # static rows: the time is meaningless
    # One subject whose events are all before its scans: it has rows but no future.
    quiet = S - 1
    if size_S[quiet]:
        time_E[subj_E == quiet] = np.minimum(time_E[subj_E == quiet], pred_R[subj_R == quiet][0])
    return subj_R, pred_R, subj_E, time_E, timed_E, size_S


def _work(subj_E):
    return np.full(2 * (len(subj_E) + 1), -7, np.int64)  # garbage: the kernel must not rely on it


def day_scale(pred_R, time_E):
    day = core.US_PER_DAY // 3  # durations that are not whole float32 days
    return pred_R * day, time_E * day


@pytest.mark.parametrize("many_rows", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_future_events_equals_numpy(seed, many_rows):
    subj_R, pred_R, subj_E, time_E, timed_E, size_S = random_shard(seed, many_rows=many_rows)
    S = len(size_S)
    rows = core.RowIndex(subj_R, S)
    code_E = np.random.default_rng(seed).integers(0, 7, len(subj_E)).astype(np.int32)
    off_S, row_F, code_F, time_F = kernels.future_events(
        subj_E, time_E, timed_E, code_E, rows.start_S, rows.end_S - rows.start_S, pred_R, _work(subj_E)
    )
    want = ref.future_events(subj_E.astype(np.int64), time_E, timed_E, rows, pred_R)
    # Same events, grouped by subject, input order within a subject (a stable sort by subject).
    order = np.argsort(want.subj, kind="stable")
    np.testing.assert_array_equal(row_F, want.row[order])
    np.testing.assert_array_equal(time_F, want.time[order])
    np.testing.assert_array_equal(code_F, code_E[want.pos[order]])
    np.testing.assert_array_equal(off_S, np.concatenate([[0], np.cumsum(np.bincount(want.subj, minlength=S))]))
    assert (time_F > pred_R[rows.start_S[np.repeat(np.arange(S), np.diff(off_S))]]).all()  # strictly after


@pytest.mark.parametrize("ontology", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_count_rows_after_equals_numpy(seed, ontology):
    subj_R, pred_R, subj_E, time_E, timed_E, size_S = random_shard(seed, many_rows=seed % 2 == 1)
    S, C = len(size_S), 7
    rng = np.random.default_rng(seed)
    rows = core.RowIndex(subj_R, S)
    code_E = rng.integers(0, C, len(subj_E)).astype(np.int32)
    off_S, row_F, code_F, _ = kernels.future_events(
        subj_E, time_E, timed_E, code_E, rows.start_S, rows.end_S - rows.start_S, pred_R, _work(subj_E)
    )
    count_S = rng.random(S) < 0.7
    if ontology:  # each code -> itself and a random set of "ancestors" (columns C..C+3)
        lists = [[c] + sorted(set(rng.integers(C, C + 4, rng.integers(0, 3)).tolist())) for c in range(C)]
    else:
        lists = [[c] for c in range(C)]
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int64)
    targets = np.array([j for x in lists for j in x], np.int64)
    num_cols = C + 4 if ontology else C
    got = kernels.count_rows_after(
        off_S, row_F, code_F, rows.start_S, count_S, offsets, targets, not ontology, num_cols
    )
    subj_F = np.repeat(np.arange(S), np.diff(off_S))
    src, col = ref.expand_csr(code_F.astype(np.int64), offsets, targets)
    keep = count_S[subj_F[src]]
    level = rows.level_R[row_F[src]]
    want = ref.count_rows_after(subj_F[src][keep], level[keep], col[keep], S, num_cols, 10_000)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("seed", range(6))
def test_bench_first_equals_numpy(seed):
    subj_R, pred_R, subj_E, time_E, timed_E, size_S = random_shard(seed, many_rows=seed % 2 == 1)
    S, C, T = len(size_S), 6, 3
    rng = np.random.default_rng(seed)
    rows = core.RowIndex(subj_R, S)
    code_E = rng.integers(0, C, len(subj_E)).astype(np.int32)
    # Codes 0..2 feed tasks (code 1 two of them), the rest none.
    offsets = np.array([0, 1, 3, 4, 4, 4, 4], np.int64)
    targets = np.array([0, 1, 2, 2], np.int64)
    # task 2 counts only events more than a delay after the prediction time (BenchTask.start_days)
    delay_T = np.array([0, 0, int(np.median(np.abs(np.diff(time_E)))) + 1], np.int64)
    first_RT, ever_ST = kernels.bench_first(
        subj_E, time_E, timed_E, code_E, offsets, targets, T, rows.start_S, rows.end_S - rows.start_S, pred_R, delay_T
    )
    want_ever = np.full((S, T), core.INT64_MAX, np.int64)
    want_first = np.full((len(subj_R), T), core.INT64_MAX, np.int64)
    for s, t, timed, c in zip(subj_E, time_E, timed_E, code_E):
        for k in targets[offsets[c] : offsets[c + 1]]:
            want_ever[s, k] = min(want_ever[s, k], t if timed else core.INT64_MIN)
            for r in np.flatnonzero(subj_R == s):
                if timed and t > pred_R[r] + delay_T[k]:
                    want_first[r, k] = min(want_first[r, k], t)
    np.testing.assert_array_equal(ever_ST, want_ever)
    np.testing.assert_array_equal(first_RT, want_first)


def _fill_by_kernel(
    rows, subj_R, pred_R, eor_R, off_S, row_F, gid_F, time_F, task_of, toff, ttgt, K, train_R, hist_R, block_cells, work
):
    R = len(subj_R)
    time_RK = np.full((R, K), np.nan, np.float32)
    event_RK = np.ones((R, K), bool)
    events_K, train_K, hist = np.zeros(K, np.int64), np.zeros(K, np.int64), np.zeros(24 * 400, np.int64)
    first_R = rows.start_S[rows.subj_R]
    for b0, b1 in core.row_blocks(rows, K, block_cells, align=3, offset=1):
        e0, e1 = off_S[subj_R[b0]], off_S[subj_R[b1 - 1] + 1]
        block = kernels.LabelBlock(
            e0=e0,
            e1=e1,
            row_F=row_F,
            gid_F=gid_F,
            time_F=time_F,
            task_of=task_of,
            task_off=toff,
            task_tgt=ttgt,
            b0=b0,
            first_R=first_R,
            pred_R=pred_R,
            eor_R=eor_R,
            train_R=train_R,
            hist_R=hist_R,
            time_RK=time_RK[b0:b1],
            event_RK=event_RK[b0:b1],
            events_K=events_K,
            train_events_K=train_K,
            hist=hist,
        )
        before = [a.copy() for a in (time_RK, event_RK, events_K, train_K, hist)]
        need = kernels.fill_labels(block, work)
        if need:  # scratch too small: nothing written, nothing counted; again with enough
            for a, b in zip((time_RK, event_RK, events_K, train_K, hist), before):
                np.testing.assert_array_equal(a, b)
            work = np.zeros(need, np.int64)
            assert kernels.fill_labels(block, work) == 0
    return time_RK, event_RK, events_K, train_K, hist


@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("seed", range(8))
def test_fill_labels_equals_numpy(seed, multi):
    subj_R, pred_R, subj_E, time_E, timed_E, size_S = random_shard(seed, many_rows=seed % 2 == 1)
    pred_R, time_E = day_scale(pred_R, time_E)
    S, G, K = len(size_S), 8, 5
    rng = np.random.default_rng(seed)
    rows = core.RowIndex(subj_R, S)
    gid_E = rng.integers(0, G, len(subj_E)).astype(np.int32)
    # End of record: the subject's last timed event (so events are never after it); rows at or
    # after it would be excluded upstream, so keep only subjects whose scans are before it.
    eor_S = kernels.end_of_record(subj_E, time_E, timed_E, S)
    ok_R = pred_R < eor_S[subj_R]
    keep_S = np.zeros(S, bool)
    keep_S[np.unique(subj_R[ok_R])] = True
    keep_S[np.unique(subj_R[~ok_R])] = False
    subj_R, pred_R = subj_R[keep_S[subj_R]], pred_R[keep_S[subj_R]]
    assert len(subj_R) > 0
    rows = core.RowIndex(subj_R, S)
    eor_R = eor_S[subj_R]
    off_S, row_F, gid_F, time_F = kernels.future_events(
        subj_E, time_E, timed_E, gid_E, rows.start_S, rows.end_S - rows.start_S, pred_R, _work(subj_E)
    )
    if multi:  # code -> several tasks (ontology): the CSR path
        lists = [sorted(set(rng.integers(0, K, rng.integers(0, 3)).tolist())) for _ in range(G)]
        task_of = np.zeros(0, np.int32)
    else:  # code -> at most one task: the lookup path
        lists = [[int(k)] if k >= 0 else [] for k in rng.integers(-2, K, G)]
        task_of = np.array([x[0] if x else -1 for x in lists], np.int32)
    toff = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int64)
    ttgt = np.array([j for x in lists for j in x], np.int32)
    train_R = rng.random(len(subj_R)) < 0.6
    hist_R = train_R & (rng.random(len(subj_R)) < 0.7)
    for block_cells, work in ((10_000, np.zeros(10_000, np.int64)), (7, np.zeros(0, np.int64))):
        time_RK, event_RK, events_K, train_K, hist = _fill_by_kernel(
            rows,
            subj_R,
            pred_R,
            eor_R,
            off_S,
            row_F,
            gid_F,
            time_F,
            task_of,
            toff,
            ttgt,
            K,
            train_R,
            hist_R,
            block_cells,
            work,
        )
        src, k = ref.expand_csr(gid_F.astype(np.int64), toff, ttgt.astype(np.int64))
        want_t = np.full_like(time_RK, np.nan)
        want_e = np.ones_like(event_RK)
        ref.fill_labels(row_F[src].astype(np.int64), k, time_F[src], rows, pred_R, eor_R, want_t, want_e)
        np.testing.assert_array_equal(time_RK, want_t)
        np.testing.assert_array_equal(event_RK, want_e)
        np.testing.assert_array_equal(events_K, ref.column_counts(want_e))
        np.testing.assert_array_equal(train_K, ref.column_counts(want_e[train_R]))
        want_hist = ref.hour_histogram_add(np.zeros(0, np.int64), core.hours_of_days(want_t[hist_R][want_e[hist_R]]))
        np.testing.assert_array_equal(np.trim_zeros(hist, "b"), np.trim_zeros(want_hist, "b"))


def test_death_at_end_of_record_is_an_event():
    # The record ends with the event itself: its time equals the censoring time in float32.
    subj_R, pred_R = np.array([0, 0]), np.array([0, 5], np.int64) * core.US_PER_DAY
    subj_E = np.array([0, 0], np.int32)
    time_E = np.array([3, 9], np.int64) * core.US_PER_DAY
    timed_E = np.ones(2, bool)
    rows = core.RowIndex(subj_R, 1)
    off_S, row_F, gid_F, time_F = kernels.future_events(
        subj_E,
        time_E,
        timed_E,
        np.array([0, 1], np.int32),
        rows.start_S,
        rows.end_S - rows.start_S,
        pred_R,
        _work(subj_E),
    )
    eor_R = np.full(2, 9 * core.US_PER_DAY)
    time_RK, event_RK = np.zeros((2, 2), np.float32), np.zeros((2, 2), bool)
    zeros = np.zeros(2, np.int64)
    block = kernels.LabelBlock(
        e0=0,
        e1=len(row_F),
        row_F=row_F,
        gid_F=gid_F,
        time_F=time_F,
        task_of=np.array([0, 1], np.int32),
        task_off=np.arange(3),
        task_tgt=np.arange(2, dtype=np.int32),
        b0=0,
        first_R=rows.start_S[subj_R],
        pred_R=pred_R,
        eor_R=eor_R,
        train_R=np.ones(2, bool),
        hist_R=np.zeros(2, bool),
        time_RK=time_RK,
        event_RK=event_RK,
        events_K=zeros,
        train_events_K=zeros.copy(),
        hist=zeros.copy(),
    )
    need = kernels.fill_labels(block, np.zeros(64, np.int64))
    assert need == 0
    np.testing.assert_array_equal(event_RK, [[True, True], [False, True]])
    np.testing.assert_array_equal(time_RK, [[3, 9], [4, 4]])


def test_dense_subject_index():
    sid = np.array([17, 12, 17, 30, 12, 12], np.int64)
    uniq, subj = kernels.dense_subject_index(sid, 12, 30)
    np.testing.assert_array_equal(uniq, [12, 17, 30])
    np.testing.assert_array_equal(subj, [1, 0, 1, 2, 0, 0])
    assert subj.dtype == np.int32
