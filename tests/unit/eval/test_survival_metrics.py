"""Kaplan-Meier, IPCW Brier / integrated Brier score against sksurv and lifelines; weighted
AUROC / AUPRC against torchmetrics on repeated rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tte_scale.eval.classification import auprc, auroc, weighted_auprc, weighted_auroc
from tte_scale.eval.survival import brier_score, censoring_km, integrated_brier_score, kaplan_meier


@pytest.fixture(scope="module")
def gbsg2_cox():
    """GBSG2 split in two; a sksurv Cox model fit on one half predicts the other's curves."""
    from sksurv.datasets import load_gbsg2
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    x, y = load_gbsg2()
    x = x.select_dtypes("number").to_numpy(float)
    train, test = np.arange(len(y)) % 2 == 0, np.arange(len(y)) % 2 == 1
    est = CoxPHSurvivalAnalysis().fit(x[train], y[train])
    t_test = y["time"][test]
    grid = np.linspace(np.quantile(t_test, 0.1), np.quantile(t_test, 0.8), 25)
    surv = np.stack([f(grid) for f in est.predict_survival_function(x[test])])
    return y[train], y[test], surv, grid


def test_brier_and_ibs_match_sksurv(gbsg2_cox):
    from sksurv.metrics import brier_score as sk_bs
    from sksurv.metrics import integrated_brier_score as sk_ibs

    y_tr, y_te, surv, grid = gbsg2_cox
    cens = censoring_km(y_tr["time"], y_tr["cens"])
    ours = brier_score(y_te["time"], y_te["cens"], surv, grid, cens).numpy()
    assert np.abs(ours - sk_bs(y_tr, y_te, surv, grid)[1]).max() < 1e-10
    ibs = integrated_brier_score(y_te["time"], y_te["cens"], surv, grid, cens).item()
    assert abs(ibs - sk_ibs(y_tr, y_te, surv, grid)) < 1e-10


def test_weighted_ibs_equals_repeated_rows(gbsg2_cox):
    y_tr, y_te, surv, grid = gbsg2_cox
    cens = censoring_km(y_tr["time"], y_tr["cens"])
    t, e = np.ascontiguousarray(y_te["time"]), np.ascontiguousarray(y_te["cens"])
    w = np.random.default_rng(0).integers(0, 3, (2, len(t)))
    wv = integrated_brier_score(t, e, surv, grid, cens, torch.from_numpy(w))
    for b in range(2):
        idx = np.repeat(np.arange(len(t)), w[b])
        assert abs(wv[b].item() - integrated_brier_score(t[idx], e[idx], surv[idx], grid, cens).item()) < 1e-12


def test_kaplan_meier_matches_sksurv_and_lifelines():
    from lifelines import KaplanMeierFitter
    from lifelines.datasets import load_rossi
    from sksurv.nonparametric import CensoringDistributionEstimator, kaplan_meier_estimator

    df = load_rossi()
    t, e = df["week"].to_numpy(float), df["arrest"].to_numpy(bool)
    km = kaplan_meier(t, e)
    times, prob = kaplan_meier_estimator(e, t)
    assert np.allclose(km.time_U.numpy(), times) and np.abs(km.value_U.numpy() - prob).max() < 1e-12
    lf = KaplanMeierFitter().fit(t, e)
    q = np.array([0.0, 3.5, 20.0, 52.0])
    assert np.abs(km(q).numpy() - lf.survival_function_at_times(q).to_numpy()).max() < 1e-12
    y = np.array(list(zip(e, t)), dtype=[("e", bool), ("t", float)])
    ref = CensoringDistributionEstimator().fit(y)
    assert np.abs(censoring_km(t, e)(q[:-1]).numpy() - ref.predict_proba(q[:-1])).max() < 1e-12


def test_weighted_auroc_auprc_equal_torchmetrics_on_repeated_rows():
    rng = np.random.default_rng(0)
    for _ in range(10):
        n = 60
        s = rng.integers(0, 8, n).astype(float)  # tied scores
        y = rng.random(n) < 0.3
        w = rng.integers(0, 3, (4, n))
        wa, wp = weighted_auroc(s, y, torch.from_numpy(w)), weighted_auprc(s, y, torch.from_numpy(w))
        for b in range(4):
            idx = np.repeat(np.arange(n), w[b])
            # torchmetrics computes in float32
            assert abs(wa[b].item() - auroc(s[idx], y[idx])) < 1e-6
            assert abs(wp[b].item() - auprc(s[idx], y[idx])) < 1e-6


def test_auroc_one_class_is_nan():
    assert np.isnan(auroc([0.1, 0.2], [True, True]))
    assert np.isnan(auprc([0.1, 0.2], [False, False]))
