"""Triton kernel: piecewise-exponential NLL and its gradient over one chunk of tasks.

Legend: B samples, J time bins, Kc tasks in this chunk, M = B*J rows (row m = b*J + j).

The fused loss (``fused.py``) computes a chunk of logits ``z_MR @ W_cR^T`` with a regular
matmul, then calls this kernel, which in one pass over the chunk

* adds the (bin, task) bias, derives time at risk and the event bin from the compact labels,
* accumulates the loss (float32, or float64 for float64 inputs),
* overwrites the logits *in place* with ``dL/dlogh = (exp(logh) * r - d) / (B*K)``,
* writes ``dL/dbias`` for the chunk (a sum over samples done in registers, no atomics).

Grid: ``(J, cdiv(Kc, BLOCK_K))``; each program owns one bin and ``BLOCK_K`` tasks and walks
over the B samples, so the bias gradient needs no cross-program reduction and results are
deterministic. Under ``TRITON_INTERPRET=1`` the same kernel runs on CPU tensors (tests).
"""

from __future__ import annotations

import torch

try:  # triton is optional: CPU-only installs use the PyTorch path.
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # pragma: no cover - exercised only without triton
    HAVE_TRITON = False

__all__ = ["HAVE_TRITON", "pe_nll_chunk_triton"]


if HAVE_TRITON:

    @triton.jit
    def _pe_nll_chunk_kernel(
        logits_ptr,  # [M, Kc] in/out: logits in, dL/dlogh out
        bias_ptr,  # [J, Kc] (a column slice of [J, K])
        time_ptr,  # [B, Kc] float days (column slice)
        event_ptr,  # [B, Kc] uint8 / float (column slice)
        starts_ptr,  # [J] float days
        dbias_ptr,  # [J, Kc] out, accumulation dtype
        loss_ptr,  # [J, n_kblocks] out, accumulation dtype
        B,
        J,
        Kc,
        stride_lm,
        stride_bj,
        stride_tb,
        stride_eb,
        stride_dbj,
        inv_norm,
        n_kblocks,
        BLOCK_K: tl.constexpr,
        ACC_FP64: tl.constexpr,
    ):
        j = tl.program_id(0)
        kb = tl.program_id(1)
        acc_t = tl.float64 if ACC_FP64 else tl.float32
        offs = kb * BLOCK_K + tl.arange(0, BLOCK_K)
        mask = offs < Kc

        start = tl.load(starts_ptr + j).to(acc_t)
        # The last bin is open-ended: its end (and width) is +inf.
        end = tl.load(starts_ptr + j + 1, mask=j + 1 < J, other=float("inf")).to(acc_t)
        width = end - start
        bias = tl.load(bias_ptr + j * stride_bj + offs, mask=mask, other=0.0).to(acc_t)

        loss_acc = tl.zeros([BLOCK_K], dtype=acc_t)
        dbias_acc = tl.zeros([BLOCK_K], dtype=acc_t)
        for b in range(0, B):
            row = b * J + j
            x = tl.load(logits_ptr + row * stride_lm + offs, mask=mask, other=0.0).to(acc_t)
            t = tl.load(time_ptr + b * stride_tb + offs, mask=mask, other=0.0).to(acc_t)
            ev = tl.load(event_ptr + b * stride_eb + offs, mask=mask, other=0)
            logh = x + bias
            r = tl.minimum(tl.maximum(t - start, 0.0), width)
            hit = (ev != 0) & (t >= start) & (t < end)
            d = tl.where(hit, 1.0, 0.0).to(acc_t)
            er = tl.exp(logh) * r
            loss_acc += tl.where(mask, er - d * logh, 0.0)
            g = (er - d) * inv_norm
            g = tl.where(mask, g, 0.0)
            dbias_acc += g
            tl.store(logits_ptr + row * stride_lm + offs, g.to(logits_ptr.dtype.element_ty), mask=mask)
        tl.store(dbias_ptr + j * stride_dbj + offs, dbias_acc, mask=mask)
        tl.store(loss_ptr + j * n_kblocks + kb, tl.sum(loss_acc, axis=0))


def pe_nll_chunk_triton(
    logits_MK: torch.Tensor,
    bias_JK: torch.Tensor,
    time_BK: torch.Tensor,
    event_BK: torch.Tensor,
    bin_starts_J: torch.Tensor,
    inv_norm: float,
    dbias_JK: torch.Tensor,
    block_k: int = 256,
) -> torch.Tensor:
    """Run the kernel on one chunk; ``logits_MK`` is overwritten with the gradient.

    ``dbias_JK`` (accumulation dtype, contiguous rows) receives the bias gradient; returns the
    un-normalized loss sum of the chunk as a 0-d tensor in the accumulation dtype.
    """
    if not HAVE_TRITON:
        raise RuntimeError("triton is not installed; use backend='torch'")
    M, Kc = logits_MK.shape
    J = bin_starts_J.numel()
    B = M // J
    if logits_MK.stride(1) != 1 or time_BK.stride(1) != 1 or event_BK.stride(1) != 1 or bias_JK.stride(1) != 1:
        raise ValueError("pe_nll_chunk_triton needs unit stride along the task axis")
    acc_fp64 = logits_MK.dtype == torch.float64
    acc = torch.float64 if acc_fp64 else torch.float32
    if event_BK.dtype == torch.bool:
        event_BK = event_BK.view(torch.uint8)  # zero-copy; triton handles uint8 pointers
    n_kblocks = triton.cdiv(Kc, block_k)
    loss_parts = torch.empty(J, n_kblocks, dtype=acc, device=logits_MK.device)
    _pe_nll_chunk_kernel[(J, n_kblocks)](
        logits_MK,
        bias_JK,
        time_BK,
        event_BK,
        bin_starts_J,
        dbias_JK,
        loss_parts,
        B,
        J,
        Kc,
        logits_MK.stride(0),
        bias_JK.stride(0),
        time_BK.stride(0),
        event_BK.stride(0),
        dbias_JK.stride(0),
        inv_norm,
        n_kblocks,
        BLOCK_K=block_k,
        ACC_FP64=acc_fp64,
    )
    return loss_parts.sum()
