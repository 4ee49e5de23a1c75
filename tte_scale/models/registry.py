"""Model registry: one small function per size, analytic parameter counts and FLOPs.

``create_model("vit3d_base", img_size=(64, 128, 128))`` builds a size with overrides;
``model_info(name)`` gives parameters and training FLOPs per sample without building it
(the trainer uses the FLOPs for MFU).

FLOPs count matmuls only (2 per multiply-add): patch projection, QKV, attention scores and
their weighting of V, output projection, MLP. Norms, softmax, GELU and the bias adds are left
out (well under 1% at these widths), as in the usual 6*N*T-style MFU accounting. Training is
3x the forward (backward = 2x forward); activation checkpointing's recomputation is *not*
counted, so MFU stays comparable with and without it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

from tte_scale.models.vit3d import ViTConfig, VisionTransformer3D

__all__ = ["register_model", "create_model", "list_models", "model_info", "vit_params", "vit_flops", "get_config"]

_REGISTRY: dict[str, Callable[..., ViTConfig]] = {}


def register_model(fn: Callable[..., ViTConfig]) -> Callable[..., ViTConfig]:
    """Register ``fn`` (returns a ViTConfig from ``**overrides``) under its function name."""
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"model {fn.__name__!r} is already registered")
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Registered names, smallest first (registration order)."""
    return list(_REGISTRY)


def get_config(name: str, **overrides) -> ViTConfig:
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name](**overrides)


def create_model(name: str, **overrides) -> VisionTransformer3D:
    """Build a registered model; ``overrides`` are ViTConfig fields (img_size, pool, ...)."""
    return VisionTransformer3D(get_config(name, **overrides))


def vit_params(cfg: ViTConfig) -> int:
    """Exact parameter count of ``VisionTransformer3D(cfg)``, from the architecture alone."""
    E, hid = cfg.embed_dim, cfg.mlp_hidden
    if cfg.stem == "conv":
        n, c_in = 0, cfg.in_chans
        for c in cfg.stem_widths:
            n += c_in * c * 27 + 2 * c  # 3x3x3 conv without bias, GroupNorm affine
            c_in = c
        n += c_in * E + E  # 1x1x1 projection
    else:
        n = cfg.in_chans * math.prod(cfg.patch_size) * E + E  # patch projection
    n += E if cfg.pool == "cls" else 0
    n += math.prod(cfg.grid) * E if cfg.pos_embed == "learned" else 0
    dh = E // cfg.num_heads
    block = 2 * 2 * E  # two LayerNorms
    block += 3 * E * E + (3 * E if cfg.qkv_bias else 0) + E * E + E  # qkv, proj
    block += 2 * 2 * dh if cfg.qk_norm else 0
    block += E * hid + hid + hid * E + E  # mlp
    return n + cfg.depth * block + 2 * E  # + final norm


def vit_flops(cfg: ViTConfig, img_size: tuple[int, int, int] | None = None, training: bool = True) -> float:
    """Matmul FLOPs per sample at ``img_size`` (default: the config's)."""
    img = tuple(img_size) if img_size is not None else cfg.img_size
    grid = [i // p for i, p in zip(img, cfg.patch_size)]
    n_patch = math.prod(grid)
    N = n_patch + (1 if cfg.pool == "cls" else 0)
    E, hid = cfg.embed_dim, cfg.mlp_hidden
    if cfg.stem == "conv":  # convolutions are matmuls too: 2 * output voxels * c_out * c_in * 27
        f, c_in, vox = 0.0, cfg.in_chans, list(img)
        for stride, c in zip(cfg.stem_strides, cfg.stem_widths):
            vox = [-(-v // s) for v, s in zip(vox, stride)]
            f += 2.0 * math.prod(vox) * c * c_in * 27
            c_in = c
        f += 2.0 * n_patch * c_in * E
    else:
        f = 2.0 * n_patch * cfg.in_chans * math.prod(cfg.patch_size) * E
    per_block = 2.0 * N * E * 3 * E + 2.0 * N * N * E * 2 + 2.0 * N * E * E + 2.0 * N * E * hid * 2
    f += cfg.depth * per_block
    return 3.0 * f if training else f


def model_info(name: str, img_size: tuple[int, int, int] | None = None, **overrides) -> dict:
    """``{"name", "params", "flops_fwd", "flops_train", "tokens", "config"}`` for a size."""
    cfg = get_config(name, **overrides)
    img = tuple(img_size) if img_size is not None else cfg.img_size
    return {
        "name": name,
        "params": vit_params(cfg),
        "img_size": list(img),
        "tokens": math.prod(i // p for i, p in zip(img, cfg.patch_size)),
        "flops_fwd": vit_flops(cfg, img, training=False),
        "flops_train": vit_flops(cfg, img, training=True),
        "config": cfg.to_json(),
    }


def _size(embed_dim: int, depth: int, num_heads: int, overrides: dict, **defaults) -> ViTConfig:
    fields = {f.name for f in dataclasses.fields(ViTConfig)}
    unknown = set(overrides) - fields
    if unknown:
        raise TypeError(f"unknown ViTConfig field(s): {sorted(unknown)}")
    kw = dict(embed_dim=embed_dim, depth=depth, num_heads=num_heads, **defaults)
    kw.update(overrides)
    return ViTConfig(**kw)


# Widths/depths follow the ViT family (Ti/S/B/L/H), then ~1B and ~3B sizes for scaling runs;
# the large ones default to qk-norm, which keeps attention logits bounded in bf16.
@register_model
def vit3d_tiny(**kw) -> ViTConfig:  # 6.1 M (3D patches: the 16^3 projection alone is 0.8 M)
    return _size(192, 12, 3, kw)


@register_model
def vit3d_small(**kw) -> ViTConfig:  # 22.9 M
    return _size(384, 12, 6, kw)


@register_model
def vit3d_base(**kw) -> ViTConfig:  # 88 M
    return _size(768, 12, 12, kw)


@register_model
def vit3d_large(**kw) -> ViTConfig:  # 307 M
    return _size(1024, 24, 16, kw)


@register_model
def vit3d_huge(**kw) -> ViTConfig:  # 635 M
    return _size(1280, 32, 16, kw, qk_norm=True)


@register_model
def vit3d_1b(**kw) -> ViTConfig:  # 1.03 B
    return _size(1536, 36, 16, kw, qk_norm=True)


@register_model
def vit3d_3b(**kw) -> ViTConfig:  # 3.16 B
    return _size(2560, 40, 32, kw, qk_norm=True)
