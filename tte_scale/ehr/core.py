"""Pure numpy kernels of the labels stage: no I/O, no per-event Python loop.

Legend: E events, R labelled rows (scans) of a block, C columns (codes or tasks),
S subjects. Rows are sorted by (subject, prediction time); a subject's rows are contiguous.

The central idea: an event at time t of subject s is "in the future" of exactly the rows of s
whose prediction time p < t, i.e. the rows up to ``r(e)`` = the last row of s with p < t.
So ``first_after[i, c] = min{t_e : code c, r(e) >= i, same subject}``: a scatter-min into
``[R, C]`` at ``(r(e), c)`` followed by a suffix minimum over each subject's rows. Events at
exactly the prediction time (t == p) are history, never future, because the test is p < t.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "INT64_MAX", "INT64_MIN", "US_PER_DAY", "US_PER_HOUR", "RowIndex", "row_before", "expand_csr",
    "first_after", "occurs_after", "hour_histogram_add", "bin_starts_from_histogram", "rank_codes",
    "bench_labels", "row_blocks",
]

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min
US_PER_DAY = 86_400_000_000
US_PER_HOUR = 3_600_000_000


class RowIndex:
    """Where each subject's rows are: ``start_S``/``end_S`` (exclusive) into rows, and per row its
    rank within the subject (``level_R``) and whether the next row belongs to the same subject."""

    def __init__(self, row_subj_R: np.ndarray, num_subjects: int):
        row_subj_R = np.asarray(row_subj_R, np.int64)
        counts = np.bincount(row_subj_R, minlength=num_subjects)
        self.end_S = np.cumsum(counts)
        self.start_S = self.end_S - counts
        self.subj_R = row_subj_R
        self.level_R = np.arange(len(row_subj_R)) - self.start_S[row_subj_R]
        self.has_next_R = np.zeros(len(row_subj_R), bool)
        self.has_next_R[:-1] = row_subj_R[1:] == row_subj_R[:-1]
        # Rows grouped by level, highest first: the suffix pass walks levels downward.
        self.levels = [np.flatnonzero((self.level_R == lv) & self.has_next_R) for lv in range(int(self.level_R.max(initial=0)), -1, -1)]


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


def expand_csr(idx_E: np.ndarray, offsets: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map each item through a one-to-many table (CSR ``offsets``/``targets``).

    Returns (source position into ``idx_E``, target) for every (item, target) pair."""
    deg = offsets[idx_E + 1] - offsets[idx_E]
    total = int(deg.sum())
    src = np.repeat(np.arange(len(idx_E)), deg)
    first = np.repeat(offsets[idx_E], deg)
    within = np.arange(total) - np.repeat(np.cumsum(deg) - deg, deg)
    return src, targets[first + within]


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
    spread = int((r_E - rows.start_S[rows.subj_R[r_E]] + 1).sum())
    return spread <= int(rows.has_next_R.sum()) * num_cols


def first_after(r_E, col_E, time_E, rows: RowIndex, num_cols: int, out: np.ndarray | None = None, strategy: str = "auto") -> np.ndarray:
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


def occurs_after(r_E, col_E, rows: RowIndex, num_cols: int, strategy: str = "auto") -> np.ndarray:
    """bool [R, C]: the code occurs strictly after the row's prediction time."""
    D = np.zeros((len(rows.subj_R), num_cols), bool)
    if _use_spread(r_E, rows, num_cols, strategy):
        src, row = _spread_to_rows(r_E, rows)
        D.reshape(-1)[row * num_cols + col_E[src]] = True
    else:
        D.reshape(-1)[r_E * num_cols + col_E] = True
        _suffix_within_subject(D, rows, np.logical_or)
    return D


