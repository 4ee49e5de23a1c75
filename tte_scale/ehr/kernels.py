"""Compiled (numba) kernels of the labels stage: each walks a shard's events once or twice.

The numpy versions in tests/unit/ehr/numpy_ref.py say the same thing as array programs; they
are the reference the tests hold these to (tests/unit/ehr/test_kernels.py). Numpy needs ~30 passes over the events
and one scatter over the dense ``[R, K]`` block per row level; here each job is one loop, the
future events come out grouped by subject (so the label scatter stays inside one subject's few
rows, which fit in cache), and the counts the vocabulary and the bins need are taken from the
touched cells instead of from a scan of the dense block.

Compiled once per machine (``cache=True``: the machine code is kept in ``__pycache__``, or in
numba's user cache when that is not writable); ``nogil`` so the background Zarr writer runs
while a kernel does.

Legend: E events of a shard, S subjects of a shard, R rows (labelled scans), F future events
(timed, strictly after the subject's first prediction time), C code columns, K tasks.
Times are int64 microseconds; label times float32 days, exactly as the numpy reference ``fill_labels`` (tests/unit/ehr/numpy_ref.py).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from tte_scale.formats.units import US_PER_DAY

__all__ = [
    "dense_subject_index",
    "end_of_record",
    "future_events",
    "count_rows_after",
    "bench_first",
    "fill_labels",
    "LabelBlock",
]

INT64_MIN = np.iinfo(np.int64).min

_jit = njit(cache=True, nogil=True)


@_jit
def dense_subject_index(sid_E, lo, hi):
    """(sorted unique ids int64 [S], int32 [E] index into them) for ids in ``[lo, hi]``: a
    lookup table over the id range (the caller checks the range is small)."""
    rank = np.full(hi - lo + 1, -1, np.int64)
    for e in range(len(sid_E)):
        rank[sid_E[e] - lo] = 0
    n = 0
    for i in range(len(rank)):
        if rank[i] == 0:
            rank[i] = n
            n += 1
    uniq = np.empty(n, np.int64)
    subj_E = np.empty(len(sid_E), np.int32)
    for e in range(len(sid_E)):
        s = rank[sid_E[e] - lo]
        subj_E[e] = s
        uniq[s] = sid_E[e]
    return uniq, subj_E


@_jit
def end_of_record(subj_E, time_E, timed_E, num_subjects):
    """int64 [S]: each subject's last timed event (INT64_MIN: none)."""
    eor_S = np.full(num_subjects, INT64_MIN, np.int64)
    for e in range(len(subj_E)):
        if timed_E[e]:
            s = subj_E[e]
            if time_E[e] > eor_S[s]:
                eor_S[s] = time_E[e]
    return eor_S


