"""State that a bf16 cast must not round stays float32 (#15 2.11): the module-level mechanism."""

from __future__ import annotations

import math

import pytest
import torch

from tte_scale.config import load_config
from tte_scale.train import PretrainConfig
from tte_scale.train.ds_config import build_ds_config
from tte_scale.train.parts import build_model

SMALL = ["model.img_size=[8,16,16]", "model.patch_size=[4,8,8]", "model.embed_dim=16", "model.depth=1",
         "model.num_heads=2", "head.rank=4"]  # fmt: skip
STARTS = torch.tensor([0.0, 30.0, 365.0])


def _model():
    torch.manual_seed(0)
    model = build_model(load_config(PretrainConfig, None, SMALL), num_tasks=5, num_bins=3)
    g = torch.Generator().manual_seed(1)
    time, event = torch.rand(64, 5, generator=g) * 800, torch.rand(64, 5, generator=g) < 0.3
    model.head.init_bias_from_labels(time, event, STARTS, floor=1e-5)
    model.train()
    model(torch.rand(4, 1, 8, 16, 16), time[:4], event[:4], STARTS)  # running statistics move off 0/1
    return model, time, event


def test_bfloat16_cast_keeps_statistics_and_prefit_fp32():
    model, time, event = _model()
    prefit = model.head.bias_JK().detach().clone()
    stats = model.head.feature_norm.running_var.clone()
    assert prefit.min() < -8  # |logh| ~ 10, where bf16 steps by 0.06
    model.bfloat16()
    head = model.head
    assert next(model.encoder.parameters()).dtype == torch.bfloat16 and head.bias.dtype == torch.bfloat16
    assert head.log_hazard0.dtype == head.feature_norm.running_mean.dtype == torch.float32
    assert torch.equal(head.bias_JK(), prefit) and torch.equal(head.feature_norm.running_var, stats)
    # what the cast used to do to the prefit: a rounding error of up to half a bf16 step
    assert (prefit.bfloat16().float() - prefit).abs().max() > 0.005
    # a bf16 model still trains: float32 loss, bf16 gradients, statistics updated in float32
    loss = model(torch.rand(4, 1, 8, 16, 16).bfloat16(), time[:4], event[:4], STARTS)
    loss.backward()
    assert loss.dtype == torch.float32 and math.isfinite(loss.item())
    assert head.bias.grad.dtype == torch.bfloat16 and head.feature_norm.running_var.dtype == torch.float32
    assert not torch.equal(head.feature_norm.running_var, stats)


def test_moving_the_model_keeps_fp32_buffers_and_double_still_casts():
    model, *_ = _model()
    model.to(torch.float16)
    assert model.head.log_hazard0.dtype == torch.float32
    model.double()  # not a 16-bit cast: allowed
    assert model.head.log_hazard0.dtype == torch.float64


def test_deepspeed_keep_in_fp32_rule_names_the_buffers():
    """DeepSpeed casts buffers directly (``b.data = ...``) when data_types.buffer_dtype is set; its
    keep-in-fp32 rule reads the modules' _keep_in_fp32_modules_strict."""
    keep = pytest.importorskip("deepspeed.runtime.keep_in_fp32")
    model, *_ = _model()
    pattern = keep.keep_in_fp32_pattern(model, None, torch.bfloat16)
    kept = {id(b) for b in keep.buffers_to_keep_in_fp32(model, pattern)}
    head = model.head
    assert kept == {id(head.log_hazard0), id(head.feature_norm.running_mean), id(head.feature_norm.running_var)}


@pytest.mark.parametrize(("stage", "accum", "want"), [(2, 2, "fp32"), (1, 4, "fp32"), (2, 1, None), (0, 2, None)])
def test_ds_config_accumulates_bf16_gradients_in_fp32(stage, accum, want):
    cfg = load_config(PretrainConfig, None, [f"zero.stage={stage}", f"optim.grad_accum_steps={accum}"])
    ds = build_ds_config(cfg, 1, "cuda")
    assert ds["bf16"]["enabled"] and ds.get("data_types", {}).get("grad_accum_dtype") == want
    assert "data_types" not in build_ds_config(cfg, 1, "cpu")  # fp32 training: nothing to accumulate better
