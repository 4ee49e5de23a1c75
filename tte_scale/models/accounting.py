"""Analytic parameter counts and FLOPs of the 3D ViT, from its config alone (no model is built).

``model_info(name)`` gives parameters and training FLOPs per sample of any registered model (the
trainer uses the FLOPs for MFU, ``--estimate-memory`` the parameter count); the MONAI backbones
count theirs on the meta device (``tte_scale/models/monai3d.py``).

FLOPs count matmuls only (2 per multiply-add): patch projection, QKV, attention scores and
their weighting of V, output projection, MLP. Norms, softmax, GELU and the bias adds are left
out (well under 1% at these widths), as in the usual 6*N*T-style MFU accounting, and so is the
fixed blob filter (``blob_sigmas_vox``: separable 1D passes and elementwise eigenvalues, no matmul). Training is
3x the forward (backward = 2x forward); activation checkpointing's recomputation is *not*
counted, so MFU stays comparable with and without it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from tte_scale.models.registry import get_config

if TYPE_CHECKING:
    from tte_scale.models.vit3d import ViTConfig

__all__ = ["vit_params", "vit_flops", "model_info"]


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
    if cfg.blob_sigmas_vox:
        n += len(cfg.blob_sigmas_vox) * E + E  # the blob channels' token map
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
    if cfg.blob_sigmas_vox:
        f += 2.0 * n_patch * len(cfg.blob_sigmas_vox) * E
    per_block = 2.0 * N * E * 3 * E + 2.0 * N * N * E * 2 + 2.0 * N * E * E + 2.0 * N * E * hid * 2
    f += cfg.depth * per_block
    return 3.0 * f if training else f


def model_info(name: str, img_size: tuple[int, int, int] | None = None, **overrides) -> dict:
    """``{"name", "params", "flops_fwd", "flops_train", "tokens", "config"}`` of a registered model
    (any family: each config computes its own counts, see ``ViTConfig.params``)."""
    cfg = get_config(name, **overrides)
    img = tuple(img_size) if img_size is not None else tuple(cfg.img_size)
    return {
        "name": name,
        "params": cfg.params(),
        "img_size": list(img),
        "tokens": cfg.tokens(img),
        "flops_fwd": cfg.flops(img, training=False),
        "flops_train": cfg.flops(img, training=True),
        "config": cfg.to_json(),
    }
