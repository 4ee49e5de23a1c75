"""Pure numpy steps of the labels stage: no I/O, no per-event Python loop.

The per-event steps run as compiled loops (``kernels``); what is here are the steps around them,
used as they are: the row layout (``RowIndex``, ``row_blocks``), the bins, the code ranking and
the benchmark labels. The numpy versions of the per-event steps, which the kernels are tested
against, live with the tests (tests/unit/ehr/numpy_ref.py).

Legend: E events, R labelled rows (scans) of a block, C columns (codes or tasks),
S subjects. Rows are sorted by (subject, prediction time); a subject's rows are contiguous.
"""

from __future__ import annotations

import numpy as np

from tte_scale.formats.units import US_PER_DAY

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "US_PER_DAY",
    "US_PER_HOUR",
    "RowIndex",
    "hours_of_days",
    "sample_stride",
    "subject_sample",
    "bin_starts_from_histogram",
    "rank_codes",
    "bench_labels",
    "row_blocks",
]

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min
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
        self.levels = [
            np.flatnonzero((self.level_R == lv) & self.has_next_R)
            for lv in range(int(self.level_R.max(initial=0)), -1, -1)
        ]


def row_blocks(
    rows: RowIndex, num_cols: int, block_cells: int, align: int = 0, offset: int = 0
) -> list[tuple[int, int]]:
    """Split rows into [b0, b1) blocks at subject boundaries with about ``block_cells`` cells.

    ``align`` > 0: a block also ends at the first subject boundary at or after the next
    multiple of ``align`` in array rows (row b is array row ``offset + b``), so that a block
    completes a chunk of ``align`` rows and leaves only a few rows of the next one behind."""
    per = max(1, block_cells // max(1, num_cols))
    n = len(rows.subj_R)
    bounds, b0 = [], 0
    while b0 < n:
        b1 = min(n, b0 + per)
        if align > 0:
            b1 = min(b1, (offset + b0) // align * align + align - offset)
            if b1 < n:
                b1 = int(rows.end_S[rows.subj_R[b1 - 1]])
        elif b1 < n:  # move the cut to a subject boundary (never splits a subject; may grow)
            s = rows.subj_R[b1 - 1]
            b1 = max(b1, int(rows.end_S[s])) if rows.start_S[s] == b0 else int(rows.start_S[s])
        bounds.append((b0, b1))
        b0 = b1
    return bounds


def hours_of_days(days: np.ndarray) -> np.ndarray:
    """int64 whole hours of float32 day durations, as the bins see them: ``floor(days * 24)``
    in float64. The bins are fitted on the times as stored, so they agree with the labels."""
    return np.floor(days.astype(np.float64) * 24.0).astype(np.int64)


def sample_stride(num_events: int, sample_events: int) -> int:
    """m for ``subject_sample``: 1 (everything) unless there are at least twice ``sample_events``."""
    return 1 if sample_events <= 0 else max(1, num_events // sample_events)


def subject_sample(subject_id: np.ndarray, stride: int) -> np.ndarray:
    """bool: the subjects in the bin-fitting sample, about one in ``stride``. A multiplicative
    hash of the id (not the id itself, which may carry structure such as site prefixes), so
    the sample is the same whatever the file layout or row order."""
    if stride <= 1:
        return np.ones(len(subject_id), bool)
    h = np.asarray(subject_id).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return (h >> np.uint64(33)) % np.uint64(stride) == 0


def bin_starts_from_histogram(hist: np.ndarray, num_bins: int) -> list[float]:
    """Bin starts in days: ``[0, c_1, ..., c_{B-1}]`` at the j/B quantiles of the train event
    times (float32 days as stored, whole hours by ``hours_of_days``), each rounded up to the end
    of its hour; duplicates dropped (so maybe fewer than B).

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


def rank_codes(
    codes: np.ndarray, counts: np.ndarray, num_train_rows: int, num_tasks: int, min_count: int, ranking: str
) -> tuple[np.ndarray, np.ndarray]:
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
