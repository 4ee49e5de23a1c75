"""Harrell / Antolini C-index: brute force, peers on their bundled datasets, the Metric."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tte_scale.eval.concordance import HarrellCIndex, antolini_cindex, harrell_cindex, harrell_counts


def brute_harrell(t, e, r):
    conc = tied = comp = 0
    for i in range(len(t)):
        if not e[i]:
            continue
        for j in range(len(t)):
            if t[j] > t[i] or (t[j] == t[i] and not e[j]):
                comp += 1
                conc += r[i] > r[j]
                tied += r[i] == r[j]
    return conc, tied, comp


@st.composite
def survival_data(draw):
    n = draw(st.integers(1, 40))
    # few distinct values: ties in time, in risk, and events tied with censorings
    t = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    e = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    r = draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n))
    return np.array(t, float), np.array(e), np.array(r, float)


@settings(max_examples=150, deadline=None)
@given(survival_data())
def test_harrell_counts_equal_brute_force(data):
    t, e, r = data
    k = harrell_counts(t, e, r)
    assert (k.concordant.item(), k.tied_risk.item(), k.comparable.item()) == brute_harrell(t, e, r)


@settings(max_examples=40, deadline=None)
@given(survival_data(), st.integers(0, 2**31 - 1))
def test_weights_are_multiplicities(data, seed):
    t, e, r = data
    w = np.random.default_rng(seed).integers(0, 4, (3, len(t)))
    k = harrell_counts(t, e, r, torch.from_numpy(w))
    for b in range(3):
        idx = np.repeat(np.arange(len(t)), w[b])
        assert (k.concordant[b].item(), k.tied_risk[b].item(), k.comparable[b].item()) == brute_harrell(t[idx], e[idx], r[idx])


def _peer_datasets():
    from lifelines.datasets import load_rossi
    from sksurv.datasets import load_gbsg2, load_veterans_lung_cancer, load_whas500

    rossi = load_rossi()
    # integer-valued risks on purpose: many tied risks and tied times
    yield "rossi", rossi["week"].to_numpy(float), rossi["arrest"].to_numpy(bool), (rossi["age"] + 3 * rossi["prio"]).to_numpy(float)
    x, y = load_whas500()
    yield "whas500", y["lenfol"], y["fstat"], x["age"].to_numpy(float)
    x, y = load_gbsg2()
    yield "gbsg2", y["time"], y["cens"], (100 * x["pnodes"] - x["progrec"]).to_numpy(float)
    x, y = load_veterans_lung_cancer()
    yield "veterans", y["Survival_in_days"], y["Status"], -x["Karnofsky_score"].to_numpy(float)


@pytest.mark.parametrize("name,time,event,risk", list(_peer_datasets()), ids=lambda v: v if isinstance(v, str) else "")
def test_harrell_matches_sksurv_and_lifelines(name, time, event, risk):
    from lifelines.utils import concordance_index
    from sksurv.metrics import concordance_index_censored

    ours = harrell_counts(time, event, risk)
    sk = concordance_index_censored(np.asarray(event, bool), np.asarray(time, float), risk)
    assert abs(ours.cindex.item() - sk[0]) < 1e-6
    assert (ours.concordant.item(), ours.discordant.item(), ours.tied_risk.item()) == tuple(sk[1:4])
    # lifelines takes predicted survival times: higher = later event
    assert abs(ours.cindex.item() - concordance_index(time, -risk, event)) < 1e-6


def test_exact_tie_convention_agrees_with_lifelines():
    """Risks equal only up to float noise are *not* tied here (nor in lifelines); sksurv would
    tie them (tolerance 1e-8). Documented in the module docstring."""
    from lifelines.utils import concordance_index
    from sksurv.datasets import load_gbsg2

    x, y = load_gbsg2()
    risk = (x["pnodes"] - 0.01 * x["progrec"]).to_numpy(float)  # e.g. 1 - 0.03 vs 2 - 1.03
    ours = harrell_cindex(y["time"], y["cens"], risk).item()
    assert abs(ours - concordance_index(y["time"], -risk, y["cens"])) < 1e-12


def test_no_comparable_pair_is_nan_and_nan_risk_raises():
    assert torch.isnan(harrell_cindex([1.0, 2.0], [False, False], [0.0, 1.0]))
    with pytest.raises(ValueError, match="NaN"):
        harrell_cindex([1.0, 2.0], [True, False], [float("nan"), 1.0])
    with pytest.raises(ValueError, match="same length"):
        harrell_cindex([1.0, 2.0], [True], [0.0, 1.0])


def test_antolini_matches_pycox_with_crossing_curves():
    from pycox.evaluation import EvalSurv
    import pandas as pd

    rng = np.random.default_rng(0)
    n, g = 300, 40
    t = rng.integers(1, 60, n).astype(float)  # tied times
    e = rng.random(n) < 0.6
    grid = np.linspace(0, 70, g)
    # Weibull-like curves with per-row shape: curves cross, so Antolini != Harrell
    scale, shape = rng.uniform(20, 80, n), rng.uniform(0.5, 3, n)
    surv = np.exp(-((grid[None, :] / scale[:, None]) ** shape[:, None]))
    surv[:10] = surv[10:20]  # identical curves: ties in S count 0
    ev = EvalSurv(pd.DataFrame(surv.T, index=grid), t, e.astype(int), censor_surv="km")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ev.concordance_td("antolini")
    ours = antolini_cindex(t, e, surv, grid, chunk=64).item()
    assert abs(ours - ref) < 1e-9
    w = rng.integers(0, 3, (2, n))
    wc = antolini_cindex(t, e, surv, grid, torch.from_numpy(w))
    for b in range(2):
        idx = np.repeat(np.arange(n), w[b])
        assert abs(wc[b].item() - antolini_cindex(t[idx], e[idx], surv[idx], grid).item()) < 1e-12


def test_metric_accumulates_batches_and_resets():
    rng = np.random.default_rng(1)
    t, e, r = rng.integers(0, 30, 200).astype(float), rng.random(200) < 0.5, rng.normal(size=200)
    m = HarrellCIndex()
    for lo in range(0, 200, 64):
        sl = slice(lo, lo + 64)
        m.update(torch.tensor(r[sl]), torch.tensor(t[sl]), torch.tensor(e[sl]))
    assert abs(m.compute().item() - harrell_cindex(t, e, r).item()) < 1e-12
    m.reset()
    m.update(torch.tensor([2.0, 1.0]), torch.tensor([1.0, 3.0]), torch.tensor([True, True]))
    assert m.compute().item() == 1.0
