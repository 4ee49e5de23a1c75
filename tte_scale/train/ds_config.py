"""Pure pieces of the optimizer setup: the DeepSpeed JSON dict, weight-decay groups, the LR.

Nothing here touches a process group, so all of it is unit-tested without DeepSpeed running.
The learning rate is a pure function of the optimizer step (set on the param groups before
each step) rather than a scheduler object: a resumed run recomputes it from the saved step,
and a skipped (non-finite) step cannot desynchronise it.
"""

from __future__ import annotations

import math
from typing import Any

from tte_scale.train.config import PretrainConfig, resolve_batch


def precision_of(cfg: PretrainConfig, device_type: str) -> str:
    """'bf16' or 'fp32': auto means bf16 on GPUs and fp32 on CPU (CPU bf16 matmuls are slow)."""
    if cfg.zero.precision != "auto":
        return cfg.zero.precision
    return "bf16" if device_type == "cuda" else "fp32"


def build_ds_config(cfg: PretrainConfig, world_size: int, device_type: str) -> dict[str, Any]:
    """The DeepSpeed config dict for ``deepspeed.initialize`` (optimizer is passed separately)."""
    micro = resolve_batch(cfg, world_size)
    zero: dict[str, Any] = {
        "stage": cfg.zero.stage,
        "reduce_bucket_size": cfg.zero.reduce_bucket_size,
        "contiguous_gradients": cfg.zero.stage >= 2,
        # Overlapping communication needs CUDA streams; on CPU it only adds copies.
        "overlap_comm": device_type == "cuda" and cfg.zero.stage >= 2,
    }
    if cfg.zero.stage == 3:
        zero["stage3_prefetch_bucket_size"] = cfg.zero.stage3_prefetch_bucket_size
        # The exported encoder is gathered with zero_to_fp32 from the checkpoint, so the
        # 16-bit weights need not be consolidated at every save.
        zero["stage3_gather_16bit_weights_on_model_save"] = False
    if cfg.zero.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": device_type == "cuda"}
    if cfg.zero.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": device_type == "cuda"}
    bf16 = precision_of(cfg, device_type) == "bf16"
    out = {
        "train_batch_size": cfg.optim.global_batch_size,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": cfg.optim.grad_accum_steps,
        "gradient_clipping": cfg.optim.grad_clip,
        "bf16": {"enabled": bf16},
        "zero_optimization": zero,
        # We pass a torch AdamW (or DeepSpeed's CPU Adam when offloading): both are tested
        # with ZeRO even though DeepSpeed only whitelists its own fused optimizers.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**12,
        "wall_clock_breakdown": False,
    }
    if bf16 and cfg.zero.stage >= 1 and cfg.optim.grad_accum_steps > 1:
        # Accumulate micro-batch gradients in fp32: summed in bf16 (8 bits of mantissa) each
        # addition rounds away what is smaller than 1/256 of the running sum. Costs an fp32
        # gradient buffer; DeepSpeed supports it with ZeRO only (stage 0 refuses the mix).
        out["data_types"] = {"grad_accum_dtype": "fp32"}
    return out


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup, then cosine decay."""
    o = cfg.optim
    if o.warmup_steps and step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    decay_steps = max(1, cfg.max_steps - o.warmup_steps)
    progress = min(1.0, (step - o.warmup_steps) / decay_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return o.lr * (o.min_lr_ratio + (1.0 - o.min_lr_ratio) * cosine)


def no_decay(name: str, param) -> bool:
    """Biases, norm scales, position/class tokens and 1-D tensors are not weight-decayed."""
    lname = name.lower()
    return (
        param.ndim <= 1
        or lname.endswith(".bias")
        or any(key in lname for key in ("norm", "pos_embed", "cls_token", "bias"))
    )


def param_groups(model, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decayed matrices and non-decayed biases/norms/embeddings (frozen skipped)."""
    decay, skip = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (skip if no_decay(name, p) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"}]
    if skip:
        groups.append({"params": skip, "weight_decay": 0.0, "name": "no_decay"})
    return groups
