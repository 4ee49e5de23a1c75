"""Fused chunked loss (Triton under TRITON_INTERPRET=1, and the PyTorch chunk path) vs reference,
with and without per-task loss weights."""

from __future__ import annotations

import pytest
import torch

from tte_scale.loss import default_chunk, fused_survival_loss, head_loss_reference, survival_nll_reference

RTOL = 5e-4


def make_case(B, J, K, R, dtype, seed=0, special=True):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, J, R, generator=g).to(dtype)
    w = (torch.randn(K, R, generator=g) / R**0.5).to(dtype)
    b = (torch.randn(J, K, generator=g) * 0.5 - 4).to(dtype)
    starts = torch.cat([torch.zeros(1), torch.rand(J - 1, generator=g).sort().values * 100 + 1])
    time = torch.rand(B, K, generator=g) * 250
    event = torch.rand(B, K, generator=g) < 0.4
    if special:
        event[0] = False  # an all-censored row
        if B > 1:
            event[1] = True  # an all-event row
        time[:, 0] = 0.0  # zero-length follow-up
        time[-1, 1] = starts[min(1, J - 1)]  # exactly on an edge
    return z, w, b, time, event, starts


def run(backend, case, chunk=None):
    z, w, b, time, event, starts = (t.clone() for t in case)
    z.requires_grad_(), w.requires_grad_(), b.requires_grad_()
    loss = fused_survival_loss(z, w, b, time, event, starts, backend=backend, chunk=chunk)
    grads = torch.autograd.grad(loss, (z, w, b))
    return loss.detach(), grads


def assert_matches(got, want, rtol=RTOL):
    torch.testing.assert_close(got[0], want[0], rtol=rtol, atol=1e-7)
    for name, a, b in zip(("dz", "dW", "dbias"), got[1], want[1]):
        scale = b.abs().max().clamp_min(1e-12)
        err = (a.double() - b.double()).abs().max() / scale
        assert err <= rtol, f"{name}: max error {err:.2e} (relative to max |grad|) > {rtol}"


