"""AUROC and average precision (AUPRC): torchmetrics for point estimates, weighted versions
for the bootstrap.

The weighted versions equal torchmetrics' ``binary_auroc`` / ``binary_average_precision`` on
the data with row i repeated w_i times (tests check this), but evaluate B replicates with one
sort and a few cumsums instead of B calls.

* AUROC = P(score_pos > score_neg) + P(tie)/2 (the trapezoid ROC area).
* AP = sum over distinct thresholds (descending) of (R_k - R_{k-1}) * P_k.

Legend: N rows, B weight vectors.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc, binary_average_precision

__all__ = ["auroc", "auprc", "weighted_auroc", "weighted_auprc"]


def _prep(score_N, label_N):
    score_N = torch.as_tensor(np.ascontiguousarray(score_N), dtype=torch.float64).reshape(-1)
    label_N = torch.as_tensor(np.ascontiguousarray(label_N)).reshape(-1).to(torch.bool)
    if score_N.shape != label_N.shape:
        raise ValueError(f"score and label lengths differ: {score_N.shape[0]} vs {label_N.shape[0]}")
    if torch.isnan(score_N).any():
        raise ValueError("scores contain NaN")
    return score_N, label_N


def auroc(score_N, label_N) -> float:
    """AUROC via torchmetrics; NaN unless both classes are present."""
    score_N, label_N = _prep(score_N, label_N)
    if label_N.all() or not label_N.any():
        return float("nan")
    return float(binary_auroc(score_N, label_N.long(), thresholds=None))


def auprc(score_N, label_N) -> float:
    """Average precision via torchmetrics; NaN without positives."""
    score_N, label_N = _prep(score_N, label_N)
    if not label_N.any():
        return float("nan")
    return float(binary_average_precision(score_N, label_N.long(), thresholds=None))


def _tie_runs(sorted_N: torch.Tensor):
    n = sorted_N.shape[0]
    start = torch.ones(n, dtype=torch.bool)
    start[1:] = sorted_N[1:] != sorted_N[:-1]
    end = torch.ones(n, dtype=torch.bool)
    end[:-1] = start[1:]
    return start, end


def weighted_auroc(score_N, label_N, weight_BN) -> torch.Tensor:
    """AUROC of B weighted replicates [B]; NaN where a replicate lacks a class."""
    score_N, label_N = _prep(score_N, label_N)
    order = torch.argsort(score_N, stable=True)
    s = score_N[order]
    y = label_N[order]
    w_BN = torch.as_tensor(weight_BN, dtype=torch.float64)[:, order]
    start, _ = _tie_runs(s)
    run_id = torch.cumsum(start.long(), 0) - 1
    neg_BN = w_BN * ~y
    neg_run_BR = torch.zeros(w_BN.shape[0], int(run_id[-1]) + 1, dtype=torch.float64).index_add_(1, run_id, neg_BN)
    below_BR = torch.cumsum(neg_run_BR, 1) - neg_run_BR  # negatives with a strictly lower score
    pos_BN = w_BN * y
    num = (pos_BN * (below_BR[:, run_id] + 0.5 * neg_run_BR[:, run_id])).sum(1)
    return num / (pos_BN.sum(1) * neg_BN.sum(1))


def weighted_auprc(score_N, label_N, weight_BN) -> torch.Tensor:
    """Average precision of B weighted replicates [B]; NaN where a replicate has no positive."""
    score_N, label_N = _prep(score_N, label_N)
    order = torch.argsort(-score_N, stable=True)
    s = score_N[order]
    y = label_N[order]
    w_BN = torch.as_tensor(weight_BN, dtype=torch.float64)[:, order]
    _, end = _tie_runs(s)
    tp_BK = torch.cumsum(w_BN * y, 1)[:, end]  # at each distinct threshold, descending
    fp_BK = torch.cumsum(w_BN * ~y, 1)[:, end]
    pos_B = tp_BK[:, -1:]
    # Thresholds whose rows all have weight 0 add nothing; guard their 0/0 precision.
    prec_BK = torch.where(tp_BK + fp_BK > 0, tp_BK / (tp_BK + fp_BK).clamp(min=1e-300), torch.zeros_like(tp_BK))
    rec_BK = tp_BK / pos_B
    d_rec = torch.diff(rec_BK, dim=1, prepend=torch.zeros_like(rec_BK[:, :1]))
    return (d_rec * prec_BK).sum(1)