@_jit
def future_events(subj_E, time_E, timed_E, code_E, start_S, size_S, pred_R, work):
    """The events in the future of at least one row, grouped by subject (input order within).

    Returns ``off_S`` int64 [S + 1] (subject s's events are ``off_S[s]:off_S[s + 1]``), and per
    event ``row_F`` int32 (as the numpy reference ``row_before``: the subject's last row with prediction time <
    event time), ``code_F`` int32, ``time_F`` int64. Rows of a subject are sorted by
    prediction time; the row is a count over the subject's few rows (a binary search when it
    has many). The filter is a branch-free compaction (about half the events pass, at random: a
    branch would be mispredicted that often), then a counting sort by subject of the survivors.
    ``work``: int64 scratch of at least 2 (E + 1), reused across shards (fresh memory is costly:
    page faults)."""
    S = len(start_S)
    first_S = np.full(S, np.iinfo(np.int64).max, np.int64)  # first prediction time; none: never
    for s in range(S):
        if size_S[s] > 0:
            first_S[s] = pred_R[start_S[s]]
    E = len(subj_E)
    subj_X = work[: E + 1]  # one spare slot: the append writes one past the last
    pos_X = work[E + 1 : 2 * (E + 1)]
    F = 0
    for e in range(E):
        s = subj_E[e]
        subj_X[F] = s
        pos_X[F] = e
        F += timed_E[e] & (first_S[s] < time_E[e])
    off_S = np.zeros(S + 1, np.int64)
    for x in range(F):
        off_S[subj_X[x] + 1] += 1
    for s in range(S):
        off_S[s + 1] += off_S[s]
    row_F = np.empty(F, np.int32)
    code_F = np.empty(F, np.int32)
    time_F = np.empty(F, np.int64)
    fill_S = off_S[:S].copy()
    for x in range(F):
        s = subj_X[x]
        e = pos_X[x]
        t = time_E[e]
        lo = start_S[s]
        n = size_S[s]
        if n <= 8:
            level = 0
            for j in range(1, n):
                level += pred_R[lo + j] < t
            r = lo + level
        else:
            a, b = lo + 1, lo + n
            while a < b:
                mid = (a + b) >> 1
                if pred_R[mid] < t:
                    a = mid + 1
                else:
                    b = mid
            r = a - 1
        f = fill_S[s]
        fill_S[s] = f + 1
        row_F[f] = r
        code_F[f] = code_E[e]
        time_F[f] = t
    return off_S, row_F, code_F, time_F


@_jit
def count_rows_after(off_S, row_F, code_F, start_S, count_S, col_off, col_tgt, identity, num_cols):
    """int64 [C]: for each column, the number of rows (of the subjects with ``count_S``) whose
    future holds it. A code maps to columns ``col_tgt[col_off[c]:col_off[c + 1]]`` (itself and
    its ancestors), or to column c when ``identity``. An event at row level l is in the future
    of the subject's rows 0..l, so a column counts 1 + its highest level per subject: a
    per-subject maximum in a C-sized scratch, reset through the list of columns it touched."""
    counts = np.zeros(num_cols, np.int64)
    best = np.zeros(num_cols, np.int32)
    touched = np.empty(num_cols + 1, np.int64)
    for s in range(len(start_S)):
        if not count_S[s]:
            continue
        n = 0
        for f in range(off_S[s], off_S[s + 1]):
            depth = np.int32(row_F[f] - start_S[s] + 1)
            c = code_F[f]
            if identity:
                b = best[c]
                touched[n] = c
                n += b == 0
                best[c] = max(b, depth)
            else:
                for j in range(col_off[c], col_off[c + 1]):
                    col = col_tgt[j]
                    b = best[col]
                    touched[n] = col
                    n += b == 0
                    best[col] = max(b, depth)
        for i in range(n):
            col = touched[i]
            counts[col] += best[col]
            best[col] = 0
    return counts


@_jit
def bench_first(subj_E, time_E, timed_E, code_E, code_off, code_tgt, num_tasks, start_S, size_S, pred_R, delay_T):
    """The two inputs of ``core.bench_labels`` in one pass over the events, for the few codes of
    the benchmark tasks (``code_tgt[code_off[c]:code_off[c + 1]]``: the tasks of code c).

    Returns ``first_RT`` int64 [R, T]: first timed event of the task strictly after each row's
    prediction time plus the task's ``delay_T`` (microseconds, ``BenchTask.start_days``;
    INT64_MAX: none); ``ever_ST`` int64 [S, T]: the subject's earliest event of the task,
    INT64_MIN for a static one (null time), INT64_MAX: none."""
    T = num_tasks
    INT64_MAX = np.iinfo(np.int64).max
    first_RT = np.full((len(pred_R), T), INT64_MAX, np.int64)
    ever_ST = np.full((len(start_S), T), INT64_MAX, np.int64)
    has_C = np.empty(len(code_off) - 1, np.bool_)  # one byte per code: stays in L1
    for c in range(len(has_C)):
        has_C[c] = code_off[c + 1] > code_off[c]
    for e in range(len(code_E)):
        c = code_E[e]
        if not has_C[c]:
            continue
        j0, j1 = code_off[c], code_off[c + 1]
        s = subj_E[e]
        t = time_E[e] if timed_E[e] else INT64_MIN
        for j in range(j0, j1):
            k = code_tgt[j]
            ever_ST[s, k] = min(ever_ST[s, k], t)
            if timed_E[e]:
                for r in range(start_S[s], start_S[s] + size_S[s]):
                    first_RT[r, k] = min(first_RT[r, k], t if pred_R[r] + delay_T[k] < t else INT64_MAX)
    return first_RT, ever_ST


