"""The per-event steps of the labels stage as numpy array programs: the reference that the
compiled loops of ``tte_scale.ehr.kernels`` are tested against (test_kernels.py), themselves
checked against brute force (test_core.py). Not used by the package.

Legend: E events, R labelled rows (scans) of a block, C columns (codes or tasks),
S subjects. Rows are sorted by (subject, prediction time); a subject's rows are contiguous.

The central idea: an event at time t of subject s is "in the future" of exactly the rows of s
whose prediction time p < t, i.e. the rows up to ``r(e)`` = the last row of s with p < t.
So ``first_after[i, c] = min{t_e : code c, r(e) >= i, same subject}``: a scatter-min into
``[R, C]`` at ``(r(e), c)`` followed by a suffix minimum over each subject's rows. Events at
exactly the prediction time (t == p) are history, never future, because the test is p < t.

Costs (what the kernels are built around): the events are touched a handful of times per shard
(gathers and compares, no sort of the events); the dense ``[R, K]`` output is written once (a
broadcast fill with the censoring time, then a scatter-min of the event times), and scanned
once more only for the train rows' bin histogram.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tte_scale.ehr.core import INT64_MAX, US_PER_DAY, RowIndex


def row_before(subj_E: np.ndarray, time_E: np.ndarray, rows: RowIndex, pred_R: np.ndarray) -> np.ndarray:
    """int64 [E]: the last row of the event's subject with prediction time < event time, or -1.

    A vectorized binary search inside each subject's row range (log2(max rows per subject)
    rounds over all events at once)."""
    lo = rows.start_S[subj_E].copy()
    hi = rows.end_S[subj_E].copy()
    start = lo.copy()
    n = len(pred_R)
    while True:
        active = lo < hi
        if not active.any():
            break
        mid = (lo + hi) >> 1
        less = np.zeros(len(lo), bool)
        less[active] = pred_R[np.minimum(mid[active], n - 1)] < time_E[active]
        lo = np.where(active & less, mid + 1, lo)
        hi = np.where(active & ~less, mid, hi)
    r = lo - 1
    r[r < start] = -1
    return r


#: Subjects with at most this many rows use the level scan in ``future_events``; more, the binary search.
LEVEL_SCAN_MAX = 8


class Future(NamedTuple):
    """The timed events of a shard that are in the future of at least one row (F of them)."""

    pos: np.ndarray
    """int64 [F] positions in the shard."""
    subj: np.ndarray
    """int64 [F] subject index."""
    time: np.ndarray
    """int64 [F] event time (us)."""
    row: np.ndarray
    """int64 [F] ``row_before``: the subject's last row with prediction time < event time."""
    level: np.ndarray
    """int64 [F] that row's rank within its subject (0 = the subject's first row)."""


def future_events(
    subj_E: np.ndarray, time_E: np.ndarray, timed_E: np.ndarray, rows: RowIndex, pred_R: np.ndarray
) -> Future:
    """The events in the future of some row, with their ``row_before``.

    Rows are few per subject (a handful of scans), so instead of a binary search this counts
    levels: level 0 (every subject's first row) is the filter that drops most events, then
    ``level = number of the subject's later rows with prediction time < t`` (one gather and
    compare per level over the surviving events)."""
    size_S = rows.end_S - rows.start_S
    num_levels = int(size_S.max(initial=0))

    def pred_at(level: int) -> np.ndarray:
        p_S = np.full(len(size_S), INT64_MAX, np.int64)
        has = size_S > level
        p_S[has] = pred_R[rows.start_S[has] + level]
        return p_S

    pos = np.flatnonzero(timed_E & (pred_at(0)[subj_E] < time_E))
    s_F, t_F = subj_E[pos], time_E[pos]
    if num_levels > LEVEL_SCAN_MAX:
        r = row_before(s_F, t_F, rows, pred_R)
        return Future(pos, s_F, t_F, r, rows.level_R[r])
    level = np.zeros(len(pos), np.int64)
    for lv in range(1, num_levels):
        level += pred_at(lv)[s_F] < t_F
    return Future(pos, s_F, t_F, rows.start_S[s_F] + level, level)


