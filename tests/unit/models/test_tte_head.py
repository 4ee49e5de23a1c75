"""TTE head and TTEModel: log-hazard shapes, fused loss == reference, bias prefit, HU scaling."""

from __future__ import annotations

import math

import pytest
import torch

from tte_scale.data import hu_to_float
from tte_scale.errors import InputError
from tte_scale.loss import empirical_log_hazard, survival_nll_reference
from tte_scale.models import TTEHead, TTEModel, VisionTransformer3D

STARTS = torch.tensor([0.0, 30.0, 180.0, 365.0])


def labels(N, K, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(N, K, generator=g) * 800, torch.rand(N, K, generator=g) < 0.3


def test_log_hazard_shape_and_loss_matches_reference():
    torch.manual_seed(0)
    head = TTEHead(in_features=24, num_bins=4, num_tasks=53, rank=8, loss_chunk=16)
    h = torch.randn(5, 24, requires_grad=True)
    time, event = labels(5, 53)
    logh = head.log_hazard(h)
    assert logh.shape == (5, 4, 53) and logh.dtype == torch.float32
    ref = survival_nll_reference(logh, time, event, STARTS)
    (g_ref,) = torch.autograd.grad(ref, h)
    loss = head.loss(h, time, event, STARTS)
    (g,) = torch.autograd.grad(loss, h)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-8)


def test_triton_backend_through_the_head():
    torch.manual_seed(0)
    head = TTEHead(in_features=12, num_bins=4, num_tasks=19, rank=4, loss_backend="triton")
    h = torch.randn(3, 12)
    time, event = labels(3, 19, seed=1)
    loss = head(h, time, event, STARTS)
    loss.backward()
    ref = survival_nll_reference(head.log_hazard(h), time, event, STARTS)
    torch.testing.assert_close(loss, ref, rtol=5e-4, atol=1e-6)
    assert head.task_weight.grad is not None and head.bias.grad.shape == (4, 19)


def test_init_bias_from_labels():
    head = TTEHead(in_features=8, num_bins=4, num_tasks=6, rank=4)
    time, event = labels(100, 6, seed=2)
    event[:, 5] = False  # a task that never happens gets the floor
    got = head.init_bias_from_labels(time, event, STARTS, floor=1e-5)
    torch.testing.assert_close(head.bias_JK().detach(), empirical_log_hazard(time, event, STARTS, floor=1e-5))
    assert torch.allclose(got[:, 5], torch.full((4,), math.log(1e-5)))
    assert torch.isfinite(head.bias_JK()).all() and head.log_hazard0.dtype == torch.float32


def test_init_bias_rejects_bad_labels():
    head = TTEHead(in_features=8, num_bins=4, num_tasks=6, rank=4)
    time, event = labels(10, 6)
    time[3, 2] = -1.0
    time[7, 0] = float("nan")
    with pytest.raises(InputError, match=r"rows \[3, 7\]"):
        head.init_bias_from_labels(time, event, STARTS)
    with pytest.raises(InputError, match="must both be"):
        head.init_bias_from_labels(time[:, :5], event[:, :5], STARTS)
    with pytest.raises(InputError, match="bin_starts"):
        head.init_bias_from_labels(time.abs().nan_to_num(), event, STARTS[:3])


def test_tte_model_end_to_end_step():
    torch.manual_seed(0)
    enc = VisionTransformer3D(img_size=(32, 32, 32), embed_dim=24, depth=1, num_heads=2)
    model = TTEModel(enc, TTEHead(24, num_bins=4, num_tasks=10, rank=8))
    vol = hu_to_float(torch.randint(-1024, 3000, (2, 1, 32, 32, 32), dtype=torch.int16))
    time, event = labels(2, 10)
    model.head.init_bias_from_labels(time, event, STARTS)
    loss = model(vol, time, event, STARTS)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())
    assert model.embed(vol).shape == (2, 24)
    assert model.flops_per_sample() > enc.flops_per_sample()
    with pytest.raises(ValueError, match="features"):
        TTEModel(enc, TTEHead(25, num_bins=4, num_tasks=10, rank=8))
