"""Triton kernel: piecewise-exponential NLL and its gradient over one chunk of tasks.

Legend: B samples, J time bins, Kc tasks in this chunk, M = B*J rows (row m = b*J + j).

The fused loss (``fused.py``) computes a chunk of logits ``z_MR @ W_cR^T`` with a regular
matmul, then calls this kernel, which in one pass over the chunk

* adds the (bin, task) bias, derives time at risk and the event bin from the compact labels,
* accumulates the loss (float32, or float64 for float64 inputs),
* overwrites the logits *in place* with ``dL/dlogh = (exp(logh) * r - d) / (B*K)`` (times the
  task's weight ``w_k`` when per-task weights are given: loss and gradient terms are both scaled),
* writes ``dL/dbias`` for the chunk.

Grid: ``(J, cdiv(Kc, BLOCK_K), cdiv(B, BLOCK_B))``; each program owns one bin, ``BLOCK_K``
tasks and ``BLOCK_B`` samples (a 2D tile). The fused loss picks ``Kc ~ 2^20 / (B*J)``, so a
grid over (J, Kc) alone would shrink as B grows (32 programs at B=128, each walking 128 rows
in series); with the sample axis the number of programs stays ``~ B*J*Kc / (BLOCK_B*BLOCK_K)``
(512 for the default chunk) whatever B is. Each program writes its partial bias gradient
(the sum over its samples) and its partial loss; a second pass sums the ``cdiv(B, BLOCK_B)``
partials (deterministic, no atomics; with one sample block the kernel writes ``dbias``
directly). Under ``TRITON_INTERPRET=1`` the same kernel runs on CPU tensors (tests).
"""

from __future__ import annotations

import torch

try:  # triton is optional: CPU-only installs use the PyTorch path.
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # pragma: no cover - exercised only without triton
    HAVE_TRITON = False

__all__ = ["HAVE_TRITON", "pe_nll_chunk_triton", "pe_grid"]

BLOCK_K = 256
BLOCK_B = 8


