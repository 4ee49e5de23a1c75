"""Fused TTE head tail + survival loss: chunked over tasks, gradients computed in the forward.

Legend: B samples, J time bins, K tasks, R head rank, M = B*J rows, Kc tasks per chunk.

``fused_survival_loss(z_BJR, weight_KR, bias_JK, time_BK, event_BK, bin_starts_J, task_weights_K=...)``
equals ``head_loss_reference`` with the same optional per-task loss weights (``logh = z @ W^T +
bias`` then the piecewise-exponential NLL, see
``reference.py`` for the math and the ``1/(B*K)`` normalization) but never holds the
``[B, J, K]`` log-hazards or their gradient in full. As in Liger-Kernel's fused linear
cross-entropy, for each chunk of Kc tasks it

1. computes ``logits_MKc = z_MR @ W[chunk]^T`` with a regular (cuBLAS) matmul,
2. runs one pointwise pass (Triton on CUDA, PyTorch elsewhere) that adds the bias, derives
   time at risk / event bin from the compact labels, accumulates the loss and overwrites the
   chunk with ``dL/dlogh``,
3. turns that into ``dW[chunk] = g^T z`` (written once, no accumulation), ``dz += g W[chunk]``
   (float32 accumulator) and ``dbias[:, chunk]``.

The extra memory is one ``[M, Kc]`` chunk plus ``[M, R]`` accumulators instead of several
``[B, J, K]`` tensors. Backward only scales the stored gradients by the incoming scalar.

**DeepSpeed ZeRO-3**: this function reads ``weight_KR`` (and ``bias_JK``) directly, so they
must be the gathered, full parameters: call it inside the forward of the module that *owns*
them as direct parameters (``TTEHead`` does), because ZeRO-3 gathers a module's parameters in
its forward pre-hook and releases them after. The returned ``dW`` has the full ``[K, R]``
shape; ZeRO-3's gradient hooks reduce-scatter it into the partitions like any other gradient.
Backward does not read the weight, so it does not matter whether it is still gathered then.
"""

from __future__ import annotations

from typing import Literal

import torch

from tte_scale.loss.reference import bin_widths, head_loss_reference
from tte_scale.loss.triton_pe import HAVE_TRITON, pe_nll_chunk_triton

__all__ = ["fused_survival_loss", "pe_nll_chunk_torch", "default_chunk"]

Backend = Literal["auto", "triton", "torch", "reference"]

#: Target number of elements in one logits chunk (4 MiB in fp32): big enough for efficient
#: matmuls, small next to the full [B, J, K] tensors (e.g. 8.4 M elements at B=128, K=8192).
CHUNK_ELEMENTS = 1 << 20


