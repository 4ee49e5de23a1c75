"""Float32 state that a bf16/fp16 model cast must not round: ``KeepsFP32Buffers``.

DeepSpeed's bf16 mode casts the model before training: older versions with
``module.bfloat16()`` (every floating parameter *and buffer*), newer ones parameters only,
buffers too when ``data_types.buffer_dtype`` is set. Some state must stay float32: the
FeatureNorm running statistics (bf16 keeps 3 significant digits of a running variance) and
the prefit log-hazard of the TTE head (near |logh| ~ 10, bf16 steps by 0.06, i.e. a 6%
hazard error per step of rounding). Such state lives in buffers listed in ``_fp32_buffers``:

* ``nn.Module._apply`` (``.to(dtype)``, ``.bfloat16()``, ``.half()``) moves them to the new
  device but leaves their dtype float32 when the cast would make them 16-bit;
* ``_keep_in_fp32_modules_strict`` names them for DeepSpeed's own keep-in-fp32 rule
  (``deepspeed/runtime/keep_in_fp32.py``, the transformers convention), which covers casts
  that assign ``buffer.data`` directly.

Forward passes then combine them with 16-bit activations explicitly (see FeatureNorm, TTEHead).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["KeepsFP32Buffers"]

_LOW = (torch.float16, torch.bfloat16)


class KeepsFP32Buffers(nn.Module):
    """Mixin: the buffers named in ``_fp32_buffers`` are never cast to 16-bit floats."""

    _fp32_buffers: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls._keep_in_fp32_modules_strict = list(cls._fp32_buffers)

    def _apply(self, fn, recurse=True):
        kept = {
            name: buf
            for name in self._fp32_buffers
            if (buf := self._buffers.get(name)) is not None and buf.dtype == torch.float32
        }
        out = super()._apply(fn, recurse)
        for name, before in kept.items():
            after = self._buffers[name]
            if after is not None and after.dtype in _LOW:
                self._buffers[name] = before.to(device=after.device)
        return out
