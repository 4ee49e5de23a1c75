"""Normalization and augmentation of a batch on its device (GPU when there is one, else CPU).

Shape legend: B batch, D/H/W volume axes (C = 1 channel).

The loader ships int16 HU (half the bytes of float32 through worker queues, pinned memory and
PCIe); crop and flip run on int16 after the transfer, then `hu_to_float` maps the HU window to
[0, 1] and the intensity jitter is applied in float. All randomness comes from the
`torch.Generator` passed in (keep one per rank, seeded from the run seed and rank, and save its
state in the checkpoint for bit-exact resumes).
"""

from __future__ import annotations

import torch

from tte_scale.data.config import AugmentConfig

__all__ = ["hu_to_float", "augment_batch", "to_device"]


def hu_to_float(vol_int16: torch.Tensor, hu_min: float = -1000.0, hu_max: float = 1000.0) -> torch.Tensor:
    """int16 HU -> float32 in [0, 1]: clip to [hu_min, hu_max], then scale linearly."""
    if vol_int16.dtype != torch.int16:
        raise TypeError(f"hu_to_float expects int16 HU, got {vol_int16.dtype}")
    vol = vol_int16.to(torch.float32)
    return ((vol - hu_min) / (hu_max - hu_min)).clamp_(0.0, 1.0)


def _uniform(n: int, low: float, high: float, gen: torch.Generator, device) -> torch.Tensor:
    # Draw on the generator's device, then move: results do not depend on where the batch lives.
    r = torch.rand(n, generator=gen, device=gen.device)
    return (low + (high - low) * r).to(device)


def augment_batch(batch: dict, cfg: AugmentConfig, generator: torch.Generator) -> dict:
    """A new batch whose `volume` is float32 [B, 1, d, h, w]: cropped, flipped, normalized, jittered.

    With `cfg.enabled` False only `hu_to_float` is applied. Other keys are passed through.
    """
    vol_B1DHW = batch["volume"]
    if vol_B1DHW.dim() != 5 or vol_B1DHW.shape[1] != 1:
        raise ValueError(f"batch['volume'] must be [B, 1, D, H, W], got {tuple(vol_B1DHW.shape)}")
    out = dict(batch)
    if not cfg.enabled:
        out["volume"] = hu_to_float(vol_B1DHW, cfg.hu_min, cfg.hu_max)
        return out
    B, _, D, H, W = vol_B1DHW.shape
    device = vol_B1DHW.device
    if cfg.crop_size is not None:
        d, h, w = cfg.crop_size
        if d > D or h > H or w > W:
            raise ValueError(f"augment.crop_size {cfg.crop_size} larger than the volume {(D, H, W)}")
        starts = [
            torch.randint(0, n - c + 1, (B,), generator=generator, device=generator.device).tolist()
            for n, c in ((D, d), (H, h), (W, w))
        ]
        vol_B1DHW = torch.stack(
            [
                vol_B1DHW[
                    i,
                    :,
                    starts[0][i] : starts[0][i] + d,
                    starts[1][i] : starts[1][i] + h,
                    starts[2][i] : starts[2][i] + w,
                ]
                for i in range(B)
            ]
        )
    if cfg.flip_axes and cfg.flip_prob > 0:
        flips = (_uniform(B * len(cfg.flip_axes), 0.0, 1.0, generator, "cpu") < cfg.flip_prob).view(B, -1).tolist()
        vol_B1DHW = torch.stack(
            [
                torch.flip(vol_B1DHW[i], [a + 1 for a, f in zip(cfg.flip_axes, flips[i]) if f])
                if any(flips[i])
                else vol_B1DHW[i]
                for i in range(B)
            ]
        )
    vol = hu_to_float(vol_B1DHW.contiguous(), cfg.hu_min, cfg.hu_max)
    scale = 1.0 + _uniform(B, -cfg.intensity_scale, cfg.intensity_scale, generator, device)
    shift = _uniform(B, -cfg.intensity_shift, cfg.intensity_shift, generator, device)
    out["volume"] = vol * scale.view(B, 1, 1, 1, 1) + shift.view(B, 1, 1, 1, 1)
    return out


def to_device(batch: dict, device: torch.device | str) -> dict:
    """Tensors of the batch moved to `device` (non-blocking from pinned memory); lists kept."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
