"""``EncoderWithHead``: an encoder and a pretraining head whose forward returns the loss.

The loss runs inside the head's own forward (so ZeRO-3 has gathered the head's parameters
while it is computed); the wrapper only feeds the pooled features to it, together with
whatever targets the head takes. ``TTEModel`` and ``SupervisedModel`` are its two uses.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["EncoderWithHead"]


class EncoderWithHead(nn.Module):
    """``forward(volume_BCDHW, *targets) -> head(encoder(volume), *targets)``."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        if getattr(encoder, "num_features", head.in_features) != head.in_features:
            raise ValueError(f"encoder gives {encoder.num_features} features, head expects {head.in_features}")
        self.encoder = encoder
        self.head = head

    def embed(self, volume_BCDHW: torch.Tensor) -> torch.Tensor:
        """Pooled encoder features ``[B, E]``."""
        return self.encoder(volume_BCDHW)

    def forward(self, volume_BCDHW: torch.Tensor, *targets) -> torch.Tensor:
        return self.head(self.encoder(volume_BCDHW), *targets)

    def flops_per_sample(self, training: bool = True, img_size=None) -> float:
        return self.encoder.flops_per_sample(training=training, img_size=img_size) + self.head.flops_per_sample(
            training
        )
