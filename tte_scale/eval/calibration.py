"""Calibration of predicted risks: logistic recalibration, binned ECE, Kaplan-Meier by risk decile.

Binary predictions (the logistic probe's probability of the event by the horizon):

* ``recalibration(logit, y)``: the calibration **slope** ``b`` of ``logit P(y) = a + b * logit``
  (1 when the spread of the predictions is right, < 1 when they are too extreme) and the
  calibration **intercept** ``a0`` of ``logit P(y) = a0 + logit`` (calibration-in-the-large: 0
  when the mean prediction is right, > 0 when it is too low). Maximum likelihood by Newton's
  method; sklearn's unpenalized ``LogisticRegression`` gives the same slope.
* ``expected_calibration_error(p, y)``: ``sum_k (n_k / N) |mean(y)_k - mean(p)_k|`` over equal-width
  bins of ``p`` (bin k = [k/K, (k+1)/K), plus p = 1 in its own); torchmetrics'
  ``binary_calibration_error`` (norm "l1") with the same number of bins.
* ``reliability_bins(p, y)``: the bins' mean prediction, observed fraction and count (the plot).

Survival predictions at a horizon tau (``1 - S_i(tau)`` of a survival probe):

* ``km_calibration(risk_at_tau, time, event, tau)``: held-out rows in deciles of predicted risk
  (by rank, so ties cannot empty a group); per decile the mean prediction and the observed risk
  ``1 - KM(tau)`` of its rows (Kaplan-Meier held at its last value when the decile's follow-up
  ends before tau); the error is ``sum_g (n_g / N) |observed_g - predicted_g|``. The deciles
  are fixed on the held-out rows; a bootstrap replicate reweights their rows.

Every function takes ``weight_BN`` (multiplicities, see ``concordance``) and then returns [B].

Legend: N rows, B weight vectors, K bins, G groups (deciles), U unique times.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from tte_scale.eval.probes import as_tensor

__all__ = [
    "Recalibration",
    "recalibration",
    "expected_calibration_error",
    "reliability_bins",
    "risk_groups",
    "km_calibration",
    "KMCalibration",
]

F64 = torch.float64


def _t(x, dtype=F64) -> torch.Tensor:
    return as_tensor(x, dtype)


def _weights(weight_BN, n: int) -> torch.Tensor:
    if weight_BN is None:
        return torch.ones(1, n, dtype=F64)
    w = _t(weight_BN)
    w = w[None] if w.ndim == 1 else w
    if w.shape[-1] != n:
        raise ValueError(f"weights have {w.shape[-1]} columns, expected {n} (one per row)")
    return w


def _squeeze(x: torch.Tensor, weighted: bool) -> torch.Tensor:
    return x if weighted else x[0]


class Recalibration(NamedTuple):
    slope: torch.Tensor
    """b of logit P(y) = a + b * logit, [B] (or a scalar)."""
    intercept: torch.Tensor
    """a0 of logit P(y) = a0 + logit (the slope held at 1), [B] (or a scalar)."""


def recalibration(logit_N, y_N, weight_BN=None, iters: int = 50, tol: float = 1e-8) -> Recalibration:
    """Calibration slope and intercept by weighted maximum likelihood (Newton, all B at once).

    NaN where the maximum likelihood does not exist: one class only, or predictions that
    separate the classes (Newton's steps do not shrink below ``tol``)."""
    x = _t(logit_N).reshape(-1)
    y = _t(y_N).reshape(-1)
    w = _weights(weight_BN, x.shape[0])
    B = w.shape[0]
    # slope: two parameters (a, b), X = [1, logit]
    X = torch.stack([torch.ones_like(x), x], 1)  # [N, 2]
    beta = torch.zeros(B, 2, dtype=F64)
    a0 = torch.zeros(B, dtype=F64)
    for _ in range(iters):
        p = torch.sigmoid(beta @ X.T)  # [B, N]
        grad = (w * (y - p)) @ X  # [B, 2]
        h = torch.einsum("bn,ni,nj->bij", w * p * (1 - p), X, X)  # [B, 2, 2]
        step = torch.linalg.solve(h + 1e-12 * torch.eye(2, dtype=F64), grad)
        beta = beta + step
        q = torch.sigmoid(a0[:, None] + x[None, :])
        step0 = (w * (y - q)).sum(1) / (w * q * (1 - q)).sum(1).clamp(min=1e-300)
        a0 = a0 + step0
    pos = (w * y).sum(1)
    one_class = (pos <= 0) | (pos >= w.sum(1))
    nan = torch.full((B,), float("nan"), dtype=F64)
    slope_ok = ~one_class & (step.abs().amax(1) <= tol * (1 + beta.abs().amax(1))) & torch.isfinite(beta).all(1)
    icpt_ok = ~one_class & (step0.abs() <= tol * (1 + a0.abs())) & torch.isfinite(a0)
    slope = torch.where(slope_ok, beta[:, 1], nan)
    intercept = torch.where(icpt_ok, a0, nan)
    return Recalibration(_squeeze(slope, weight_BN is not None), _squeeze(intercept, weight_BN is not None))


def _bins(p_N: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Bin of each probability: [k/K, (k+1)/K), p = 1 in bin K (torchmetrics' bucketize)."""
    edges = torch.linspace(0, 1, n_bins + 1, dtype=p_N.dtype)
    return torch.bucketize(p_N, edges, right=True) - 1


def _binned(p_N, y_N, weight_BN, n_bins: int):
    p = _t(p_N).reshape(-1)
    y = _t(y_N).reshape(-1)
    if bool(((p < 0) | (p > 1) | torch.isnan(p)).any()):
        raise ValueError("probabilities must lie in [0, 1]")
    w = _weights(weight_BN, p.shape[0])
    idx = _bins(p, n_bins)
    shape = (w.shape[0], n_bins + 1)
    n_BK = torch.zeros(shape, dtype=F64).index_add_(1, idx, w)
    p_BK = torch.zeros(shape, dtype=F64).index_add_(1, idx, w * p)
    y_BK = torch.zeros(shape, dtype=F64).index_add_(1, idx, w * y)
    return n_BK, p_BK, y_BK


def expected_calibration_error(p_N, y_N, weight_BN=None, n_bins: int = 10) -> torch.Tensor:
    """Binned ECE (l1), a scalar or [B]."""
    n_BK, p_BK, y_BK = _binned(p_N, y_N, weight_BN, n_bins)
    gap = (y_BK - p_BK).abs()  # = n_k |mean(y)_k - mean(p)_k|
    return _squeeze(gap.sum(1) / n_BK.sum(1), weight_BN is not None)


def reliability_bins(p_N, y_N, n_bins: int = 10) -> dict[str, list[float]]:
    """Non-empty bins: mean predicted probability, observed fraction, count."""
    n_BK, p_BK, y_BK = _binned(p_N, y_N, None, n_bins)
    keep = n_BK[0] > 0
    n = n_BK[0][keep]
    return {"pred": (p_BK[0][keep] / n).tolist(), "obs": (y_BK[0][keep] / n).tolist(), "n": n.tolist()}


def risk_groups(risk_N, num: int = 10) -> np.ndarray:
    """Group of each row by rank of predicted risk: 0 (lowest) .. num - 1; ties split by order."""
    r = np.asarray(risk_N, dtype=np.float64)
    ranks = np.argsort(np.argsort(r, kind="stable"), kind="stable")
    return np.minimum(ranks * num // max(len(r), 1), num - 1)


class KMCalibration(NamedTuple):
    error: torch.Tensor
    """sum_g (n_g / N) |observed_g - predicted_g|, a scalar or [B]."""
    pred_G: np.ndarray
    """Mean predicted risk by the horizon per group (unweighted)."""
    obs_G: np.ndarray
    """1 - Kaplan-Meier survival at the horizon per group (unweighted)."""
    n_G: np.ndarray


def _weighted_km_at(time_N, event_N, w_BN, tau: float) -> torch.Tensor:
    """Kaplan-Meier survival at tau [B] of weighted rows (prod over event times <= tau)."""
    uniq, inv = torch.unique(time_N, return_inverse=True)
    B, U = w_BN.shape[0], uniq.shape[0]
    n_BU = torch.zeros(B, U, dtype=F64).index_add_(1, inv, w_BN)
    d_BU = torch.zeros(B, U, dtype=F64).index_add_(1, inv, w_BN * event_N)
    at_risk = torch.flip(torch.cumsum(torch.flip(n_BU, [1]), 1), [1])
    frac = torch.where(at_risk > 0, d_BU / at_risk.clamp(min=1e-300), torch.zeros_like(d_BU))
    frac = frac * (uniq <= tau)[None, :]
    return torch.prod(1.0 - frac, 1)


def km_calibration(risk_at_tau_N, time_N, event_N, tau: float, weight_BN=None, num_groups: int = 10) -> KMCalibration:
    """Predicted vs Kaplan-Meier observed risk by the horizon per risk decile (see module doc)."""
    pred = _t(risk_at_tau_N).reshape(-1)
    time = _t(time_N).reshape(-1)
    event = _t(event_N, torch.bool).reshape(-1)
    n = pred.shape[0]
    if not (time.shape[0] == event.shape[0] == n):
        raise ValueError(f"risk, time and event lengths differ: {n}, {time.shape[0]}, {event.shape[0]}")
    w = _weights(weight_BN, n)
    groups = risk_groups(pred.numpy(), num_groups)
    err = torch.zeros(w.shape[0], dtype=F64)
    pred_G, obs_G, n_G = [], [], []
    ones = torch.ones(1, n, dtype=F64)
    for g in np.unique(groups):
        m = torch.from_numpy(groups == g)
        wg = w[:, m]
        ng = wg.sum(1)
        p_g = (wg * pred[m]).sum(1) / ng.clamp(min=1e-300)
        o_g = 1.0 - _weighted_km_at(time[m], event[m], wg, tau)
        err += torch.where(ng > 0, ng * (o_g - p_g).abs(), torch.zeros_like(ng))
        pred_G.append(float(pred[m].mean()))
        obs_G.append(float(1.0 - _weighted_km_at(time[m], event[m], ones[:, m], tau)[0]))
        n_G.append(int(m.sum()))
    err = err / w.sum(1)
    return KMCalibration(_squeeze(err, weight_BN is not None), np.array(pred_G), np.array(obs_G), np.array(n_G))