def default_chunk(M: int, K: int, elements: int = CHUNK_ELEMENTS) -> int:
    """Tasks per chunk: about ``elements / M``, a multiple of 256, between 256 and K."""
    kc = max(256, (elements // max(M, 1)) // 256 * 256)
    return min(kc, K)


def pe_nll_chunk_torch(
    logits_MK: torch.Tensor,
    bias_JK: torch.Tensor,
    time_BK: torch.Tensor,
    event_BK: torch.Tensor,
    bin_starts_J: torch.Tensor,
    inv_norm: float,
    dbias_JK: torch.Tensor,
    weights_K: torch.Tensor | None = None,
) -> torch.Tensor:
    """PyTorch twin of ``pe_nll_chunk_triton`` (same contract): for CPU and as a fallback."""
    acc = dbias_JK.dtype
    M, Kc = logits_MK.shape
    J = bin_starts_J.numel()
    B = M // J
    starts = bin_starts_J.to(acc)
    ends = starts + bin_widths(starts)
    logh = logits_MK.view(B, J, Kc).to(acc) + bias_JK.to(acc)
    t = time_BK.to(acc)[:, None, :]
    r = torch.minimum((t - starts[:, None]).clamp_min(0), (ends - starts)[:, None])
    d = (event_BK.bool()[:, None, :] & (t >= starts[:, None]) & (t < ends[:, None])).to(acc)
    er = torch.exp(logh) * r
    nll = er - d * logh
    g = (er - d) * inv_norm
    if weights_K is not None:  # x * 1.0 is exact: all-ones weights give the unweighted loss bitwise
        w = weights_K.to(acc)
        nll, g = nll * w, g * w
    loss = nll.sum()
    dbias_JK.copy_(g.sum(0))
    logits_MK.copy_(g.view(M, Kc))
    return loss


def _pick_backend(backend: Backend, device: torch.device) -> str:
    if backend == "auto":
        return "triton" if (device.type == "cuda" and HAVE_TRITON) else "torch"
    if backend not in ("triton", "torch", "reference"):
        raise ValueError(f"backend must be auto, triton, torch or reference; got {backend!r}")
    return backend


def _matmul_dtype(z: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype of the chunk matmuls: the inputs' promoted dtype, or the autocast dtype when
    autocast is on for their device and they are float32 (as autocast treats ``mm``)."""
    dtype = torch.promote_types(z.dtype, weight.dtype)
    device_type = z.device.type
    if dtype == torch.float32 and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return dtype


class _FusedSurvivalLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z_BJR, weight_KR, bias_JK, time_BK, event_BK, bin_starts_J, weights_K, backend, chunk, need_grad):
        # Autocast contract: the matmuls run in the autocast dtype (bf16/fp16) when autocast is on
        # and the inputs are float32; the pointwise pass, the loss and dz / dbias accumulate in
        # float32, and every gradient comes back in its input's dtype. Autocast itself is off in
        # here so that no op is recast behind our back (``mm(out=...)`` must see the dtypes we chose).
        dtype = _matmul_dtype(z_BJR, weight_KR)
        with torch.autocast(z_BJR.device.type, enabled=False):
            loss, grads = _fused_forward(
                z_BJR, weight_KR, bias_JK, time_BK, event_BK, bin_starts_J, weights_K, backend, chunk, need_grad, dtype
            )
        # Held on ctx rather than save_for_backward: they are neither inputs nor outputs, and
        # backward scales them in place and hands them over when the graph is freed after it.
        ctx.grads = grads
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        if _keeps_graph():  # retain_graph=True: another backward will need them unscaled
            return (*(None if g is None else g * grad_loss.to(g.dtype) for g in ctx.grads), *[None] * 7)
        grads, ctx.grads = ctx.grads, None
        # In place: the stored gradients are used nowhere else, and returning them lets
        # AccumulateGrad take them as .grad: no second [K, R] / [B, J, R] copy at the backward.
        return (*(None if g is None else g.mul_(grad_loss.to(g.dtype)) for g in grads), *[None] * 7)


def _keeps_graph() -> bool:
    """Whether the running backward keeps the graph (retain_graph); True when torch cannot say."""
    probe = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)
    return True if probe is None else bool(probe())


def _fused_forward(
    z_BJR, weight_KR, bias_JK, time_BK, event_BK, bin_starts_J, weights_K, backend, chunk, need_grad, dtype
):
    """Loss and (dz, dW, dbias) for a unit incoming gradient, each in its input's dtype."""
    B, J, R = z_BJR.shape
    K = weight_KR.shape[0]
    M = B * J
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    device = z_BJR.device
    z_MR = z_BJR.reshape(M, R).to(dtype)
    weight = weight_KR.to(dtype)
    starts = bin_starts_J.to(device=device, dtype=acc).contiguous()
    time_BK = time_BK.contiguous()
    event_BK = event_BK.contiguous()
    bias_JK = bias_JK.contiguous()
    if weights_K is not None:  # constants of the loss (no gradient), in the accumulation dtype
        weights_K = weights_K.detach().to(device=device, dtype=acc).contiguous()
    inv_norm = 1.0 / (B * K)
    kc = chunk or default_chunk(M, K)
    pointwise = pe_nll_chunk_triton if backend == "triton" else pe_nll_chunk_torch

    loss = torch.zeros((), dtype=acc, device=device)
    dz_MR = torch.zeros(M, R, dtype=acc, device=device) if need_grad[0] else None
    # dW in the weight's own dtype: chunks are written once (no accumulation), so a matmul output
    # of another dtype (autocast) is converted chunk by chunk rather than the whole [K, R] at the end.
    dW_KR = torch.empty(K, R, dtype=weight_KR.dtype, device=device) if need_grad[1] else None
    dbias_JK = torch.empty(J, K, dtype=acc, device=device)
    buf = torch.empty(M, kc, dtype=dtype, device=device)
    for k0 in range(0, K, kc):
        k1 = min(k0 + kc, K)
        w_c = weight[k0:k1]
        logits = buf[:, : k1 - k0] if k1 - k0 < kc else buf
        if logits.is_contiguous():
            torch.mm(z_MR, w_c.t(), out=logits)
        else:  # last, narrower chunk: a fresh contiguous tensor
            logits = z_MR @ w_c.t()
        loss += pointwise(
            logits,
            bias_JK[:, k0:k1],
            time_BK[:, k0:k1],
            event_BK[:, k0:k1],
            starts,
            inv_norm,
            dbias_JK[:, k0:k1],
            None if weights_K is None else weights_K[k0:k1],
        )
        g = logits  # now holds dL/dlogh for the chunk
        if dz_MR is not None:
            dz_MR += (g @ w_c).to(acc)
        if dW_KR is not None:
            if dW_KR.dtype == dtype:
                torch.mm(g.t(), z_MR, out=dW_KR[k0:k1])
            else:
                dW_KR[k0:k1] = g.t() @ z_MR
    loss = loss * inv_norm
    grads = (
        dz_MR.view(B, J, R).to(z_BJR.dtype) if dz_MR is not None else None,
        dW_KR,
        dbias_JK.to(bias_JK.dtype) if need_grad[2] else None,
    )
    return loss, grads


def fused_survival_loss(
    z_BJR: torch.Tensor,
    weight_KR: torch.Tensor,
    bias_JK: torch.Tensor,
    time_BK: torch.Tensor,
    event_BK: torch.Tensor,
    bin_starts_J: torch.Tensor,
    *,
    backend: Backend = "auto",
    chunk: int | None = None,
    task_weights_K: torch.Tensor | None = None,
) -> torch.Tensor:
    """Loss of ``logh = z @ W^T + bias`` against compact labels, without materializing logh.

    Args:
        z_BJR: per-bin head vectors after the norm, ``[B, J, R]``.
        weight_KR: task embeddings ``[K, R]`` (full, gathered parameter under ZeRO-3).
        bias_JK: per-(bin, task) bias ``[J, K]``.
        time_BK, event_BK: compact labels (days; bool or 0/1).
        bin_starts_J: bin starts in days (``[0, c1, ...]``, last bin open-ended).
        backend: ``auto`` (Triton on CUDA, chunked PyTorch elsewhere), ``triton`` (also runs
            on CPU under ``TRITON_INTERPRET=1``), ``torch``, or ``reference`` (eager, full).
        chunk: tasks per chunk (default: about 1 M logits per chunk).
        task_weights_K: optional per-task loss weights ``[K]`` (constants: no gradient flows to
            them); task k's terms are multiplied by ``w_k``, the sum still divided by ``B*K``.
            ``None`` = unweighted; all-ones weights give the unweighted loss and gradients bitwise.

    Returns a 0-d float32 tensor (float64 for float64 inputs), normalized by ``B*K``.

    Example::

        >>> z = torch.randn(2, 3, 4, requires_grad=True); w = torch.randn(5, 4)
        >>> loss = fused_survival_loss(z, w, torch.zeros(3, 5), torch.rand(2, 5) * 9,
        ...                            torch.rand(2, 5) > 0.5, torch.tensor([0., 2., 5.]))
        >>> loss.backward()
    """
    if z_BJR.dim() != 3 or weight_KR.dim() != 2 or z_BJR.shape[2] != weight_KR.shape[1]:
        raise ValueError(f"expected z [B, J, R] and weight [K, R], got {tuple(z_BJR.shape)}, {tuple(weight_KR.shape)}")
    B, J, _ = z_BJR.shape
    K = weight_KR.shape[0]
    if bias_JK.shape != (J, K) or time_BK.shape != (B, K) or event_BK.shape != (B, K) or bin_starts_J.shape != (J,):
        raise ValueError(
            f"shape mismatch: z {tuple(z_BJR.shape)}, weight {tuple(weight_KR.shape)}, bias {tuple(bias_JK.shape)}, "
            f"time {tuple(time_BK.shape)}, event {tuple(event_BK.shape)}, bin_starts {tuple(bin_starts_J.shape)}"
        )
    if task_weights_K is not None and task_weights_K.shape != (K,):
        raise ValueError(f"task_weights_K: expected shape ({K},), got {tuple(task_weights_K.shape)}")
    which = _pick_backend(backend, z_BJR.device)
    if which == "reference":
        return head_loss_reference(z_BJR, weight_KR, bias_JK, time_BK, event_BK, bin_starts_J, task_weights_K)
    grad_on = torch.is_grad_enabled()
    need = tuple(bool(grad_on and t.requires_grad) for t in (z_BJR, weight_KR, bias_JK))
    return _FusedSurvivalLoss.apply(
        z_BJR, weight_KR, bias_JK, time_BK, event_BK, bin_starts_J, task_weights_K, which, chunk, need
    )
