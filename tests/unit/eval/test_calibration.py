"""Calibration metrics against sklearn, torchmetrics, lifelines and hand computation on fixed data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tte_scale.eval.calibration import (
    expected_calibration_error,
    km_calibration,
    recalibration,
    reliability_bins,
    risk_groups,
)


def _binary(n=400, seed=0, scale=1.6, shift=-0.4):
    """Labels drawn from sigmoid(logit); the predictions are too extreme and too low."""
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(0, 1.2, n)
    y = rng.random(n) < 1 / (1 + np.exp(-true_logit))
    return scale * true_logit + shift, y


def test_recalibration_slope_matches_sklearn_and_the_intercept_solves_its_score_equation():
    from scipy.optimize import brentq
    from sklearn.linear_model import LogisticRegression

    logit, y = _binary()
    got = recalibration(logit, y)
    ref = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(logit[:, None], y)
    assert abs(got.slope.item() - ref.coef_[0, 0]) < 1e-6
    assert 1 / 1.6 - 0.15 < got.slope.item() < 1 / 1.6 + 0.15  # the shrinkage this data needs
    a0 = brentq(lambda a: np.sum(y - 1 / (1 + np.exp(-(a + logit)))), -10, 10, xtol=1e-14)
    assert abs(got.intercept.item() - a0) < 1e-9 and got.intercept.item() > 0  # predictions too low
    # a calibrated model: slope 1, intercept 0, up to noise
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1.5, 20_000)
    cal = recalibration(z, rng.random(z.size) < 1 / (1 + np.exp(-z)))
    assert abs(cal.slope.item() - 1) < 0.05 and abs(cal.intercept.item()) < 0.05


def test_recalibration_weights_are_multiplicities():
    logit, y = _binary(n=120, seed=3)
    w = np.random.default_rng(0).integers(0, 3, (3, logit.size))
    got = recalibration(logit, y, torch.from_numpy(w))
    for b in range(3):
        idx = np.repeat(np.arange(logit.size), w[b])
        ref = recalibration(logit[idx], y[idx])
        assert abs(got.slope[b].item() - ref.slope.item()) < 1e-9
        assert abs(got.intercept[b].item() - ref.intercept.item()) < 1e-9
    one = recalibration(logit, np.zeros_like(y))
    assert torch.isnan(one.slope) and torch.isnan(one.intercept)


def test_ece_matches_torchmetrics():
    from torchmetrics.functional.classification import binary_calibration_error

    logit, y = _binary(seed=4)
    p = 1 / (1 + np.exp(-logit))
    p[:3] = [0.0, 1.0, 0.5]  # the edges: 1.0 has its own bin in torchmetrics too
    for bins in (5, 10, 15):
        ref = binary_calibration_error(torch.from_numpy(p), torch.from_numpy(y.astype(np.int64)), n_bins=bins)
        assert abs(expected_calibration_error(p, y, n_bins=bins).item() - ref.item()) < 1e-12
    w = np.random.default_rng(0).integers(0, 3, (2, p.size))
    got = expected_calibration_error(p, y, torch.from_numpy(w))
    for b in range(2):
        idx = np.repeat(np.arange(p.size), w[b])
        assert abs(got[b].item() - expected_calibration_error(p[idx], y[idx]).item()) < 1e-12
    bins = reliability_bins(p, y)
    assert sum(bins["n"]) == p.size and all(0 <= v <= 1 for v in bins["obs"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error(np.array([1.5]), np.array([True]))


def _survival(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    loghaz = rng.normal(-6.5, 1, n)
    t_ev = rng.exponential(np.exp(-loghaz))
    t_c = rng.uniform(30, 600, n)
    time = np.minimum(t_ev, t_c).round()
    return loghaz, time, t_ev <= t_c


def test_km_calibration_matches_lifelines_per_decile():
    from lifelines import KaplanMeierFitter

    loghaz, time, event = _survival()
    tau = 180.0
    pred = 1 - np.exp(-np.exp(loghaz) * tau)  # the true risk by tau: calibrated
    got = km_calibration(pred, time, event, tau)
    groups = risk_groups(pred, 10)
    assert np.bincount(groups).min() == 300 and len(got.n_G) == 10
    err = 0.0
    for g in range(10):
        m = groups == g
        obs = 1 - KaplanMeierFitter().fit(time[m], event[m]).predict(tau)
        assert abs(got.obs_G[g] - obs) < 1e-12 and abs(got.pred_G[g] - pred[m].mean()) < 1e-12
        err += m.mean() * abs(obs - pred[m].mean())
    assert abs(got.error.item() - err) < 1e-12 and got.error.item() < 0.04
    # predictions twice too high are visibly miscalibrated
    assert km_calibration(np.minimum(2 * pred, 1), time, event, tau).error.item() > 3 * got.error.item()
    w = np.random.default_rng(1).integers(0, 3, (2, time.size))
    wc = km_calibration(pred, time, event, tau, torch.from_numpy(w))
    for b in range(2):  # the deciles stay those of the held-out rows; a replicate reweights them
        idx = np.repeat(np.arange(time.size), w[b])
        ref = 0.0
        for g in range(10):
            m = groups[idx] == g
            obs = 1 - KaplanMeierFitter().fit(time[idx][m], event[idx][m]).predict(tau)
            ref += m.mean() * abs(obs - pred[idx][m].mean())
        assert abs(wc.error[b].item() - ref) < 1e-12


def test_recalibration_of_separating_predictions_is_nan_not_a_huge_number():
    logit = np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0])
    y = logit > 0  # perfectly separated: the slope's likelihood has no maximum
    got = recalibration(logit, y)
    assert torch.isnan(got.slope)
    assert torch.isfinite(got.intercept)  # the intercept alone (slope held at 1) has one