@_jit
def _update(i, k, K, days, t_flat, e_flat, new_i, new_k, n):
    # A cell that is not yet an event holds the censoring time, which is >= days: the minimum
    # is right either way. A cell's first event is listed (branch-free append).
    c = i * K + k
    new_i[n] = i
    new_k[n] = k
    n += not e_flat[c]
    e_flat[c] = True
    t_flat[c] = min(t_flat[c], days)
    return n


class LabelBlock(NamedTuple):
    """Everything ``fill_labels`` reads and writes for one block of rows, by name: numba passes
    a NamedTuple to a compiled function as a record of typed fields, so two arrays of one dtype
    cannot be swapped by position (they could in the flat argument list this replaced)."""

    e0: int
    """First future event of the block (events ``e0:e1`` are the block's subjects' only)."""
    e1: int
    """One past its last future event."""
    row_F: np.ndarray
    """int32 [F]: the row whose future an event is first in (the spill's ``r``)."""
    gid_F: np.ndarray
    """int32 [F]: global code id of each event."""
    time_F: np.ndarray
    """int64 [F]: event time (us)."""
    task_of: np.ndarray
    """int32 [G]: the task of each code (-1: none), when no code has more than one; else empty."""
    task_off: np.ndarray
    """int64 [G + 1]: CSR offsets of each code's tasks into ``task_tgt``."""
    task_tgt: np.ndarray
    """int32: task columns of the codes (CSR targets)."""
    b0: int
    """First row of the block (rows ``b0 : b0 + len(time_RK)``)."""
    first_R: np.ndarray
    """int64 [R]: first row of each row's subject."""
    pred_R: np.ndarray
    """int64 [R]: prediction time (us)."""
    eor_R: np.ndarray
    """int64 [R]: end of record (us)."""
    train_R: np.ndarray
    """bool [R]: train rows (counted in ``train_events_K``)."""
    hist_R: np.ndarray
    """bool [R]: rows whose event times enter the bins' hour histogram."""
    time_RK: np.ndarray
    """float32 [rows of the block, K] (out): days to the first event, else to the censoring."""
    event_RK: np.ndarray
    """bool [rows of the block, K] (out)."""
    events_K: np.ndarray
    """int64 [K] (added to): cells that became events, all rows."""
    train_events_K: np.ndarray
    """int64 [K] (added to): the same over ``train_R`` rows."""
    hist: np.ndarray
    """int64 [hours] (added to): hour histogram of the ``hist_R`` rows' event times."""


