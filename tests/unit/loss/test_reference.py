"""The reference survival loss: hand-computed values, pycox's PC-Hazard NLL, gradcheck, prefit."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tte_scale.loss import (
    empirical_log_hazard,
    event_in_bin,
    fused_survival_loss,
    survival_nll_reference,
    time_at_risk,
)

STARTS = torch.tensor([0.0, 10.0, 30.0])  # bins [0,10), [10,30), [30,inf)


def test_time_at_risk_and_event_bin_by_hand():
    time = torch.tensor([[5.0, 10.0, 45.0, 0.0]])
    event = torch.tensor([[True, True, False, True]])
    r = time_at_risk(time, STARTS)[0]  # [J, K]
    torch.testing.assert_close(r, torch.tensor([[5.0, 10.0, 10.0, 0.0], [0.0, 0.0, 20.0, 0.0], [0.0, 0.0, 15.0, 0.0]]))
    d = event_in_bin(time, event, STARTS)[0]
    # An event exactly at an edge (t=10) belongs to the bin that starts there; t=0 to bin 0.
    expected = torch.tensor([[True, False, False, True], [False, True, False, False], [False, False, False, False]])
    assert torch.equal(d, expected)


def test_loss_by_hand():
    logh = torch.tensor([[[math.log(0.1)], [math.log(0.2)], [0.0]]])  # B=1, J=3, K=1
    time, event = torch.tensor([[15.0]]), torch.tensor([[True]])
    # exp(logh) * r: 0.1*10 + 0.2*5 = 2; minus the log-hazard of the event bin (bin 1).
    expected = 2.0 - math.log(0.2)
    assert survival_nll_reference(logh, time, event, STARTS).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reference_equals_pycox_pc_hazard(seed):
    from pycox.models.loss import nll_pc_hazard_loss

    g = torch.Generator().manual_seed(seed)
    n, m = 37, 6
    phi = torch.randn(n, m, generator=g, dtype=torch.float64) * 2
    idx = torch.randint(0, m, (n,), generator=g)
    # interval_frac in (0, 1): pycox's time is idx + frac inside interval idx; frac == 1 would
    # sit on the next edge, which our [start, next) bins assign to the next bin.
    frac = torch.rand(n, generator=g, dtype=torch.float64) * 0.98 + 0.01
    events = (torch.rand(n, generator=g) < 0.6).double()
    expected = nll_pc_hazard_loss(phi, idx, events, frac, reduction="mean")

    # Map: unit-width bins, log-hazard = log(softplus(phi)), time in interval units, K = 1.
    logh = torch.log(F.softplus(phi))[:, :, None]
    time = (idx.double() + frac)[:, None]
    starts = torch.arange(m, dtype=torch.float64)
    ours = survival_nll_reference(logh, time, events.bool()[:, None], starts)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-12)


def test_dtype_is_fp32_for_half_inputs():
    logh = torch.zeros(2, 3, 4, dtype=torch.bfloat16)
    out = survival_nll_reference(logh, torch.ones(2, 4), torch.zeros(2, 4, dtype=torch.bool), STARTS)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "task_weights"])
@pytest.mark.parametrize("backend", ["reference", "torch", "triton"])
def test_gradcheck_fp64(backend, weighted):
    g = torch.Generator().manual_seed(0)
    B, J, K, R = 3, 3, 5, 4
    z = torch.randn(B, J, R, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(K, R, dtype=torch.float64, generator=g, requires_grad=True)
    b = (torch.randn(J, K, dtype=torch.float64, generator=g) - 3).requires_grad_()
    time = torch.rand(B, K, generator=g, dtype=torch.float64) * 50
    event = torch.rand(B, K, generator=g) < 0.5
    starts = STARTS.double()
    weights = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0], dtype=torch.float64) if weighted else None
    fn = lambda z, w, b: fused_survival_loss(  # noqa: E731
        z, w, b, time, event, starts, backend=backend, chunk=2, task_weights_K=weights
    )
    # fast_mode (random projections) keeps the interpreted Triton kernel to a few calls.
    assert torch.autograd.gradcheck(fn, (z, w, b), fast_mode=backend == "triton")


def test_empirical_log_hazard_by_hand():
    # Task 0: two samples, events at 5 (bin 0) and censored at 40; task 1 never happens.
    time = torch.tensor([[5.0, 40.0], [40.0, 40.0]])
    event = torch.tensor([[True, False], [False, False]])
    lh = empirical_log_hazard(time, event, STARTS, floor=1e-4)
    # bin 0: 1 event / (5 + 10) days; bins 1, 2 of task 0: no events -> floor; task 1 -> floor.
    expected = torch.tensor([[math.log(1 / 15), math.log(1e-4)], [math.log(1e-4)] * 2, [math.log(1e-4)] * 2])
    torch.testing.assert_close(lh, expected.float())


def test_prefit_bias_is_the_loss_minimizer():
    """With no features, the empirical log hazard zeroes the bias gradient wherever it is defined."""
    g = torch.Generator().manual_seed(3)
    N, J, K = 200, 3, 7
    time = torch.rand(N, K, generator=g, dtype=torch.float64) * 60
    event = torch.rand(N, K, generator=g) < 0.4
    bias = empirical_log_hazard(time, event, STARTS, floor=1e-8).double().requires_grad_()
    loss = survival_nll_reference(bias.expand(N, J, K), time, event, STARTS)
    (grad,) = torch.autograd.grad(loss, bias)
    assert grad.abs().max().item() < 1e-6


def test_empirical_log_hazard_rejects_bad_floor():
    with pytest.raises(ValueError, match="floor"):
        empirical_log_hazard(torch.ones(2, 2), torch.ones(2, 2, dtype=torch.bool), STARTS, floor=0.0)


def test_empirical_log_hazard_chunks_and_bins_match_the_dense_definition():
    """The chunked, per-bin form equals the dense r_NJK / d_NJK sums, including events exactly at
    a bin start, times before the first start and a chunk that does not divide N."""
    g = torch.Generator().manual_seed(5)
    N, K = 37, 11
    time = (torch.rand(N, K, generator=g) * 60).round() - 2  # integers, some on an edge, some < 0
    event = torch.rand(N, K, generator=g) < 0.5
    starts = torch.tensor([1.0, 10.0, 30.0])
    t = time.double()
    exposure = time_at_risk(t, starts.double()).sum(0)
    events = event_in_bin(t, event, starts.double()).sum(0).double()
    dense = torch.where(exposure > 0, events / exposure.clamp_min(1e-300), 0.0).clamp_min(1e-4).log().float()
    for chunk in (None, 1, 5, N):
        torch.testing.assert_close(empirical_log_hazard(time, event, starts, floor=1e-4, chunk=chunk), dense)


def test_empirical_log_hazard_never_builds_rows_x_bins_x_tasks(tmp_path):
    """Issue 17: at K = 8,192 the prefit held [4096, J, K] float64 temporaries (6.1 GiB peak RSS
    for the default 20,000 rows). 1,024 rows x 8 bins x 8,192 tasks now stay within a few times
    the 40 MB of inputs (the dense form needs ~0.5 GB per temporary)."""
    import subprocess
    import sys

    code = """
import resource, torch
from tte_scale.loss import empirical_log_hazard
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
t = torch.rand(1024, 8192, generator=g) * 3000
e = torch.rand(1024, 8192, generator=g) < 0.1
starts = torch.tensor([0, 30, 90, 180, 365, 730, 1095, 1825.0])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
empirical_log_hazard(t, e, starts)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    grew_mib = int(res.stdout.split()[-1])
    assert grew_mib < 150, f"prefit peak RSS grew by {grew_mib} MiB"