def expand_csr(idx_E: np.ndarray, offsets: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map each item through a one-to-many table (CSR ``offsets``/``targets``).

    Returns (source position into ``idx_E``, target) for every (item, target) pair."""
    deg = offsets[idx_E + 1] - offsets[idx_E]
    total = int(deg.sum())
    src = np.repeat(np.arange(len(idx_E)), deg)
    first = np.repeat(offsets[idx_E], deg)
    within = np.arange(total) - np.repeat(np.cumsum(deg) - deg, deg)
    return src, targets[first + within]


def map_codes(idx_E: np.ndarray, offsets: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``expand_csr`` without its cost over items that map to nothing or to one target: when no
    item has more than one target (no ontology, or codes without ancestors) it is a lookup and a
    filter; otherwise only the items with targets are expanded (e.g. the few benchmark codes)."""
    deg = np.diff(offsets)
    if len(deg) and deg.max() > 1:
        src = np.flatnonzero(deg[idx_E] > 0)
        sub, tgt = expand_csr(idx_E[src], offsets, targets)
        return src[sub], tgt
    lut = np.full(len(deg), -1, targets.dtype)
    lut[deg == 1] = targets[offsets[:-1][deg == 1]]
    tgt = lut[idx_E]
    src = np.flatnonzero(tgt >= 0)
    return src, tgt[src]


def _suffix_within_subject(A_RC: np.ndarray, rows: RowIndex, op) -> None:
    # Level by level from the highest rank down: row i takes op(row i, row i+1) when both are
    # the same subject's, so each row ends up holding the reduction over its subject's rows >= i.
    for idx in rows.levels:
        if len(idx):
            A_RC[idx] = op(A_RC[idx], A_RC[idx + 1])


def _spread_to_rows(r_E: np.ndarray, rows: RowIndex) -> tuple[np.ndarray, np.ndarray]:
    """(source event, row) for every row an event is in the future of: rows start_s .. r(e)."""
    first = rows.start_S[rows.subj_R[r_E]]
    mult = r_E - first + 1
    src = np.repeat(np.arange(len(r_E)), mult)
    within = np.arange(len(src)) - np.repeat(np.cumsum(mult) - mult, mult)
    return src, first[src] + within


def _use_spread(r_E: np.ndarray, rows: RowIndex, num_cols: int, strategy: str) -> bool:
    """Pick the cheaper exact method: spreading events over their subject's earlier rows costs
    about sum(rows per event); the dense suffix pass costs (rows with a successor) x columns."""
    if strategy != "auto":
        return strategy == "spread"
    if len(r_E) == 0:
        return True
    spread = int(rows.level_R[r_E].sum()) + len(r_E)
    return spread <= int(rows.has_next_R.sum()) * num_cols


def first_after(
    r_E, col_E, time_E, rows: RowIndex, num_cols: int, out: np.ndarray | None = None, strategy: str = "auto"
) -> np.ndarray:
    """int64 [R, C]: first event time strictly after each row's prediction time (INT64_MAX: none).

    ``r_E`` must be ``row_before`` (>= 0) relative to ``rows``; ``out`` an optional reusable
    buffer of at least R * C int64 (avoids page-faulting a fresh array per block)."""
    R = len(rows.subj_R)
    M = np.empty(R * num_cols, np.int64) if out is None or out.size < R * num_cols else out[: R * num_cols]
    M = M.reshape(R, num_cols)
    M.fill(INT64_MAX)
    if _use_spread(r_E, rows, num_cols, strategy):
        src, row = _spread_to_rows(r_E, rows)
        np.minimum.at(M.reshape(-1), row * num_cols + col_E[src], time_E[src])
    else:
        np.minimum.at(M.reshape(-1), r_E * num_cols + col_E, time_E)
        _suffix_within_subject(M, rows, np.minimum)
    return M


def partition(key_E: np.ndarray, num_parts: int) -> list[np.ndarray]:
    """For each part ``i``, the positions of the items with ``key == i``, in input order.
    A few parts: one compare per part; many: one stable sort of small integers (radix)."""
    if num_parts <= 1:
        return [np.arange(len(key_E))]
    if num_parts <= 4:
        return [np.flatnonzero(key_E == i) for i in range(num_parts)]
    order = np.argsort(key_E.astype(np.uint16 if num_parts <= np.iinfo(np.uint16).max else np.int64), kind="stable")
    cuts = np.searchsorted(key_E[order], np.arange(num_parts + 1), side="left")
    return [order[cuts[i] : cuts[i + 1]] for i in range(num_parts)]


def count_rows_after(
    s_E: np.ndarray, level_E: np.ndarray, col_E: np.ndarray, num_subjects: int, num_cols: int, block_cells: int
) -> np.ndarray:
    """int64 [C]: for each column, the number of rows whose future holds it.

    An event at level ``l`` (``r(e)`` is the subject's row number ``l``) is in the future of the
    subject's rows ``0..l``; so a column counts ``1 + max level`` rows per subject where it
    occurs. A dense ``max`` over ``[subjects, columns]`` (int8: small and cache-friendly),
    in subject blocks of about ``block_cells`` cells; no spreading over rows, no sort."""
    counts = np.zeros(num_cols, np.int64)
    if len(s_E) == 0 or num_cols == 0:
        return counts
    top = int(level_E.max())
    dtype = np.int8 if top < 127 else np.int16 if top < np.iinfo(np.int16).max else np.int32
    per = max(1, block_cells // num_cols)
    nblocks = -(-num_subjects // per)
    parts = partition(s_E // per, nblocks) if nblocks > 1 else [slice(None)]
    M = np.empty(min(per, num_subjects) * num_cols, dtype)
    idx = np.int32 if len(M) < 2**31 else np.int64
    s_E, col_E = s_E.astype(idx, copy=False), col_E.astype(idx, copy=False)
    for b, sel in enumerate(parts):
        n_s = min(per, num_subjects - b * per)
        M_SC = M[: n_s * num_cols]
        M_SC.fill(-1)
        np.maximum.at(M_SC, (s_E[sel] - b * per) * num_cols + col_E[sel], level_E[sel].astype(dtype))
        counts += M_SC.reshape(n_s, num_cols).sum(axis=0, dtype=np.int32) + n_s  # < 2**31: rows x levels
    return counts


def fill_labels(
    r_E, col_E, time_E, rows: RowIndex, pred_R, eor_R, time_RC: np.ndarray, event_RC: np.ndarray, strategy: str = "auto"
) -> None:
    """Write the labels of a row block in place: ``time_RC`` float32 days to the first event
    strictly after each row's prediction time, else to the end of record; ``event_RC`` bool.

    Exactness: ``x -> float32(x / US_PER_DAY)`` is monotone, so the minimum of the converted
    event times equals the converted minimum; and an event is never after the end of record,
    so starting every cell at the censoring time and taking a minimum gives the event time
    where there is one. Hence ``event = time < censoring time``, except where the first event
    is (in float32) at the censoring time itself (a death that ends the record): those few
    cells are flagged from the events. The events are spread over the rows they are in the
    future of (level by level), unless the dense suffix pass is cheaper (many rows per subject)."""
    R, C = time_RC.shape
    censor_R = ((eor_R - pred_R) / US_PER_DAY).astype(np.float32)
    time_RC[:] = censor_R[:, None]
    if len(r_E) == 0:
        event_RC.fill(False)
        return
    # Cell indices in int32 when they fit: half the memory traffic of every index array.
    idx = np.int32 if R * C < 2**31 else np.int64
    level = rows.level_R.astype(idx)[r_E]
    spread = strategy == "spread" or (
        strategy == "auto" and int(level.sum()) + len(r_E) <= int(rows.has_next_R.sum()) * C
    )
    if not spread:
        M = first_after(r_E, col_E, time_E, rows, C)
        ri, ci = np.nonzero(M != INT64_MAX)
        time_RC[ri, ci] = ((M[ri, ci] - pred_R[ri]) / US_PER_DAY).astype(np.float32)
        event_RC.fill(False)
        event_RC[ri, ci] = True
        return
    t_flat = time_RC.reshape(-1)
    row, c, t = r_E.astype(idx, copy=False) - level, col_E.astype(idx, copy=False), time_E
    at_end = []
    for lv in range(int(level.max()) + 1):
        if lv:  # rows at this level: only events at this level or deeper reach them
            keep = level >= lv
            level, row, c, t = level[keep], row[keep] + 1, c[keep], t[keep]
        cell = row * C + c
        days = ((t - pred_R[row]) / US_PER_DAY).astype(np.float32)
        np.minimum.at(t_flat, cell, days)
        at_end.append(cell[days == censor_R[row]])
    np.less(time_RC, censor_R[:, None], out=event_RC)
    event_RC.reshape(-1)[np.concatenate(at_end)] = True


def column_counts(event_RC: np.ndarray) -> np.ndarray:
    """int64 [C]: True cells per column of a bool matrix. Eight columns per uint64 word: rows
    are added as words, 255 at a time (a byte lane holds at most 255 ones), then the lanes are
    the counts; ~8x fewer additions than ``count_nonzero(axis=0)``, which widens every cell."""
    R, C = event_RC.shape
    if C % 8 or not event_RC.flags.c_contiguous:
        return np.count_nonzero(event_RC, axis=0).astype(np.int64)
    words = event_RC.view(np.uint64)
    out = np.zeros(C, np.int64)
    for a in range(0, R, 255):
        out += np.add.reduce(words[a : a + 255], axis=0).view(np.uint8)
    return out


def hour_histogram_add(hist: np.ndarray, hours: np.ndarray) -> np.ndarray:
    """Add whole hours (int64 >= 0, see ``hours_of_days``) to a histogram; grows as needed."""
    if len(hours) == 0:
        return hist
    h = np.bincount(hours)
    if len(h) > len(hist):
        h[: len(hist)] += hist
        return h
    hist[: len(h)] += h
    return hist
