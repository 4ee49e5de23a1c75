"""The supervised-pretraining baseline: the same encoder trained on the benchmark labels only.

Legend: B batch, E encoder feature width, T benchmark tasks.

The paper compares TTE pretraining with pretraining "on the benchmark tasks only
(classification)" under the same backbone and budget. ``SupervisedHead`` is that head: one
logit per task, ``Linear(E, T)`` after the same batch standardization of the features as
``TTEHead`` (``FeatureNorm``), trained with binary cross-entropy on the horizon labels.
A label of ``-1`` (null: censored before the horizon, or excluded, e.g. a prior diagnosis) is
masked out, never read as negative. As with ``TTEHead`` the loss runs inside the head's own
forward, so ZeRO-3 has gathered its parameters while it is computed.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from tte_scale.errors import InputError
from tte_scale.models.feature_norm import make_feature_norm
from tte_scale.models.with_head import EncoderWithHead

__all__ = ["SupervisedHead", "SupervisedModel"]


class SupervisedHead(nn.Module):
    """``Linear(E, T)`` logits; ``forward(h_BE, label_BT) -> masked mean BCE``."""

    def __init__(self, in_features: int, num_tasks: int, feature_norm: str = "batch"):
        super().__init__()
        for name, v in (("in_features", in_features), ("num_tasks", num_tasks)):
            if v < 1:
                raise ValueError(f"SupervisedHead: {name} must be >= 1, got {v}")
        self.in_features, self.num_tasks = in_features, num_tasks
        self.feature_norm = make_feature_norm(feature_norm, in_features)  # as TTEHead: same footing
        self.proj = nn.Linear(in_features, num_tasks)
        nn.init.trunc_normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    @torch.no_grad()
    def init_bias_from_labels(self, label_NT: torch.Tensor, floor: float = 1e-3) -> torch.Tensor:
        """Start each task's bias at the logit of its train prevalence (known labels only), so
        the first steps learn from the image rather than the base rate; returns the bias."""
        label_NT = torch.as_tensor(label_NT)
        if label_NT.dim() != 2 or label_NT.shape[1] != self.num_tasks:
            raise InputError(f"benchmark labels: shape {tuple(label_NT.shape)}, expected [N, {self.num_tasks}]")
        known = label_NT >= 0
        pos = (label_NT == 1).sum(0).double()
        prev = (pos / known.sum(0).clamp(min=1)).clamp(floor, 1 - floor)
        self.proj.bias.copy_(torch.log(prev / (1 - prev)).to(self.proj.bias.dtype))
        return self.proj.bias.detach().clone()

    def logits(self, h_BE: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` float32 logits (evaluation)."""
        return self.proj(self.feature_norm(h_BE)).float()

    def forward(self, h_BE: torch.Tensor, label_BT: torch.Tensor) -> torch.Tensor:
        """Mean BCE over the known labels of the batch; 0 (with a graph) when none is known."""
        if label_BT.shape != (h_BE.shape[0], self.num_tasks):
            raise InputError(
                f"benchmark labels: shape {tuple(label_BT.shape)}, expected [{h_BE.shape[0]}, {self.num_tasks}]"
            )
        logit_BT = self.proj(self.feature_norm(h_BE)).float()
        known_BT = label_BT >= 0
        bce_BT = F.binary_cross_entropy_with_logits(logit_BT, (label_BT == 1).float(), reduction="none")
        # Every rank must run backward, so a batch without labels still returns a graph.
        return (bce_BT * known_BT).sum() / known_BT.sum().clamp(min=1)

    def flops_per_sample(self, training: bool = True) -> float:
        f = 2.0 * self.in_features * self.num_tasks
        return 3.0 * f if training else f


class SupervisedModel(EncoderWithHead):
    """Encoder + supervised head; ``forward(volume_BCDHW, label_BT) -> loss``."""
