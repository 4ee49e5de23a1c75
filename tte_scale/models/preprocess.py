"""Intensity normalization done on the device (volumes travel as int16 HU)."""

from __future__ import annotations

import torch

__all__ = ["normalize_hu", "HU_WINDOW"]

#: Full CT range stored in int16 volumes: air (-1024 HU) up to the 12-bit ceiling (3071 HU).
HU_WINDOW = (-1024.0, 3071.0)


def normalize_hu(
    vol: torch.Tensor, window: tuple[float, float] = HU_WINDOW, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Clip HU to ``window`` and map it linearly to ``[0, 1]`` in ``dtype``.

    Runs wherever ``vol`` lives (call it after the int16 batch reached the GPU: the transfer
    stays half the size of float32). Example: ``normalize_hu(batch["volume"].cuda(), (-1000, 1000))``.
    """
    lo, hi = float(window[0]), float(window[1])
    if not hi > lo:
        raise ValueError(f"window must be (low, high) with high > low, got {window}")
    # Work in float32 (exact for int16) and cast at the end so bf16 only rounds once.
    x = vol.to(torch.float32).clamp_(lo, hi).sub_(lo).mul_(1.0 / (hi - lo))
    return x.to(dtype)
