"""Probes against sklearn (logistic), lifelines (Cox, piecewise exponential)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from tte_scale.eval.probes import Standardizer, fit_cox, fit_logistic, fit_pem, pem_edges


def _rossi_std():
    from lifelines.datasets import load_rossi

    df = load_rossi()
    x = df.drop(columns=["week", "arrest"]).to_numpy(float)
    # ddof=1 like lifelines' internal normalization, so its rescaling is the identity
    x = (x - x.mean(0)) / x.std(0, ddof=1)
    return x, df["week"].to_numpy(float), df["arrest"].to_numpy(bool)


@pytest.mark.parametrize("l2", [0.01, 0.1])
def test_cox_matches_lifelines_coefficients_and_survival(l2):
    from lifelines import CoxPHFitter

    x, t, e = _rossi_std()  # weeks: heavily tied event times, so Efron's correction matters
    d = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])]).assign(T=t, E=e)
    ref = CoxPHFitter(penalizer=l2).fit(d, "T", "E")
    ours = fit_cox(x, t, e, l2)
    assert np.abs(ref.params_.to_numpy() - ours.beta_D.numpy()).max() < 1e-4
    grid = np.array([5.0, 20.0, 40.0, 52.0])
    s_ref = ref.predict_survival_function(d.iloc[:20], times=grid).to_numpy().T
    assert np.abs(s_ref - ours.survival(x[:20], grid).numpy()).max() < 1e-4


@pytest.mark.parametrize("l2", [1e-3, 1e-1])
def test_logistic_matches_sklearn(l2):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    n, d = 400, 12
    x = rng.normal(size=(n, d))
    y = (x[:, 0] - 0.5 * x[:, 1] + rng.normal(size=n)) > 0.3
    ref = LogisticRegression(C=1.0 / (n * l2), tol=1e-10, max_iter=10_000).fit(x, y)
    ours = fit_logistic(x, y.astype(float), l2)
    assert np.abs(ref.coef_[0] - ours.w_D.numpy()).max() < 1e-5
    assert abs(ref.intercept_[0] - ours.b.item()) < 1e-5


def test_pem_matches_lifelines_likelihood():
    from lifelines import PiecewiseExponentialRegressionFitter

    rng = np.random.default_rng(0)
    n = 300
    x = rng.normal(size=(n, 2))
    t_ev = rng.exponential(30 * np.exp(-0.7 * x[:, 0]))
    t_c = rng.uniform(5, 80, n)
    t, e = np.minimum(t_ev, t_c), t_ev <= t_c
    starts = pem_edges(t, e, 3)
    ours = fit_pem(x, t, e, starts, 0.0)
    d = pd.DataFrame(x, columns=["a", "b"]).assign(T=t, E=e)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = PiecewiseExponentialRegressionFitter(breakpoints=starts[1:].tolist()).fit(d, "T", "E")
    ours_ll = -ours.nll(x, t, e) * n
    # both are the unpenalized MLE of the same model; ours converges at least as tightly
    assert ours_ll >= ref.log_likelihood_ - 1e-6
    assert abs(ours_ll - ref.log_likelihood_) < 1e-3 * abs(ref.log_likelihood_)
    grid = np.array([10.0, 30.0, 60.0])
    s_ref = ref.predict_survival_function(d.iloc[:10], times=grid).to_numpy().T
    assert np.abs(s_ref - ours.survival(x[:10], grid).numpy()).max() < 1e-2


def test_pem_without_features_is_the_empirical_hazard():
    rng = np.random.default_rng(1)
    t = rng.exponential(10, 500)
    e = rng.random(500) < 0.7
    starts = pem_edges(t, e, 4)
    m = fit_pem(np.zeros((500, 1)), t, e, starts, 1.0)
    widths = np.append(np.diff(starts.numpy()), np.inf)
    r = np.minimum(np.clip(t[:, None] - starts.numpy()[None], 0, None), widths[None])
    bins = np.searchsorted(starts.numpy(), t, side="right") - 1
    d = np.bincount(bins[e], minlength=len(starts))
    assert np.allclose(m.b_J.numpy(), np.log(d / r.sum(0)), atol=1e-6)


def test_standardizer_uses_train_statistics_and_survives_constant_columns():
    x = np.array([[1.0, 5.0], [3.0, 5.0]])
    s = Standardizer.fit(x)
    assert torch.allclose(s(x), torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64))
    assert torch.allclose(s(np.array([[2.0, 7.0]])), torch.tensor([[0.0, 2.0]], dtype=torch.float64))


def test_cox_needs_an_event():
    with pytest.raises(ValueError, match="at least one event"):
        fit_cox(np.zeros((3, 1)), [1.0, 2.0, 3.0], [False, False, False], 0.1)