@_jit
def fill_labels(block, work):
    """Write the labels of rows ``b0 : b0 + len(time_RK)`` in place (float32 days, bool), from
    the future events ``e0:e1`` (grouped by subject; all of the block's subjects and no other).
    A code's tasks: ``task_of[g]`` (-1: none) when no code has more than one, else
    ``task_tgt[task_off[g]:task_off[g + 1]]`` (``task_of`` empty).

    Every cell starts at the row's censoring time, not an event; an event of task k in the
    future of row i lowers cell (i, k) to its time. Exact like the numpy reference ``fill_labels``: float32 of
    the day count is monotone, and an event is never after the end of record, so the minimum
    over the converted times is the converted first time, and a cell is an event as soon as
    one event reaches it (even one at the censoring time itself: a death ending the record).
    Adds, over the cells that became events: ``events_K`` (all rows), ``train_events_K``
    (``train_R`` rows) and the hour histogram ``hist`` (``hist_R`` rows; ``core.hours_of_days``;
    the caller sizes it beyond the block's longest censoring time). ``work``: int64 scratch,
    reused across calls (fresh memory is costly: page faults); when it is too small nothing is
    written and the size it needs is returned, else 0.

    Loops are shaped against branch mispredictions (data-dependent branches cost more than the
    work here): the (event, task) pairs are gathered with branch-free appends, and an event
    reaches rows first_R..row level by level (every pair its subject's first row, then the
    pairs that reach deeper), so no inner loop has a random trip count."""
    e0, e1, row_F, gid_F, time_F = block.e0, block.e1, block.row_F, block.gid_F, block.time_F
    task_of, task_off, task_tgt = block.task_of, block.task_off, block.task_tgt
    b0, first_R, pred_R, eor_R = block.b0, block.first_R, block.pred_R, block.eor_R
    train_R, hist_R, time_RK, event_RK = block.train_R, block.hist_R, block.time_RK, block.event_RK
    events_K, train_events_K, hist = block.events_K, block.train_events_K, block.hist
    single = len(task_of) > 0
    num_pairs = 0
    cells = 0
    for f in range(e0, e1):
        g = gid_F[f]
        d = (task_of[g] >= 0) if single else task_off[g + 1] - task_off[g]
        num_pairs += d
        cells += d * (row_F[f] - first_R[row_F[f]] + 1)
    # Each list has a spare slot: the branch-free appends write one past the last item.
    P = num_pairs + 1
    if len(work) < 4 * P + 2 * (cells + 1):
        return 4 * P + 2 * (cells + 1)
    R, K = time_RK.shape
    for i in range(R):
        r = b0 + i
        censor = np.float32((eor_R[r] - pred_R[r]) / US_PER_DAY)
        for k in range(K):
            time_RK[i, k] = censor
            event_RK[i, k] = False
    p_t = work[:P]
    p_row = work[P : 2 * P]
    p_k = work[2 * P : 3 * P]
    deep = work[3 * P : 4 * P]
    new_i = work[4 * P : 4 * P + cells + 1]
    new_k = work[4 * P + cells + 1 : 4 * P + 2 * (cells + 1)]
    n = 0
    if single:
        for f in range(e0, e1):
            k = task_of[gid_F[f]]
            p_t[n] = time_F[f]
            p_row[n] = row_F[f]
            p_k[n] = k
            n += k >= 0
    else:
        for f in range(e0, e1):
            g = gid_F[f]
            for j in range(task_off[g], task_off[g + 1]):
                p_t[n] = time_F[f]
                p_row[n] = row_F[f]
                p_k[n] = task_tgt[j]
                n += 1
    t_flat = time_RK.reshape(-1)
    e_flat = event_RK.reshape(-1)
    n = 0
    num_deep = 0
    for x in range(num_pairs):
        r = first_R[p_row[x]]
        days = np.float32((p_t[x] - pred_R[r]) / US_PER_DAY)
        n = _update(r - b0, p_k[x], K, days, t_flat, e_flat, new_i, new_k, n)
        deep[num_deep] = x
        num_deep += p_row[x] > r
    for j in range(num_deep):
        x = deep[j]
        for r in range(first_R[p_row[x]] + 1, p_row[x] + 1):
            days = np.float32((p_t[x] - pred_R[r]) / US_PER_DAY)
            n = _update(r - b0, p_k[x], K, days, t_flat, e_flat, new_i, new_k, n)
    for j in range(n):
        i = new_i[j]
        k = new_k[j]
        events_K[k] += 1
        if train_R[b0 + i]:
            train_events_K[k] += 1
        if hist_R[b0 + i]:
            hist[np.int64(np.floor(np.float64(time_RK[i, k]) * 24.0))] += 1
    return 0
