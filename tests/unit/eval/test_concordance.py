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
        assert (k.concordant[b].item(), k.tied_risk[b].item(), k.comparable[b].item()) == brute_harrell(
            t[idx], e[idx], r[idx]
        )


def _peer_datasets():
    from lifelines.datasets import load_rossi
    from sksurv.datasets import load_gbsg2, load_veterans_lung_cancer, load_whas500

    rossi = load_rossi()
    # integer-valued risks on purpose: many tied risks and tied times
    yield (
        "rossi",
        rossi["week"].to_numpy(float),
        rossi["arrest"].to_numpy(bool),
        (rossi["age"] + 3 * rossi["prio"]).to_numpy(float),
    )
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
    import pandas as pd
    from pycox.evaluation import EvalSurv

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


# ----------------------------------------------------------------------------- at a horizon
def brute_truncated(t, e, r, tau, anchor_w=None):
    """Pairs anchored by events before tau, weighted by the anchor's weight."""
    num = den = 0.0
    for i in range(len(t)):
        if not e[i] or t[i] >= tau:
            continue
        a = 1.0 if anchor_w is None else anchor_w[i]
        for j in range(len(t)):
            if t[j] > t[i] or (t[j] == t[i] and not e[j]):
                den += a
                num += a * ((r[i] > r[j]) + 0.5 * (r[i] == r[j]))
    return num / den if den else float("nan")


@settings(max_examples=150, deadline=None)
@given(survival_data(), st.integers(0, 6))
def test_truncated_harrell_equals_brute_force(data, tau):
    t, e, r = data
    got = harrell_cindex(t, e, r, tau=float(tau)).item()
    ref = brute_truncated(t, e, r, tau)
    assert (np.isnan(got) and np.isnan(ref)) or abs(got - ref) < 1e-12


def _ipcw_cases():
    from sksurv.datasets import load_gbsg2, load_whas500

    x, y = load_whas500()
    yield "whas500", y, x["age"].to_numpy(float) + 0.1 * x["bmi"].to_numpy(float), 365.0
    x, y = load_gbsg2()
    yield "gbsg2", y, (x["pnodes"] - 0.01 * x["progrec"]).to_numpy(float), 1000.0


@pytest.mark.parametrize("name,y,risk,tau", list(_ipcw_cases()), ids=lambda v: v if isinstance(v, str) else "")
def test_truncated_harrell_and_uno_match_sksurv_ipcw(name, y, risk, tau):
    """Reference: sksurv's concordance_index_ipcw. With a training set whose rows all had the
    event, its censoring weights are all 1: that is Harrell's C at tau. With the real training
    half it is Uno's C."""
    from sksurv.metrics import concordance_index_ipcw

    from tte_scale.eval.concordance import uno_cindex
    from tte_scale.eval.survival import censoring_km

    time, event = y[y.dtype.names[1]].astype(float), y[y.dtype.names[0]].astype(bool)
    train, test = np.arange(len(y)) % 2 == 0, np.arange(len(y)) % 2 == 1
    y_tr, y_te = y[train], y[test]
    all_events = y_tr.copy()
    all_events[y.dtype.names[0]] = True
    ref_h = concordance_index_ipcw(all_events, y_te, risk[test], tau=tau)[0]
    assert abs(harrell_cindex(time[test], event[test], risk[test], tau=tau).item() - ref_h) < 1e-12
    ref_u = concordance_index_ipcw(y_tr, y_te, risk[test], tau=tau)[0]
    g = censoring_km(time[train], event[train])
    assert abs(uno_cindex(time[test], event[test], risk[test], g, tau=tau).item() - ref_u) < 1e-12
    # without truncation the horizon-free C differs: the horizon matters
    assert abs(harrell_cindex(time[test], event[test], risk[test]).item() - ref_h) > 1e-4


def test_truncated_harrell_is_harrell_of_administratively_censored_data():
    """lifelines on (min(t, tau), event and t < tau) gives the same number."""
    from lifelines.utils import concordance_index

    rng = np.random.default_rng(3)
    t, e, r = rng.integers(1, 400, 300).astype(float), rng.random(300) < 0.6, rng.normal(size=300)
    for tau in (30.0, 180.0, 365.0):
        ref = concordance_index(np.minimum(t, tau), -r, e & (t < tau))
        assert abs(harrell_cindex(t, e, r, tau=tau).item() - ref) < 1e-12


@settings(max_examples=40, deadline=None)
@given(survival_data(), st.integers(0, 2**31 - 1))
def test_uno_weights_are_multiplicities_and_anchor_weights(data, seed):
    from tte_scale.eval.concordance import uno_cindex
    from tte_scale.eval.survival import StepFunction

    t, e, r = data
    # a censoring survival that is positive everywhere: 1 / G^2 are the anchor weights
    g = StepFunction(torch.tensor([1.0, 3.0], dtype=torch.float64), torch.tensor([0.8, 0.5], dtype=torch.float64))
    tau = 4.0
    aw = 1.0 / g(t).numpy() ** 2
    assert _close(uno_cindex(t, e, r, g, tau=tau).item(), brute_truncated(t, e, r, tau, aw))
    w = np.random.default_rng(seed).integers(0, 4, (3, len(t)))
    wc = uno_cindex(t, e, r, g, torch.from_numpy(w), tau=tau)
    for b in range(3):
        idx = np.repeat(np.arange(len(t)), w[b])
        assert _close(wc[b].item(), brute_truncated(t[idx], e[idx], r[idx], tau, aw[idx]))


def _close(a, b):
    return (np.isnan(a) and np.isnan(b)) or abs(a - b) < 1e-12


def test_uno_refuses_a_zero_censoring_survival_before_the_horizon():
    from tte_scale.eval.concordance import uno_cindex
    from tte_scale.eval.survival import censoring_km

    g = censoring_km([1.0, 2.0], [False, False])  # everyone censored by t = 2: G(2) = 0
    with pytest.raises(ValueError, match="G\\(t\\) is 0"):
        uno_cindex([2.0, 3.0], [True, False], [1.0, 0.0], g, tau=5.0)
    assert uno_cindex([2.0, 3.0], [True, False], [1.0, 0.0], g, tau=1.5).isnan()
