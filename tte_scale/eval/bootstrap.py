"""Subject-level bootstrap: resample subjects, a subject's rows travel together.

A resample is a weight vector over rows (its subject's multiplicity), which every metric of
this package accepts, so B replicates are evaluated at once. The same seed gives the same
resamples for every task, probe and model, so their intervals are paired.

Legend: N rows, S subjects, B replicates.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["subject_weights", "percentile_ci", "chunks"]


def subject_weights(subject_id_N, num: int, seed: int) -> torch.Tensor:
    """[num, N] float64 multiplicities: each row's subject drawn how many times."""
    _, inv_N = np.unique(np.asarray(subject_id_N), return_inverse=True)
    s = int(inv_N.max()) + 1 if inv_N.size else 0
    gen = torch.Generator().manual_seed(seed)
    draws_BS = torch.randint(0, max(s, 1), (num, s), generator=gen)
    counts_BS = torch.zeros(num, s, dtype=torch.float64).scatter_add_(
        1, draws_BS, torch.ones(num, s, dtype=torch.float64)
    )
    return counts_BS[:, torch.from_numpy(inv_N.astype(np.int64))]


def percentile_ci(values_B, level: float) -> tuple[float | None, float | None, int]:
    """Percentile interval of the finite replicate values; also how many were finite."""
    v = np.asarray(values_B, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return None, None, int(v.size)
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(v, [a, 1.0 - a])
    return float(lo), float(hi), int(v.size)


def chunks(num: int, n_rows: int, budget: int = 1 << 22):
    """Replicate slices so that one chunk holds about ``budget`` (replicate, row) cells."""
    step = max(1, budget // max(n_rows, 1))
    for lo in range(0, num, step):
        yield slice(lo, min(num, lo + step))