def row_blocks(rows: RowIndex, num_cols: int, block_cells: int) -> list[tuple[int, int]]:
    """Split rows into [b0, b1) blocks at subject boundaries with about ``block_cells`` cells."""
    per = max(1, block_cells // max(1, num_cols))
    n = len(rows.subj_R)
    bounds, b0 = [], 0
    while b0 < n:
        b1 = min(n, b0 + per)
        if b1 < n:  # move the cut to a subject boundary (never splits a subject; may grow)
            s = rows.subj_R[b1 - 1]
            b1 = max(b1, int(rows.end_S[s])) if rows.start_S[s] == b0 else int(rows.start_S[s])
        bounds.append((b0, b1))
        b0 = b1
    return bounds


def hour_histogram_add(hist: np.ndarray, dt_us: np.ndarray) -> np.ndarray:
    """Add event times (int64 microseconds > 0) to a histogram of whole hours; grows as needed."""
    if len(dt_us) == 0:
        return hist
    h = np.bincount(dt_us // US_PER_HOUR)
    if len(h) > len(hist):
        h[: len(hist)] += hist
        return h
    hist[: len(h)] += h
    return hist


def bin_starts_from_histogram(hist: np.ndarray, num_bins: int) -> list[float]:
    """Bin starts in days: ``[0, c_1, ..., c_{B-1}]`` at the j/B quantiles of the train event
    times, each rounded up to the end of its hour; duplicates dropped (so maybe fewer than B).

    ``c_j`` = (h+1)/24 where h is the first hour bucket whose cumulative count reaches
    ``ceil(j * n / B)``, so at least a j/B share of the events fall before ``c_j``."""
    n = int(hist.sum())
    starts = [0.0]
    if n == 0:
        return starts
    cum = np.cumsum(hist)
    for j in range(1, num_bins):
        target = -(-j * n // num_bins)
        h = int(np.searchsorted(cum, target, side="left"))
        c = (h + 1) / 24.0
        if c > starts[-1]:
            starts.append(c)
    return starts


def rank_codes(codes: np.ndarray, counts: np.ndarray, num_train_rows: int, num_tasks: int, min_count: int, ranking: str) -> tuple[np.ndarray, np.ndarray]:
    """Pick the task vocabulary: (indices into ``codes`` in task order, their scores).

    Score = count, or the Bernoulli entropy of p = count / train rows (in nats). Ties break by
    higher count, then by code string, so the result never depends on input order."""
    counts = np.asarray(counts, np.int64)
    keep = np.flatnonzero(counts >= min_count)
    c = counts[keep].astype(np.float64)
    if ranking == "frequency":
        score = c
    elif ranking == "entropy":
        p = np.clip(c / max(1, num_train_rows), 0.0, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = -(p * np.log(p) + (1 - p) * np.log1p(-p))
        score = np.nan_to_num(ent, nan=0.0)
    else:
        raise ValueError(f"unknown ranking {ranking!r}")
    # Rounding makes mathematically equal entropies (count c vs. n - c) exact ties.
    order = np.lexsort((np.asarray(codes, dtype=str)[keep], -counts[keep], -np.round(score, 12)))[:num_tasks]
    return keep[order], score[order]


def bench_labels(first_RT, prior_RT, pred_R, eor_R, horizon_T, exclude_prior_T):
    """Benchmark labels from first-occurrence times (see configs/tasks/inspect.yaml).

    Returns label int8 [R, T] (1/0, -1 = null), time float32 days, event bool,
    excluded int8 (0 none, 1 censored_before_horizon, 2 prior_event)."""
    event = first_RT != INT64_MAX
    end = np.where(event, first_RT, eor_R[:, None])
    days = (end - pred_R[:, None]) / US_PER_DAY
    horizon = np.asarray(horizon_T, np.float64)[None, :]
    label = np.where(event & (days <= horizon), 1, 0).astype(np.int8)
    excluded = np.zeros(label.shape, np.int8)
    censored_early = ~event & (days < horizon)
    excluded[censored_early] = 1
    prior = (prior_RT <= pred_R[:, None]) & np.asarray(exclude_prior_T, bool)[None, :]
    excluded[prior] = 2
    label[excluded > 0] = -1
    return label, days.astype(np.float32), event, excluded
