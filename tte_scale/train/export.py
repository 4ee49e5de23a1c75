"""Export the trained encoder from a DeepSpeed checkpoint to a DeepSpeed-free folder.

ZeRO stages 1-3 store fp32 master weights partitioned over ranks; DeepSpeed's
``zero_to_fp32`` utilities merge them into one full state dict. Stage 0 checkpoints hold the
whole module in ``mp_rank_00_model_states.pt``. Either way the ``encoder.*`` tensors are
written with ``tte_scale.models.save_pretrained`` (``model.safetensors`` + ``config.json``),
which ``tte_scale.models.load_pretrained(path)`` reads without DeepSpeed. The config also
stores the run's HU window (``data.hu_window``), so evaluation normalizes volumes exactly as
training did, and the objective that produced the weights.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tte_scale.errors import TteScaleError
from tte_scale.train.config import PretrainConfig
from tte_scale.train.parts import encoder_overrides


def full_state_dict(checkpoint_dir: Path, tag: str, zero_stage: int) -> dict[str, torch.Tensor]:
    """The whole model's fp32 state dict from one checkpoint folder (any ZeRO stage)."""
    if zero_stage == 0:
        blob = torch.load(
            Path(checkpoint_dir) / tag / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False
        )
        return {k: v.float() for k, v in blob["module"].items()}
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag=tag)


def export_encoder(
    cfg: PretrainConfig, checkpoint_dir: Path, tag: str, out: Path, selection: dict | None = None
) -> Path:
    """Write ``out/model.safetensors`` + ``out/config.json`` for the encoder of ``tag``;
    ``selection`` (BestTracker.record: why this step) goes to config.json's ``pretraining``."""
    from tte_scale.models import create_model, get_config, save_pretrained

    state = full_state_dict(checkpoint_dir, tag, cfg.zero.stage)
    enc_state = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    overrides = {**encoder_overrides(cfg), "grad_checkpointing": False, "drop_path_rate": 0.0}
    fields = get_config(cfg.model.name).to_json()  # the training-only fields this model has
    encoder = create_model(cfg.model.name, **{k: v for k, v in overrides.items() if k in fields})
    missing, unexpected = encoder.load_state_dict(enc_state, strict=False)
    if missing or unexpected:
        raise TteScaleError(
            f"{checkpoint_dir / tag}: encoder weights do not match model {cfg.model.name!r} "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    pretraining = {"objective": cfg.objective, "checkpoint": tag, "max_steps": cfg.max_steps, "seed": cfg.seed}
    if cfg.objective == "supervised":  # null = all benchmark tasks jointly; [task] = per-task fine-tuning
        pretraining["supervised_tasks"] = list(cfg.supervised_tasks) or None
    if selection is not None:
        pretraining["selection"] = selection
    return save_pretrained(
        encoder, out, model_name=cfg.model.name, hu_window=tuple(cfg.data.hu_window), pretraining=pretraining
    )
