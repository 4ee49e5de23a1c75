"""Standardize pooled features across the batch before a pretraining head.

Why: trained end to end on a few hundred scans, the encoder's pooled features collapse to a
nearly constant vector (between-scan std 0.10 -> 0.004, effective rank 28 -> 1.2 on the demo
cohort), and a head that reads them through a LayerNorm *per sample* sees almost no
difference between scans, so the image signal barely reaches the loss. A BatchNorm without
affine parameters in front of the head (as MAE uses for its linear probes) makes the head
see each feature in units of its spread across scans: the same 300 demo steps then lift the
held-out probe AUROC from 0.635 to 0.731 (benchmarks/results/demo.md). It lives in the head,
so exported encoders and frozen-encoder evaluation are unaffected.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from tte_scale.models.fp32_state import KeepsFP32Buffers

__all__ = ["FeatureNorm", "make_feature_norm"]


class FeatureNorm(KeepsFP32Buffers, nn.BatchNorm1d):
    """``BatchNorm1d(E, affine=False)`` that also accepts a training batch of one sample.

    Each data-parallel rank normalizes with its own micro-batch statistics (as plain
    BatchNorm under DDP); a one-sample micro-batch has no spread, so it is normalized with the
    running statistics instead of failing. The running statistics stay float32 under a bf16
    model (tte_scale/models/fp32_state.py); the normalization itself runs in float32 on the
    ``[B, E]`` pooled features (tiny) and returns the input's dtype.
    """

    _fp32_buffers = ("running_mean", "running_var")

    def __init__(self, num_features: int, momentum: float = 0.1):
        super().__init__(num_features, affine=False, momentum=momentum)

    def forward(self, x_BE: torch.Tensor) -> torch.Tensor:
        x = x_BE.float() if self.running_mean is not None and self.running_mean.dtype == torch.float32 else x_BE
        if self.training and x.shape[0] == 1:
            y = F.batch_norm(x, self.running_mean, self.running_var, training=False, eps=self.eps)
        else:
            y = super().forward(x)
        return y.to(x_BE.dtype)


def make_feature_norm(kind: Literal["batch", "none"], num_features: int) -> nn.Module:
    if kind == "batch":
        return FeatureNorm(num_features)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"feature_norm must be 'batch' or 'none', got {kind!r}")
