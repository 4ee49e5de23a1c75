"""The DeepSurv-style probe against pycox/torchtuples (the seed paper's implementation) on fixed data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tte_scale.eval.mlp_probe import SurvMLP, cox_loss, fit_mlp_cox, train_epochs


def _data(n=200, d=6, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    t = rng.exponential(1.0 / np.exp(x[:, 0] - x[:, 1]))
    t = np.ceil(t * 4) if ties else t
    e = rng.random(n) < 0.7
    return x, t.astype(np.float32), e


def _copy_into_mlpvanilla(ours: SurvMLP, d: int, hidden, dropout):
    import torchtuples as tt

    ref = tt.practical.MLPVanilla(d, hidden, 1, batch_norm=True, dropout=dropout, output_bias=False)
    mods = [m for m in ours.net if isinstance(m, (torch.nn.Linear, torch.nn.BatchNorm1d))]
    theirs = [m for m in ref.modules() if isinstance(m, (torch.nn.Linear, torch.nn.BatchNorm1d))]
    assert [type(m) for m in mods] == [type(m) for m in theirs]  # same layers, same order
    for a, b in zip(mods, theirs):
        b.load_state_dict(a.state_dict())
    return ref


def test_architecture_is_mlpvanilla():
    x, _, _ = _data()
    torch.manual_seed(0)
    ours = SurvMLP(6, [256, 256], 0.1)
    ref = _copy_into_mlpvanilla(ours, 6, [256, 256], 0.1)
    ours.eval(), ref.eval()
    xt = torch.from_numpy(x)
    assert torch.allclose(ours(xt), ref(xt)[:, 0], atol=1e-6)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())


def test_loss_is_pycox_cox_ph_loss_without_ties_and_breslow_with_ties():
    from pycox.models.loss import cox_ph_loss

    x, t, e = _data()
    eta = torch.from_numpy(x[:, 0] * 0.7 - x[:, 2])
    tt_, et = torch.from_numpy(t), torch.from_numpy(e)
    assert abs(float(cox_loss(eta, tt_, et)) - float(cox_ph_loss(eta, tt_, et.float()))) < 1e-5
    # with ties: the Breslow partial likelihood, by hand
    x, t, e = _data(ties=True)
    eta = x[:, 0].astype(np.float64)
    brute = -np.mean([eta[i] - np.log(np.exp(eta[t >= t[i]]).sum()) for i in np.flatnonzero(e)])
    got = float(cox_loss(torch.from_numpy(eta), torch.from_numpy(t.astype(np.float64)), torch.from_numpy(e)))
    assert abs(got - brute) < 1e-10


def test_training_matches_pycox_coxph_fit():
    """Full-batch Adam from the same initial weights, no dropout or penalty, float64: the same
    risks after 20 epochs as pycox's CoxPH.fit, and the same Breslow survival curves.

    Up to a constant: the partial likelihood does not change when every log-risk moves by the
    same amount, so the last batch norm's shift has a zero gradient up to rounding, which Adam
    scales up into steps that differ between the two; a constant shift changes no ranking and
    no survival curve (the baseline hazard absorbs it)."""
    import torchtuples as tt
    from pycox.models import CoxPH
    from pycox.models.loss import cox_ph_loss

    x, t, e = _data()
    x, t = x.astype(np.float64), t.astype(np.float64)
    torch.manual_seed(1)
    ours = SurvMLP(6, [32, 32], 0.0).double()
    ref_net = _copy_into_mlpvanilla(ours, 6, [32, 32], None).double()
    # pycox's loss with its eps (1e-7, added to the risk-set sums) at 0: the exact likelihood
    ref = CoxPH(ref_net, tt.optim.Adam(lr=1e-2), loss=lambda log_h, d, ev: cox_ph_loss(log_h, d, ev, eps=0.0))
    ref.fit(x, (t, e.astype(np.float64)), batch_size=len(x), epochs=20, verbose=False, shuffle=False)
    opt = torch.optim.Adam(ours.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    xt, tt_, et = torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(e)
    for _ in range(20):
        train_epochs(ours, opt, xt, tt_, et, l2=0.0, batch_size=len(x), gen=gen)
    ours.eval()
    with torch.no_grad():
        got = ours(xt).numpy()
    want = ref.predict(x)[:, 0]
    assert np.abs((got - got.mean()) - (want - want.mean())).max() < 1e-6

    from tte_scale.eval.mlp_probe import MLPCoxProbe
    from tte_scale.eval.probes import breslow

    probe = MLPCoxProbe(ours, *breslow(torch.from_numpy(got), tt_, et), 20, 20, [])
    ref.compute_baseline_hazards()
    surv_ref = ref.predict_surv_df(x[:10])  # index: the training times, columns: rows
    grid = surv_ref.index.to_numpy()
    ours_s = probe.survival(x[:10], grid).numpy().T
    assert np.abs(ours_s - surv_ref.to_numpy()).max() < 1e-6


def test_early_stopping_keeps_the_best_tuning_epoch_and_the_caller_rng():
    x, t, e = _data(n=300, seed=1)
    xu, tu, eu = _data(n=150, seed=2)
    state = torch.random.get_rng_state()
    kw = dict(hidden=[64, 64], dropout=0.1, lr=3e-3, batch_size=64, max_epochs=60, patience=5, seed=0)
    probe = fit_mlp_cox(x, t, e, xu, tu, eu, 1e-3, **kw)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's random state is untouched
    hist = probe.tuning_loss
    assert probe.best_epoch == int(np.argmin(hist)) + 1
    assert probe.epochs == len(hist) and (probe.epochs == 60 or probe.epochs - probe.best_epoch == 5)
    # the kept weights are those of the best epoch: their tuning loss is the minimum
    loss = float(cox_loss(probe.risk(xu).float(), torch.from_numpy(tu), torch.from_numpy(eu)))
    assert loss == pytest.approx(min(hist), abs=1e-5)
    # reproducible, and it learned the hazard
    again = fit_mlp_cox(x, t, e, xu, tu, eu, 1e-3, **kw)
    assert torch.equal(again.risk(xu), probe.risk(xu))
    from tte_scale.eval.concordance import harrell_cindex

    assert harrell_cindex(tu, eu, probe.risk(xu)).item() > 0.7
