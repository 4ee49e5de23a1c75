"""Standardize pooled features across the batch before a pretraining head.

Why: trained end to end on a few hundred scans, the encoder's pooled features collapse to a
nearly constant vector (between-scan std 0.10 -> 0.004, effective rank 28 -> 1.2 on the demo
cohort), and a head that reads them through a LayerNorm *per sample* sees almost no
difference between scans, so the image signal barely reaches the loss. A BatchNorm without
affine parameters in front of the head (as MAE uses for its linear probes) makes the head
see each feature in units of its spread across scans: the same 300 demo steps then lift the
held-out probe AUROC from 0.635 to 0.731 (benchmarks/results/demo.md). It lives in the head,
so exported encoders and frozen-encoder evaluation are unaffected.

At one volume per GPU (the regime of every full-size run) a rank's micro-batch has no spread,
so the statistics are taken across the data-parallel ranks, as SyncBatchNorm does: the sums
are all-reduced inside the step with ``torch.distributed.nn.functional.all_reduce``, which is
autograd-aware, so each rank's gradient includes what its features do to the other ranks'
normalized features; W ranks x micro-batch b then give the loss and gradients of one rank x
micro-batch W*b (tests/dist/test_feature_norm_sync.py).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from tte_scale.models.fp32_state import KeepsFP32Buffers

__all__ = ["FeatureNorm", "make_feature_norm"]


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks whose backward is again a sum over the ranks: the gradient of the total
    loss (every rank's loss depends on the sum) w.r.t. each rank's contribution. Written here
    because torch.distributed.nn.functional.all_reduce, which does the same, is deprecated."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        out = x.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def _world(group) -> int:
    return dist.get_world_size(group) if dist.is_available() and dist.is_initialized() else 1


class FeatureNorm(KeepsFP32Buffers, nn.BatchNorm1d):
    """``BatchNorm1d(E, affine=False)`` whose training statistics span the data-parallel ranks.

    With more than one rank in ``process_group`` (default: the whole world, which is the
    data-parallel group of a ZeRO run) the mean and variance are those of all ranks'
    micro-batches together (every rank must run the forward: it is a collective). In a single
    process a one-sample batch has no spread, so it is normalized with the running statistics
    instead of failing. The running statistics stay float32 under a bf16 model
    (tte_scale/models/fp32_state.py); the normalization runs in float32 on the ``[B, E]``
    pooled features (tiny) and returns the input's dtype.
    """

    _fp32_buffers = ("running_mean", "running_var")

    def __init__(self, num_features: int, momentum: float = 0.1, process_group=None):
        super().__init__(num_features, affine=False, momentum=momentum)
        self.process_group = process_group

    def forward(self, x_BE: torch.Tensor) -> torch.Tensor:
        if self.training and _world(self.process_group) > 1:
            return self._synced(x_BE)
        x = x_BE.float() if x_BE.dtype in (torch.float16, torch.bfloat16) else x_BE
        if self.training and x.shape[0] == 1:
            y = F.batch_norm(x, self.running_mean, self.running_var, training=False, eps=self.eps)
        else:
            y = super().forward(x)
        return y.to(x_BE.dtype)

    def _synced(self, x_BE: torch.Tensor) -> torch.Tensor:
        """Normalize with the statistics of every rank's batch; gradients flow through them."""
        group = self.process_group or dist.group.WORLD
        x = x_BE.to(torch.promote_types(x_BE.dtype, torch.float32))  # statistics in >= fp32
        # Two passes (sum, then squared deviations from the global mean): stable in fp32.
        if x.shape[0] == 0:  # with >= 2 ranks of >= 1 sample each, n >= 2: checked without a device read
            raise ValueError("FeatureNorm: every rank needs at least one sample to standardize")
        # a fill, not torch.tensor([...], device=...): that is a blocking host-to-device copy
        count = torch.full((1,), float(x.shape[0]), dtype=x.dtype, device=x.device)
        summed = _AllReduceSum.apply(torch.cat([x.sum(0), count]), group)
        n = summed[-1].detach()
        mean = summed[:-1] / n
        var = _AllReduceSum.apply(((x - mean) ** 2).sum(0), group) / n
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mean.detach().to(self.running_mean.dtype))
            self.running_var.mul_(1 - m).add_(m * (var.detach() * n / (n - 1)).to(self.running_var.dtype))
            self.num_batches_tracked.add_(1)
        return ((x - mean) * torch.rsqrt(var + self.eps)).to(x_BE.dtype)


def make_feature_norm(kind: Literal["batch", "none"], num_features: int) -> nn.Module:
    if kind == "batch":
        return FeatureNorm(num_features)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"feature_norm must be 'batch' or 'none', got {kind!r}")
