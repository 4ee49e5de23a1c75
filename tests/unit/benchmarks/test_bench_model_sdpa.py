"""bench_model names the SDPA backend that actually ran (issue 15 section 1): read from the aten
op the profiler records, not from what the backends allow."""

from __future__ import annotations

import torch

from tte_scale.benchmarks.bench_model import build_ours, make_step, sdpa_backend_used, sdpa_backends


def test_backend_names_from_aten_ops():
    names = ["aten::linear", "aten::_scaled_dot_product_flash_attention", "aten::_scaled_dot_product_attention_math"]
    assert sdpa_backends(names) == ["flash", "math"]
    assert sdpa_backends(["aten::_scaled_dot_product_efficient_attention"]) == ["efficient"]
    assert sdpa_backends(["aten::_scaled_dot_product_cudnn_attention"]) == ["cudnn"]
    assert sdpa_backends(["aten::mm"]) == []


def test_a_real_step_reports_the_backend_it_ran():
    model = build_ours("vit3d_tiny", (16, 32, 32), False, "cpu")
    step = make_step(model, False, torch.randn(1, 1, 16, 32, 32), None, "cpu")
    got = sdpa_backend_used(step)
    assert got and set(got) <= {"flash (cpu)", "math", "efficient", "flash", "cudnn"}
    # Forcing the math backend is seen as math: the profiler reports what ran.
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        assert sdpa_backend_used(step) == ["math"]
