"""Kaplan-Meier estimates, Brier score and integrated Brier score with IPCW.

Conventions follow ``sksurv.metrics.brier_score`` / ``integrated_brier_score`` (Graf et al.
1999), so the numbers match theirs exactly:

* The censoring survival ``G(t) = P(C > t)`` is the reverse Kaplan-Meier estimate on the
  *training* rows, with events at a time removed from the risk set before censorings at it.
  ``G`` is a right-continuous step function: 1 before the first time, held after the last.
* ``BS(t) = mean_i [ S_i(t)^2 * 1(t_i <= t, event_i) / G(t_i)
                    + (1 - S_i(t))^2 * 1(t_i > t) / G(t) ]``; a zero ``G`` gives weight 0
  (sksurv sets it to inf).
* ``IBS = trapezoid(BS, grid) / (grid[-1] - grid[0])``.

Weights are multiplicities (see ``concordance``): with B weight vectors the score of each
bootstrap replicate is a weighted mean of per-row terms, O(B N G).

Legend: N rows, G grid times, B weight vectors, U unique times.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

__all__ = ["StepFunction", "kaplan_meier", "censoring_km", "brier_score", "integrated_brier_score"]


class StepFunction(NamedTuple):
    """A right-continuous step function: ``value_U[k]`` on ``[time_U[k], time_U[k+1])``."""

    time_U: torch.Tensor
    value_U: torch.Tensor
    before: float = 1.0

    def __call__(self, t) -> torch.Tensor:
        t = torch.as_tensor(np.ascontiguousarray(t) if not isinstance(t, torch.Tensor) else t, dtype=torch.float64)
        idx = torch.bucketize(t, self.time_U, right=True) - 1
        out = self.value_U[idx.clamp(min=0)]
        return torch.where(idx < 0, torch.full_like(out, self.before), out)


def _counts(time_N, event_N):
    time_N = torch.as_tensor(np.ascontiguousarray(time_N), dtype=torch.float64)
    event_N = torch.as_tensor(np.ascontiguousarray(event_N)).to(torch.bool)
    if time_N.shape != event_N.shape or time_N.ndim != 1 or time_N.numel() == 0:
        raise ValueError(
            f"time and event must be non-empty 1-D arrays of equal length, got {tuple(time_N.shape)} and {tuple(event_N.shape)}"
        )
    uniq_U, inv_N = torch.unique(time_N, return_inverse=True)
    n_U = torch.bincount(inv_N, minlength=uniq_U.shape[0]).to(torch.float64)
    d_U = torch.bincount(inv_N, weights=event_N.to(torch.float64), minlength=uniq_U.shape[0])
    at_risk_U = torch.flip(torch.cumsum(torch.flip(n_U, [0]), 0), [0])
    return uniq_U, d_U, n_U - d_U, at_risk_U


def kaplan_meier(time_N, event_N) -> StepFunction:
    """Kaplan-Meier survival estimate ``S(t) = prod_{u <= t} (1 - d_u / r_u)``."""
    uniq_U, d_U, _, at_risk_U = _counts(time_N, event_N)
    return StepFunction(uniq_U, torch.cumprod(1.0 - d_U / at_risk_U, 0))


def censoring_km(time_N, event_N) -> StepFunction:
    """Reverse Kaplan-Meier: the censoring survival ``G(t)`` (sksurv's convention)."""
    uniq_U, d_U, c_U, at_risk_U = _counts(time_N, event_N)
    at_risk_U = at_risk_U - d_U  # an event at t leaves the risk set before censorings at t
    frac = torch.where(at_risk_U > 0, c_U / at_risk_U.clamp(min=1e-300), torch.zeros_like(c_U))
    return StepFunction(uniq_U, torch.cumprod(1.0 - frac, 0))


def _row_terms(time_N, event_N, surv_NG, grid_G, cens: StepFunction) -> torch.Tensor:
    """Per-row Brier terms [N, G]; BS(t_g) is their (weighted) mean over rows."""
    time_N = torch.as_tensor(np.ascontiguousarray(time_N), dtype=torch.float64)
    event_N = torch.as_tensor(np.ascontiguousarray(event_N)).to(torch.bool)
    surv_NG = torch.as_tensor(surv_NG, dtype=torch.float64)
    grid_G = torch.as_tensor(np.ascontiguousarray(grid_G), dtype=torch.float64).reshape(-1)
    if surv_NG.ndim == 1:
        surv_NG = surv_NG[:, None]
    if surv_NG.shape != (time_N.shape[0], grid_G.shape[0]):
        raise ValueError(f"surv must have shape [{time_N.shape[0]}, {grid_G.shape[0]}], got {tuple(surv_NG.shape)}")
    if not bool((grid_G[1:] > grid_G[:-1]).all()):
        raise ValueError("grid times must be strictly increasing")
    g_t_G = cens(grid_G)
    g_y_N = cens(time_N)
    inv_t_G = torch.where(g_t_G > 0, 1.0 / g_t_G, torch.zeros_like(g_t_G))
    inv_y_N = torch.where(g_y_N > 0, 1.0 / g_y_N, torch.zeros_like(g_y_N))
    case_NG = (time_N[:, None] <= grid_G[None, :]) & event_N[:, None]
    control_NG = time_N[:, None] > grid_G[None, :]
    return surv_NG.square() * case_NG * inv_y_N[:, None] + (1.0 - surv_NG).square() * control_NG * inv_t_G[None, :]


def _weighted_mean(terms_NG: torch.Tensor, weight_BN):
    if weight_BN is None:
        return terms_NG.mean(0)
    w_BN = torch.as_tensor(weight_BN, dtype=torch.float64)
    return (w_BN @ terms_NG) / w_BN.sum(1, keepdim=True)


def brier_score(time_N, event_N, surv_NG, grid_G, cens: StepFunction, weight_BN=None) -> torch.Tensor:
    """IPCW Brier score at each grid time: [G], or [B, G] with weights.

    ``surv_NG[i, g]`` is the predicted ``P(T_i > grid[g])``; ``cens`` is ``censoring_km`` of
    the training rows.
    """
    return _weighted_mean(_row_terms(time_N, event_N, surv_NG, grid_G, cens), weight_BN)


def integrated_brier_score(time_N, event_N, surv_NG, grid_G, cens: StepFunction, weight_BN=None) -> torch.Tensor:
    """Trapezoid integral of the Brier score over the grid, divided by its span: scalar or [B]."""
    grid_G = torch.as_tensor(np.ascontiguousarray(grid_G), dtype=torch.float64).reshape(-1)
    if grid_G.shape[0] < 2:
        raise ValueError("the integrated Brier score needs at least two grid times")
    bs = brier_score(time_N, event_N, surv_NG, grid_G, cens, weight_BN)
    return torch.trapezoid(bs, grid_G, dim=-1) / (grid_G[-1] - grid_G[0])