def _next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def pe_grid(B: int, J: int, Kc: int, block_k: int = BLOCK_K, block_b: int = BLOCK_B) -> tuple[int, int, int]:
    """Launch grid of the kernel and the sample tile it uses: ``(J, K blocks, sample blocks)``."""
    bb = min(block_b, _next_pow2(B))
    return (J, -(-Kc // block_k), -(-B // bb))


if HAVE_TRITON:

    @triton.jit
    def _pe_nll_chunk_kernel(
        logits_ptr,  # [M, Kc] in/out: logits in, dL/dlogh out
        bias_ptr,  # [J, Kc] (a column slice of [J, K])
        time_ptr,  # [B, Kc] float days (column slice)
        event_ptr,  # [B, Kc] uint8 / float (column slice)
        starts_ptr,  # [J] float days
        w_ptr,  # [Kc] per-task weights in the accumulation dtype (read only when HAS_W)
        dbias_ptr,  # [G, J, Kc] out (partial sums per sample block), accumulation dtype
        loss_ptr,  # [G, J, n_kblocks] out, accumulation dtype
        B,
        J,
        Kc,
        stride_lm,
        stride_bj,
        stride_tb,
        stride_eb,
        stride_dbg,
        stride_dbj,
        inv_norm,
        n_kblocks,
        BLOCK_B: tl.constexpr,
        BLOCK_K: tl.constexpr,
        ACC_FP64: tl.constexpr,
        HAS_W: tl.constexpr,
    ):
        j = tl.program_id(0)
        kb = tl.program_id(1)
        gb = tl.program_id(2)
        acc_t = tl.float64 if ACC_FP64 else tl.float32
        offs_k = kb * BLOCK_K + tl.arange(0, BLOCK_K)
        offs_b = gb * BLOCK_B + tl.arange(0, BLOCK_B)
        mask_k = offs_k < Kc
        mask = (offs_b < B)[:, None] & mask_k[None, :]

        start = tl.load(starts_ptr + j).to(acc_t)
        # The last bin is open-ended: its end (and width) is +inf.
        end = tl.load(starts_ptr + j + 1, mask=j + 1 < J, other=float("inf")).to(acc_t)
        width = end - start
        bias = tl.load(bias_ptr + j * stride_bj + offs_k, mask=mask_k, other=0.0).to(acc_t)

        rows = (offs_b * J + j).to(tl.int64)  # row m = b*J + j of the [M, Kc] chunk
        x_ptrs = logits_ptr + rows[:, None] * stride_lm + offs_k[None, :]
        b64 = offs_b.to(tl.int64)[:, None]
        x = tl.load(x_ptrs, mask=mask, other=0.0).to(acc_t)
        t = tl.load(time_ptr + b64 * stride_tb + offs_k[None, :], mask=mask, other=0.0).to(acc_t)
        ev = tl.load(event_ptr + b64 * stride_eb + offs_k[None, :], mask=mask, other=0)
        logh = x + bias[None, :]
        r = tl.minimum(tl.maximum(t - start, 0.0), width)
        hit = (ev != 0) & (t >= start) & (t < end)
        d = tl.where(hit, 1.0, 0.0).to(acc_t)
        er = tl.exp(logh) * r
        nll = er - d * logh
        g = (er - d) * inv_norm
        if HAS_W:  # x * 1.0 is exact: all-ones weights give the unweighted values bitwise
            w = tl.load(w_ptr + offs_k, mask=mask_k, other=0.0).to(acc_t)
            nll = nll * w[None, :]
            g = g * w[None, :]
        nll = tl.where(mask, nll, 0.0)
        g = tl.where(mask, g, 0.0)
        tl.store(x_ptrs, g.to(logits_ptr.dtype.element_ty), mask=mask)
        tl.store(dbias_ptr + gb * stride_dbg + j * stride_dbj + offs_k, tl.sum(g, axis=0), mask=mask_k)
        tl.store(loss_ptr + (gb * J + j) * n_kblocks + kb, tl.sum(tl.sum(nll, axis=1), axis=0))


def pe_nll_chunk_triton(
    logits_MK: torch.Tensor,
    bias_JK: torch.Tensor,
    time_BK: torch.Tensor,
    event_BK: torch.Tensor,
    bin_starts_J: torch.Tensor,
    inv_norm: float,
    dbias_JK: torch.Tensor,
    weights_K: torch.Tensor | None = None,
    block_k: int = BLOCK_K,
    block_b: int = BLOCK_B,
) -> torch.Tensor:
    """Run the kernel on one chunk; ``logits_MK`` is overwritten with the gradient.

    ``weights_K`` (optional, ``[Kc]``, unit stride): per-task loss weights of the chunk.
    ``dbias_JK`` (accumulation dtype, unit stride along tasks) receives the bias gradient; returns
    the un-normalized loss sum of the chunk as a 0-d tensor in the accumulation dtype.
    """
    if not HAVE_TRITON:
        raise RuntimeError("triton is not installed; use backend='torch'")
    M, Kc = logits_MK.shape
    J = bin_starts_J.numel()
    B = M // J
    if (
        logits_MK.stride(1) != 1
        or time_BK.stride(1) != 1
        or event_BK.stride(1) != 1
        or bias_JK.stride(1) != 1
        or dbias_JK.stride(1) != 1
        or (weights_K is not None and weights_K.stride(0) != 1)
    ):
        raise ValueError("pe_nll_chunk_triton needs unit stride along the task axis")
    acc_fp64 = logits_MK.dtype == torch.float64
    acc = torch.float64 if acc_fp64 else torch.float32
    if event_BK.dtype == torch.bool:
        event_BK = event_BK.view(torch.uint8)  # zero-copy; triton handles uint8 pointers
    grid = pe_grid(B, J, Kc, block_k, block_b)
    n_kblocks, n_bblocks = grid[1], grid[2]
    bb = min(block_b, _next_pow2(B))
    # One sample block: the kernel's partial is the whole sum, written straight into dbias_JK.
    parts = dbias_JK if n_bblocks == 1 else torch.empty(n_bblocks, J, Kc, dtype=acc, device=logits_MK.device)
    loss_parts = torch.empty(n_bblocks, J, n_kblocks, dtype=acc, device=logits_MK.device)
    has_w = weights_K is not None
    w_arg = weights_K.to(acc) if has_w else bin_starts_J  # any pointer: never read when HAS_W is False
    _pe_nll_chunk_kernel[grid](
        logits_MK,
        bias_JK,
        time_BK,
        event_BK,
        bin_starts_J,
        w_arg,
        parts,
        loss_parts,
        B,
        J,
        Kc,
        logits_MK.stride(0),
        bias_JK.stride(0),
        time_BK.stride(0),
        event_BK.stride(0),
        0 if n_bblocks == 1 else parts.stride(0),
        dbias_JK.stride(0) if n_bblocks == 1 else parts.stride(1),
        inv_norm,
        n_kblocks,
        BLOCK_B=bb,
        BLOCK_K=block_k,
        ACC_FP64=acc_fp64,
        HAS_W=has_w,
    )
    if n_bblocks > 1:
        dbias_JK.copy_(parts.sum(dim=0))  # second pass: the bias gradient over the sample blocks
    return loss_parts.sum()