@pytest.mark.parametrize(
    "B,J,K,R,chunk",
    [(3, 4, 37, 5, 16), (1, 1, 7, 3, None), (5, 3, 300, 9, 256), (2, 8, 259, 16, 256)],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_triton_interpreter_matches_reference(B, J, K, R, chunk, dtype):
    case = make_case(B, J, K, R, dtype)
    want = run("reference", case)
    got = run("triton", case, chunk)
    assert got[0].dtype == want[0].dtype
    assert_matches(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_chunk_path_matches_reference(dtype):
    case = make_case(6, 5, 1000, 12, dtype, seed=4)
    assert_matches(run("torch", case, chunk=256), run("reference", case))


def test_auto_backend_on_cpu_uses_pytorch_and_matches():
    case = make_case(4, 3, 50, 8, torch.float32, seed=5)
    assert_matches(run("auto", case), run("reference", case))


def test_all_censored_zero_time_gives_zero_loss_and_grads():
    z, w, b, _, _, starts = make_case(2, 3, 11, 4, torch.float64, special=False)
    time, event = torch.zeros(2, 11), torch.zeros(2, 11, dtype=torch.bool)
    loss, grads = run("triton", (z, w, b, time, event, starts))
    assert loss.item() == 0.0
    assert all(g.abs().max().item() == 0.0 for g in grads)


def test_grad_output_scaling_and_frozen_inputs():
    z, w, b, time, event, starts = make_case(3, 2, 20, 4, torch.float64, seed=2)
    w.requires_grad_()  # z and b frozen: only dW is computed
    (3.0 * fused_survival_loss(z, w, b, time, event, starts, backend="torch", chunk=8)).backward()
    w_ref = w.detach().clone().requires_grad_()
    (3.0 * head_loss_reference(z, w_ref, b, time, event, starts)).backward()
    torch.testing.assert_close(w.grad, w_ref.grad)


def test_no_grad_gives_the_same_loss():
    case = make_case(3, 2, 20, 4, torch.float32, seed=6)
    with torch.no_grad():
        got = fused_survival_loss(*case, backend="torch", chunk=8)
    torch.testing.assert_close(got, head_loss_reference(*case))


def test_shape_errors_are_clear():
    z, w, b, time, event, starts = make_case(2, 3, 11, 4, torch.float32)
    with pytest.raises(ValueError, match="shape mismatch"):
        fused_survival_loss(z, w, b[:, :5], time, event, starts)
    with pytest.raises(ValueError, match="backend"):
        fused_survival_loss(z, w, b, time, event, starts, backend="cuda")


def test_default_chunk():
    assert default_chunk(64, 100) == 100
    assert default_chunk(1024, 65536) == 1024
    assert default_chunk(1 << 20, 8192) == 256


@pytest.mark.gpu
@pytest.mark.parametrize("K", [1000, 8192])
def test_bf16_on_gpu_no_worse_than_eager_bf16(K):
    """Triton bf16 error vs fp64 is within the eager bf16 reference's error + 1e-2."""
    B, J, R = 16, 8, 512
    case64 = [t.cuda() for t in make_case(B, J, K, R, torch.float64, seed=7)]
    exact = run("reference", case64)
    case16 = [t.to(torch.bfloat16) if t.is_floating_point() and i < 3 else t for i, t in enumerate(case64)]
    eager = run("reference", case16)
    fused = run("triton", case16)
    for a, e, x in zip(fused[1], eager[1], exact[1]):
        err_fused = (a.double() - x).abs()
        err_eager = (e.double() - x).abs()
        scale = x.abs().max()
        assert (err_fused <= err_eager + 1e-2 * scale).all()
    assert abs(fused[0].double() - exact[0]) <= abs(eager[0].double() - exact[0]) + 1e-2 * abs(exact[0])


@pytest.mark.gpu
def test_triton_on_gpu_matches_reference_fp32():
    case = [t.cuda() for t in make_case(32, 8, 8192, 512, torch.float32, seed=8)]
    assert_matches(run("triton", case), run("reference", case), rtol=1e-3)


def test_chunked_path_never_materializes_full_logits():
    """Every tensor created by the chunked loss (fwd + bwd) is far smaller than [B, J, K]."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class LargestTensor(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    LargestTensor.largest = max(LargestTensor.largest, t.numel())
            return out

    B, J, K, R = 4, 4, 256, 4
    z, w, b, time, event, starts = make_case(B, J, K, R, torch.float32)
    z.requires_grad_(), w.requires_grad_(), b.requires_grad_()
    with LargestTensor():
        fused_survival_loss(z, w, b, time, event, starts, backend="torch", chunk=32).backward()
    assert 0 < LargestTensor.largest <= B * J * K // 4
    LargestTensor.largest = 0
    with LargestTensor():  # the eager reference does build them (the check can fail)
        head_loss_reference(z, w, b, time, event, starts).backward()
    assert LargestTensor.largest >= B * J * K


# -- autocast (issue 15, 2.2) and the backward's memory (2.12) ------------------------------------


@pytest.mark.parametrize("K,chunk", [(512, 256), (300, 256), (37, 16)])
def test_autocast_bf16_matmuls_fp32_accumulation(K, chunk):
    """Under torch.autocast(bf16) with fp32 inputs: every chunk (the narrower last one too) runs its
    matmuls in bf16, the loss and gradients come back float32 and within bf16 rounding of the exact values."""
    case = make_case(4, 3, K, 64, torch.float32, seed=9)
    exact = run("reference", [t.double() if t.is_floating_point() else t for t in case])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = run("torch", case, chunk=chunk)
    assert got[0].dtype == torch.float32 and all(g.dtype == torch.float32 for g in got[1])
    assert_matches((got[0].double(), got[1]), exact, rtol=2e-2)
    # the matmuls really ran in bf16: fp32 would agree with the exact values to ~1e-6
    assert not all(torch.allclose(a.double(), b, rtol=1e-5, atol=0) for a, b in zip(got[1], exact[1]))


def test_autocast_matches_fp32_run_on_bf16_rounded_operands():
    """The contract, exactly: bf16 operands of the matmuls, float32 everything else."""
    z, w, b, time, event, starts = make_case(3, 2, 45, 16, torch.float32, seed=10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = run("torch", (z, w, b, time, event, starts), chunk=16)
    z16, w16 = z.bfloat16().float(), w.bfloat16().float()
    want_loss = head_loss_reference(z16, w16, b, time, event, starts)
    torch.testing.assert_close(got[0], want_loss, rtol=1e-2, atol=0)


def test_backward_scales_stored_gradients_in_place():
    """No op in backward allocates a gradient-sized tensor: the stored dz, dW, dbias become .grad."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class NewTensors(TorchDispatchMode):
        sizes: list[int] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            inputs = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                    NewTensors.sizes.append(t.numel())
            return out

    z, w, b, time, event, starts = make_case(4, 4, 256, 32, torch.float32)
    z.requires_grad_(), w.requires_grad_(), b.requires_grad_()
    loss = 0.5 * fused_survival_loss(z, w, b, time, event, starts, backend="torch", chunk=64)
    with NewTensors():
        loss.backward()
    assert max(NewTensors.sizes, default=0) <= 1, NewTensors.sizes  # scalars only
    ref = [t.detach().clone().requires_grad_() for t in (z, w, b)]
    (0.5 * head_loss_reference(*ref, time, event, starts)).backward()
    for got, want in zip((z, w, b), ref):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-4, atol=1e-8)


def test_retain_graph_backward_twice_gives_the_same_gradients():
    z, w, b, time, event, starts = make_case(2, 3, 20, 4, torch.float64, seed=11)
    w.requires_grad_()
    loss = 2.0 * fused_survival_loss(z, w, b, time, event, starts, backend="torch", chunk=8)
    (first,) = torch.autograd.grad(loss, w, retain_graph=True)
    (second,) = torch.autograd.grad(loss, w)
    torch.testing.assert_close(first, second, rtol=0, atol=0)


# -- the Triton kernel tiled over samples (issue 15, 2.3) -----------------------------------------


@pytest.mark.parametrize("B", [1, 3, 130])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_triton_sample_tiles_match_torch_and_reference(B, dtype):
    """B=130 spans 17 sample blocks of 8 (the last one of 2 rows): partial bias gradients and
    losses summed in the second pass; odd K with a narrower last chunk."""
    case = make_case(B, 3, 301, 6, dtype, seed=12)
    want = run("reference", case)
    torch_path = run("torch", case, chunk=128)
    got = run("triton", case, chunk=128)
    assert_matches(got, want)
    assert_matches(got, torch_path)


def test_grid_does_not_shrink_as_the_batch_grows():
    """With the default chunk (~2^20 logits), the launch covers an H100's 132 SMs several times at
    every batch size; before the sample axis it fell to 32 programs at B=128 (K=65,536, J=8)."""
    from tte_scale.loss.triton_pe import pe_grid

    J, K = 8, 65536
    programs = {}
    for B in (1, 8, 32, 128, 512):
        g = pe_grid(B, J, default_chunk(B * J, K))
        programs[B] = g[0] * g[1] * g[2]
    assert all(n >= 3 * 132 for n in programs.values()), programs
    assert programs[128] >= programs[8], programs


# ---- per-task loss weights ----
def weights_for(K, dtype, seed=0):
    g = torch.Generator().manual_seed(100 + seed)
    w = torch.rand(K, generator=g, dtype=torch.float64) * 3
    w[0] = 0.0  # a task switched off entirely
    return (w / w.mean()).to(dtype)


def run_w(backend, case, weights, chunk=None):
    z, w, b, time, event, starts = (t.clone() for t in case)
    z.requires_grad_(), w.requires_grad_(), b.requires_grad_()
    loss = fused_survival_loss(z, w, b, time, event, starts, backend=backend, chunk=chunk, task_weights_K=weights)
    return loss.detach(), torch.autograd.grad(loss, (z, w, b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reference_weighted_is_the_weighted_mean_of_per_task_losses(dtype):
    # Independent of the weighted code path: each task's loss alone, then (1/K) sum_k w_k L_k.
    z, w, b, time, event, starts = make_case(4, 3, 9, 5, dtype, seed=1)
    logh = (z @ w.t()).to(torch.float64 if dtype == torch.float64 else torch.float32) + b
    weights = weights_for(9, dtype)
    per_task = torch.stack(
        [
            survival_nll_reference(logh[:, :, k : k + 1], time[:, k : k + 1], event[:, k : k + 1], starts)
            for k in range(9)
        ]
    )
    want = (weights.to(per_task.dtype) * per_task).sum() / 9
    got = survival_nll_reference(logh, time, event, starts, weights)
    torch.testing.assert_close(got, want, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=1e-9)
    assert not torch.allclose(got, survival_nll_reference(logh, time, event, starts))  # the weights matter


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("K,chunk", [(37, 16), (48, 16), (300, 256), (512, 256)])  # K not / multiple of chunk
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_weighted_matches_reference(backend, K, chunk, dtype):
    case = make_case(3, 4, K, 6, dtype, seed=K)
    weights = weights_for(K, dtype, seed=K)
    want = run_w("reference", case, weights)
    got = run_w(backend, case, weights, chunk)
    assert got[0].dtype == want[0].dtype
    assert_matches(got, want)
    unweighted = run_w("reference", case, None)
    assert not torch.allclose(got[0], unweighted[0])


@pytest.mark.parametrize("backend", ["reference", "torch", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_all_ones_weights_equal_unweighted_bitwise(backend, dtype):
    case = make_case(5, 3, 300, 8, dtype, seed=3)
    a = run_w(backend, case, None, chunk=None if backend == "reference" else 128)
    b = run_w(backend, case, torch.ones(300, dtype=dtype), chunk=None if backend == "reference" else 128)
    assert torch.equal(a[0], b[0])
    for ga, gb in zip(a[1], b[1]):
        assert torch.equal(ga, gb)


def test_weights_get_no_gradient_and_bad_shape_is_refused():
    z, w, b, time, event, starts = make_case(2, 3, 11, 4, torch.float32, seed=2)
    weights = torch.ones(11, requires_grad=True)
    z.requires_grad_()
    fused_survival_loss(z, w, b, time, event, starts, backend="torch", task_weights_K=weights).backward()
    assert weights.grad is None and z.grad is not None
    with pytest.raises(ValueError, match="task_weights_K"):
        fused_survival_loss(z, w, b, time, event, starts, task_weights_K=torch.ones(10))


def test_head_loss_reference_passes_weights():
    z, w, b, time, event, starts = make_case(2, 3, 7, 4, torch.float64, seed=8)
    weights = weights_for(7, torch.float64)
    logh = z @ w.t() + b
    torch.testing.assert_close(
        head_loss_reference(z, w, b, time, event, starts, weights),
        survival_nll_reference(logh, time, event, starts, weights),
    )


@pytest.mark.gpu
def test_triton_on_gpu_weighted_matches_reference_fp32():
    case = [t.cuda() for t in make_case(32, 8, 8192, 512, torch.float32, seed=9)]
    weights = weights_for(8192, torch.float32, seed=9).cuda()
    assert_matches(run_w("triton", case, weights), run_w("reference", case, weights), rtol=1e-3)
    a, b = run_w("triton", case, None), run_w("triton", case, torch.ones(8192, device="cuda"))
    assert torch.equal(a[0], b[0]) and all(torch.equal(x, y) for x, y in zip(a[1], b[1]))
