"""MOTOR-style time-to-event head and the encoder + head training module.

Legend: B batch, E encoder feature width, J time bins, R head rank, K tasks.

``TTEHead``: pooled features ``h_BE`` -> standardized across the batch (``FeatureNorm``, see
tte_scale/models/feature_norm.py) -> ``Linear(E, J*R)`` -> LayerNorm over each bin's R
vector -> ``z_BJR`` -> log-hazard ``logh_BJK = z_BJR @ W_KR^T + bias_JK``. Training never builds
``logh_BJK``: the head's ``forward`` computes the loss with ``fused_survival_loss`` (chunked
over tasks, Triton on CUDA), see ``tte_scale/loss``.

**DeepSpeed ZeRO-3.** The fused loss reads the task embedding ``W_KR`` and ``bias_JK`` directly
instead of calling a submodule, so both are *direct* parameters of ``TTEHead`` and the loss
runs inside ``TTEHead.forward``: ZeRO-3 gathers a module's own parameters in its forward
pre-hook and re-partitions them after, so they are full-size exactly while the loss runs.
Calling ``fused_survival_loss(z, head.task_weight, ...)`` from outside the head's forward
would see ZeRO-3's empty placeholders. ``TTEModel.forward`` therefore returns the loss, and
``TTEHead.loss(...)`` is only a named alias of calling the module.

**bf16.** The per-(bin, task) bias is the prefit log empirical hazard (a float32 buffer,
``log_hazard0``, kept float32 under DeepSpeed's bf16 cast: tte_scale/models/fp32_state.py)
plus a trainable offset ``bias`` (zero at the start). In bf16 the offset is rounded relative
to its own, small size instead of to |logh| ~ 10 (a step of 0.06 there); the loss sees
``log_hazard0 + bias`` in float32.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tte_scale.errors import InputError
from tte_scale.loss import DEFAULT_HAZARD_FLOOR, empirical_log_hazard, fused_survival_loss
from tte_scale.models.feature_norm import make_feature_norm
from tte_scale.models.fp32_state import KeepsFP32Buffers
from tte_scale.models.with_head import EncoderWithHead

__all__ = ["TTEHead", "TTEModel"]


class TTEHead(KeepsFP32Buffers):
    """Piecewise-exponential multi-task head (MOTOR). Defaults: K=8192 tasks, 8 bins, rank 512."""

    _fp32_buffers = ("log_hazard0", "task_loss_weight")

    def __init__(
        self,
        in_features: int,
        num_bins: int = 8,
        num_tasks: int = 8192,
        rank: int = 512,
        loss_backend: str = "auto",
        loss_chunk: int | None = None,
        task_init_std: float | None = None,
        feature_norm: str = "batch",
        task_weights: bool = False,
    ):
        super().__init__()
        for name, v in (("in_features", in_features), ("num_bins", num_bins), ("num_tasks", num_tasks), ("rank", rank)):
            if v < 1:
                raise ValueError(f"TTEHead: {name} must be >= 1, got {v}")
        self.in_features, self.num_bins, self.num_tasks, self.rank = in_features, num_bins, num_tasks, rank
        self.loss_backend, self.loss_chunk = loss_backend, loss_chunk
        if task_init_std is not None and task_init_std < 0:
            raise ValueError(f"TTEHead: task_init_std must be >= 0, got {task_init_std}")
        self.task_init_std = 0.1 / math.sqrt(rank) if task_init_std is None else task_init_std
        self.feature_norm = make_feature_norm(feature_norm, in_features)
        self.proj = nn.Linear(in_features, num_bins * rank)
        self.norm = nn.LayerNorm(rank)
        # Direct parameters (not an nn.Linear) so ZeRO-3 gathers them for this module's forward.
        self.task_weight = nn.Parameter(torch.empty(num_tasks, rank))
        # bias_JK = log_hazard0 (prefit, float32 buffer) + bias (trainable offset); see the module doc.
        self.bias = nn.Parameter(torch.empty(num_bins, num_tasks))
        self.register_buffer("log_hazard0", torch.empty(num_bins, num_tasks, dtype=torch.float32))
        # Per-task loss weights (tte_scale/train/task_weights.py), only when a scheme other than
        # uniform is configured: a uniform head has no such buffer (its loss, checkpoints and
        # state dict are those of a head without weights).
        self.task_loss_weight: torch.Tensor | None
        if task_weights:
            self.register_buffer("task_loss_weight", torch.ones(num_tasks, dtype=torch.float32))
        else:
            self.task_loss_weight = None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)
        # z is unit-variance after the norm, so std 0.1/sqrt(R) gives logits of std ~0.1:
        # the prefit bias dominates the first steps instead of random task directions.
        if self.task_init_std > 0:
            nn.init.trunc_normal_(self.task_weight, std=self.task_init_std)
        else:
            nn.init.zeros_(self.task_weight)
        self.log_hazard0.fill_(math.log(DEFAULT_HAZARD_FLOOR))
        self.bias.zero_()

    @torch.no_grad()
    def set_task_weights(self, weights_K: torch.Tensor) -> None:
        """Replace the per-task loss weights (a head built with ``task_weights=True``)."""
        if self.task_loss_weight is None:
            raise RuntimeError("TTEHead: built without task weights (task_weights=False)")
        if weights_K.shape != (self.num_tasks,) or not torch.isfinite(weights_K).all() or (weights_K < 0).any():
            raise ValueError(f"TTEHead: task weights must be {self.num_tasks} finite values >= 0")
        self.task_loss_weight.copy_(weights_K.to(self.task_loss_weight.device, torch.float32))

    @torch.no_grad()
    def init_bias_from_labels(
        self,
        time_NK: torch.Tensor,
        event_NK: torch.Tensor,
        bin_starts_J: torch.Tensor,
        floor: float = DEFAULT_HAZARD_FLOOR,
    ) -> torch.Tensor:
        """Set the bias to ``log(events_jk / days at risk_jk)`` from training labels; returns it.

        It goes into the float32 ``log_hazard0``; the trainable offset restarts at zero.

        (bin, task) pairs without events or time at risk get ``log(floor)`` (events per day;
        see ``DEFAULT_HAZARD_FLOOR``). Raises InputError naming rows with NaN or negative times.
        """
        time_NK, event_NK, bin_starts_J = map(torch.as_tensor, (time_NK, event_NK, bin_starts_J))
        if time_NK.shape != event_NK.shape or time_NK.dim() != 2 or time_NK.shape[1] != self.num_tasks:
            raise InputError(
                f"TTE labels: time {tuple(time_NK.shape)} / event {tuple(event_NK.shape)} must both be "
                f"[N, {self.num_tasks}]"
            )
        if bin_starts_J.shape != (self.num_bins,):
            raise InputError(f"bin_starts: expected {self.num_bins} values, got {tuple(bin_starts_J.shape)}")
        bad = (~torch.isfinite(time_NK) | (time_NK < 0)).any(1).nonzero().flatten()
        if bad.numel():
            raise InputError(f"TTE labels: rows {bad[:10].tolist()} have NaN, infinite or negative times")
        hazard = empirical_log_hazard(time_NK, event_NK, bin_starts_J, floor=floor)
        self.log_hazard0.copy_(hazard.to(self.log_hazard0.device, torch.float32))
        self.bias.zero_()
        return hazard

    def bias_JK(self) -> torch.Tensor:
        """The per-(bin, task) log-hazard bias, prefit + trainable offset, in float32 (float64 for a
        float64 head)."""
        dtype = torch.promote_types(torch.promote_types(self.log_hazard0.dtype, self.bias.dtype), torch.float32)
        return self.log_hazard0.to(dtype) + self.bias.to(dtype)

    def bin_vectors(self, h_BE: torch.Tensor) -> torch.Tensor:
        """``z_BJR``: per-bin normalized vectors."""
        return self.norm(self.proj(self.feature_norm(h_BE)).view(h_BE.shape[0], self.num_bins, self.rank))

    def log_hazard(self, h_BE: torch.Tensor) -> torch.Tensor:
        """Full ``[B, J, K]`` log-hazards in float32 (evaluation, small K)."""
        z = self.bin_vectors(h_BE)
        return (z @ self.task_weight.to(z.dtype).t()).float() + self.bias_JK()

    def forward(self, h_BE, time_BK, event_BK, bin_starts_J) -> torch.Tensor:
        """Loss (normalized by B*K, see ``tte_scale/loss/reference.py``) via the fused kernel."""
        z = self.bin_vectors(h_BE)
        return fused_survival_loss(
            z,
            self.task_weight,
            self.bias_JK(),
            time_BK,
            event_BK,
            bin_starts_J,
            backend=self.loss_backend,
            chunk=self.loss_chunk,
            task_weights_K=self.task_loss_weight,
        )

    def loss(self, h_BE, time_BK, event_BK, bin_starts_J) -> torch.Tensor:
        """Alias of ``self(...)``: goes through ``__call__`` so ZeRO-3 hooks run."""
        return self(h_BE, time_BK, event_BK, bin_starts_J)

    def flops_per_sample(self, training: bool = True) -> float:
        f = 2.0 * self.in_features * self.num_bins * self.rank + 2.0 * self.num_bins * self.rank * self.num_tasks
        return 3.0 * f if training else f


class TTEModel(EncoderWithHead):
    """Encoder + TTE head; ``forward(volume_BCDHW, time_BK, event_BK, bin_starts_J) -> loss``."""
