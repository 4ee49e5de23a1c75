"""3D Vision Transformer encoder (pre-norm, fused QKV, SDPA attention).

Legend: B batch, C input channels, D/H/W volume depth/height/width (voxels),
G = (gd, gh, gw) patch grid, N tokens (+1 with a CLS token), E embed dim, Hh heads, Dh head dim.

* Patches: a ``Conv3d`` with kernel = stride = ``patch_size`` (anisotropic allowed), or with
  ``stem="conv"`` a stack of 3x3x3 stride-2 convolutions down to the same token grid, then a
  1x1x1 projection (Xiao et al. 2021, "Early convolutions help transformers see better"): the
  convolutional bias lets the encoder learn from hundreds of scans where the plain patch
  projection memorizes them (benchmarks/results/demo.md).
* Positions: fixed 3D sin-cos (default; any grid) or learned for ``img_size`` and trilinearly
  interpolated for other grids.
* Blocks: ``x + drop_path(attn(norm(x)))``, ``x + drop_path(mlp(norm(x)))``; attention through
  ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels on GPU), optional
  qk-norm; per-block activation checkpointing with ``grad_checkpointing=True``.
* Init as in timm / MAE: truncated normal (std 0.02) for linear layers and tokens, Xavier
  uniform for the patch projection seen as a linear layer, zero biases, unit norms.

Example::

    >>> m = VisionTransformer3D(img_size=(32, 32, 32), patch_size=(16, 16, 16), embed_dim=48,
    ...                         depth=2, num_heads=3)
    >>> m(torch.zeros(2, 1, 32, 48, 32)).shape   # other input shapes work too
    torch.Size([2, 48])
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tte_scale.config import check
from tte_scale.models.accounting import vit_flops, vit_params
from tte_scale.models.blob import dot_filter
from tte_scale.models.registry import get_config, register_model

__all__ = ["ViTConfig", "VisionTransformer3D", "create_model", "sincos_pos_embed_3d"]


def _triple(v) -> tuple[int, int, int]:
    if isinstance(v, int):
        return (v, v, v)
    v = tuple(int(x) for x in v)
    if len(v) != 3:
        raise ValueError(f"expected 3 values (D, H, W), got {v}")
    return v  # type: ignore[return-value]


@dataclass(kw_only=True, slots=True)
class ViTConfig:
    """Architecture of a :class:`VisionTransformer3D` (what ``config.json`` of an export holds)."""

    img_size: tuple[int, int, int] = (160, 224, 224)
    """Nominal input (D, H, W) in voxels: sets the learned position grid and the FLOPs figure."""
    patch_size: tuple[int, int, int] = (16, 16, 16)
    """Patch (pd, ph, pw) in voxels; inputs must be multiples of it."""
    in_chans: int = 1
    """Input channels (1 for CT)."""
    embed_dim: int = 768
    """Token width E."""
    depth: int = 12
    """Number of transformer blocks."""
    num_heads: int = 12
    """Attention heads; must divide embed_dim."""
    mlp_ratio: float = 4.0
    """MLP hidden width / embed_dim."""
    qkv_bias: bool = True
    """Bias in the fused QKV projection."""
    qk_norm: bool = False
    """LayerNorm on queries and keys per head (stabilizes large models)."""
    drop_path_rate: float = 0.0
    """Stochastic depth rate of the last block (linearly increasing from 0)."""
    pool: Literal["cls", "mean", "max"] = "cls"
    """Pooled feature: the CLS token, the mean of patch tokens, or their per-feature max (keeps
    the evidence of one token, e.g. a lesion a few voxels wide, that a mean dilutes by 1/N)."""
    pos_embed: Literal["sincos", "learned"] = "sincos"
    """Fixed 3D sin-cos (any grid) or learned (interpolated for other grids)."""
    grad_checkpointing: bool = False
    """Recompute each block's activations in backward (less memory, ~1/3 more compute)."""
    stem: Literal["patch", "conv"] = "patch"
    """Token embedding: one strided convolution per patch (ViT) or a convolutional stem."""
    stem_channels: tuple[int, ...] = ()
    """Widths of the conv stem's stages (one per stride-2 stage, log2 of the largest patch side);
    empty = halving from embed_dim backwards, e.g. (12, 24, 48, 96) for 16-voxel patches at E=96."""
    blob_sigmas_vox: tuple[tuple[float, float, float], ...] = ()
    """Fixed blob-enhancement channels: per entry, the Hessian dot filter at that Gaussian scale
    (D, H, W) in voxels, i.e. the finding's scale in mm over the voxel spacing
    (tte_scale/models/blob.py). Each token gets each channel's largest value inside its patch,
    through a linear map added to its embedding: the peak of a finding a few voxels wide reaches
    its token unmixed. Computed inside the model, so training, eval and embed see the same input,
    and recorded in the export. Empty (default) = the volume alone. Use it with ``pool="max"``:
    trained on a small lesion's size, the encoder learned it in 100 steps that way, and in 600
    steps not at all with mean pooling, with the channels as extra stem inputs, or with the map
    starting at zero (benchmarks/results/sparse.md, "Blob tokens")."""
    blob_stride: tuple[int, int, int] = (1, 1, 1)
    """Compute the blob channels every (D, H, W) voxels, then repeat them to the input grid: the
    filter's cost falls by the stride's product (up to ~sigma, after its smoothing, little is lost)."""
    blob_gain: float = 10.0
    """Factor on the dot response: a soft-tissue nodule in lung at its own scale gives ~0.1 on the
    [0, 1] input, so 10 brings it to order 1, the range of the token embedding. On the sparse
    cohort 30 made TTE pretraining pick the lesion up on every seed (at 10, one seed in three
    never did); configs/demo_sparse.yaml sets it (benchmarks/results/sparse.md)."""

    def __post_init__(self):
        self.img_size = _triple(self.img_size)
        self.patch_size = _triple(self.patch_size)
        self.stem_channels = tuple(int(c) for c in self.stem_channels)
        try:
            self.blob_sigmas_vox = tuple(tuple(float(v) for v in s) for s in self.blob_sigmas_vox)
        except (TypeError, ValueError):
            check(False, "blob_sigmas_vox", f"must be a list of [D, H, W] scales, got {self.blob_sigmas_vox!r}")
        self.blob_stride = _triple(self.blob_stride)
        check(
            all(len(s) == 3 and all(v > 0 for v in s) for s in self.blob_sigmas_vox),
            "blob_sigmas_vox",
            f"each entry must be 3 positive scales (D, H, W) in voxels, got {[list(s) for s in self.blob_sigmas_vox]}",
        )
        check(all(v >= 1 for v in self.blob_stride), "blob_stride", f"must be >= 1, got {self.blob_stride}")
        check(self.blob_gain > 0, "blob_gain", f"must be > 0, got {self.blob_gain}")
        check(
            not self.blob_sigmas_vox or self.in_chans == 1,
            "blob_sigmas_vox",
            f"the blob filter reads a single-channel volume, got in_chans={self.in_chans}",
        )
        check(all(p > 0 for p in self.patch_size), "patch_size", f"must be positive, got {self.patch_size}")
        check(
            all(i % p == 0 for i, p in zip(self.img_size, self.patch_size)),
            "img_size",
            f"{self.img_size} is not a multiple of patch_size {self.patch_size}",
        )
        check(self.in_chans >= 1, "in_chans", f"must be >= 1, got {self.in_chans}")
        check(self.depth >= 1, "depth", f"must be >= 1, got {self.depth}")
        check(
            self.num_heads >= 1 and self.embed_dim % self.num_heads == 0,
            "num_heads",
            f"{self.num_heads} must divide embed_dim {self.embed_dim}",
        )
        check(self.mlp_ratio > 0, "mlp_ratio", f"must be > 0, got {self.mlp_ratio}")
        check(0.0 <= self.drop_path_rate < 1.0, "drop_path_rate", f"must be in [0, 1), got {self.drop_path_rate}")
        check(self.pool in ("cls", "mean", "max"), "pool", f"must be 'cls', 'mean' or 'max', got {self.pool!r}")
        check(
            self.pos_embed in ("sincos", "learned"),
            "pos_embed",
            f"must be 'sincos' or 'learned', got {self.pos_embed!r}",
        )
        check(self.stem in ("patch", "conv"), "stem", f"must be 'patch' or 'conv', got {self.stem!r}")
        if self.stem == "conv":
            check(
                all(p & (p - 1) == 0 for p in self.patch_size),
                "patch_size",
                f"a conv stem downsamples by 2 per stage, so patch sides must be powers of 2, got {self.patch_size}",
            )
            n = len(self.stem_strides)
            check(n >= 1, "patch_size", "a conv stem needs a patch side of at least 2")
            check(
                len(self.stem_channels) in (0, n),
                "stem_channels",
                f"needs {n} widths (one per stride-2 stage for patch {self.patch_size}), got {len(self.stem_channels)}",
            )
            check(
                all(c >= 1 for c in self.stem_channels), "stem_channels", f"must be positive, got {self.stem_channels}"
            )

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(i // p for i, p in zip(self.img_size, self.patch_size))  # type: ignore[return-value]

    @property
    def stem_strides(self) -> list[tuple[int, int, int]]:
        """Per conv-stem stage, the stride along (D, H, W): 2 until that side's patch is covered."""
        n = max(self.patch_size).bit_length() - 1
        return [tuple(2 if p >> i > 1 else 1 for p in self.patch_size) for i in range(n)]  # type: ignore[misc]

    @property
    def stem_widths(self) -> tuple[int, ...]:
        if self.stem_channels:
            return self.stem_channels
        n = len(self.stem_strides)
        return tuple(max(self.embed_dim >> (n - 1 - i), 8) for i in range(n))

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    # The encoder-config interface every registered model shares (tte_scale/models/monai3d.py too).
    @property
    def num_features(self) -> int:
        """Width of the pooled feature the heads read."""
        return self.embed_dim

    def build(self) -> VisionTransformer3D:
        return VisionTransformer3D(self)

    def params(self) -> int:
        return vit_params(self)

    def largest_tensor(self) -> int:
        """Parameters of the largest single tensor (an MLP projection; ZeRO-3's memory estimate)."""
        return self.embed_dim * self.mlp_hidden + self.mlp_hidden

    def flops(self, img_size: tuple[int, int, int] | None = None, training: bool = True) -> float:
        return vit_flops(self, img_size=img_size, training=training)

    def tokens(self, img_size: tuple[int, int, int] | None = None) -> int:
        img = tuple(img_size) if img_size is not None else self.img_size
        return math.prod(i // p for i, p in zip(img, self.patch_size))

    def to_json(self) -> dict:
        def plain(v):
            return [plain(x) for x in v] if isinstance(v, tuple) else v

        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def sincos_pos_embed_3d(grid: tuple[int, int, int], dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Fixed 3D sin-cos position table ``[gd*gh*gw, dim]`` (a third of the channels per axis).

    Each axis gets ``2 * (dim // 6)`` channels (half sin, half cos, MAE frequencies
    ``1 / 10000^(i/n)``); the few channels left when dim is not a multiple of 6 stay zero.
    """
    n = dim // 6
    out = torch.zeros(*grid, dim, device=device, dtype=torch.float32)
    if n == 0:
        return out.reshape(-1, dim).to(dtype)
    omega = 1.0 / (10000 ** (torch.arange(n, device=device, dtype=torch.float32) / n))
    coords = torch.meshgrid(*[torch.arange(g, device=device, dtype=torch.float32) for g in grid], indexing="ij")
    for axis, c in enumerate(coords):
        ang = c[..., None] * omega
        out[..., 2 * n * axis : 2 * n * axis + n] = torch.sin(ang)
        out[..., 2 * n * axis + n : 2 * n * (axis + 1)] = torch.cos(ang)
    return out.reshape(-1, dim).to(dtype)


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample with probability ``p``."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, qk_norm: bool):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)  # one GEMM for q, k and v
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x_BNE):
        B, N, E = x_BNE.shape
        qkv = self.qkv(x_BNE).view(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B, Hh, N, Dh]
        q, k = self.q_norm(q), self.k_norm(k)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.proj(o.transpose(1, 2).reshape(B, N, E))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.attn = Attention(cfg.embed_dim, cfg.num_heads, cfg.qkv_bias, cfg.qk_norm)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.mlp = Mlp(cfg.embed_dim, cfg.mlp_hidden)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ConvStem(nn.Module):
    """3x3x3 convolutions, each GroupNorm + GELU, stride 2 where the patch needs it, then 1x1x1.

    GroupNorm rather than Xiao et al.'s BatchNorm: a sample's tokens must not depend on the rest
    of its (tiny, per-rank) batch, and eval must see the same function as training.
    """

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = cfg.in_chans
        for stride, c in zip(cfg.stem_strides, cfg.stem_widths):
            layers += [
                nn.Conv3d(c_in, c, kernel_size=3, stride=stride, padding=1, bias=False),
                nn.GroupNorm(math.gcd(c, 8), c),
                nn.GELU(approximate="tanh"),
            ]
            c_in = c
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Conv3d(c_in, cfg.embed_dim, kernel_size=1)

    def forward(self, x):
        return self.proj(self.convs(x))


class VisionTransformer3D(nn.Module):
    """3D ViT encoder; ``forward(x_BCDHW) -> [B, embed_dim]`` pooled features."""

    def __init__(self, cfg: ViTConfig | None = None, **kwargs):
        super().__init__()
        if cfg is not None and kwargs:
            raise TypeError("pass either a ViTConfig or keyword arguments, not both")
        cfg = cfg if cfg is not None else ViTConfig(**kwargs)
        self.cfg = cfg
        self.num_features = self.embed_dim = cfg.embed_dim
        self.grad_checkpointing = cfg.grad_checkpointing
        if cfg.stem == "conv":
            self.patch_embed: nn.Module = ConvStem(cfg)
        else:
            self.patch_embed = nn.Conv3d(cfg.in_chans, cfg.embed_dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim)) if cfg.pool == "cls" else None
        if cfg.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, math.prod(cfg.grid), cfg.embed_dim))
        else:
            self.register_parameter("pos_embed", None)
        self._pos_cache: dict = {}
        rates = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(Block(cfg, r) for r in rates)
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.reset_parameters()
        # Built after the init (PyTorch's default, U(+-1/sqrt(scales))): with the same seed every
        # other weight equals the encoder's without blob channels. Not zero: Adam moves a weight
        # by ~lr per step, and from zero the map stayed too small to matter for 600 steps.
        self.blob_embed = None
        if cfg.blob_sigmas_vox:
            self.blob_embed = nn.Conv3d(len(cfg.blob_sigmas_vox), cfg.embed_dim, kernel_size=1)

    # ----- init -------------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """timm/MAE init: trunc-normal(0.02) linears and tokens, Xavier patch projection."""
        if self.norm.weight.device.type == "meta":
            return  # shape-only model (parameter counting); nothing to fill
        if isinstance(self.patch_embed, ConvStem):
            for m in self.patch_embed.modules():
                if isinstance(m, nn.Conv3d):  # He init for the GELU convs, as in ResNets
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif isinstance(m, nn.GroupNorm):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
            proj = self.patch_embed.proj
        else:
            proj = self.patch_embed
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
        nn.init.zeros_(proj.bias)
        if getattr(self, "blob_embed", None) is not None:
            self.blob_embed.reset_parameters()
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    # ----- forward ----------------------------------------------------------------------
    def _pos(self, grid: tuple[int, int, int], x: torch.Tensor) -> torch.Tensor:
        if self.pos_embed is not None:
            if grid == self.cfg.grid:
                return self.pos_embed
            g0 = self.cfg.grid
            table = self.pos_embed.reshape(1, *g0, -1).permute(0, 4, 1, 2, 3)
            table = F.interpolate(table, size=grid, mode="trilinear", align_corners=False)
            return table.permute(0, 2, 3, 4, 1).reshape(1, math.prod(grid), -1)
        key = (grid, x.device, x.dtype)
        if key not in self._pos_cache:  # fixed table: build once per grid/device/dtype
            self._pos_cache[key] = sincos_pos_embed_3d(grid, self.embed_dim, x.device, x.dtype)[None]
        return self._pos_cache[key]

    def forward_features(self, x_BCDHW: torch.Tensor) -> torch.Tensor:
        """Tokens after the final norm: ``[B, N(+1 CLS first), E]``."""
        if x_BCDHW.dim() != 5 or x_BCDHW.shape[1] != self.cfg.in_chans:
            raise ValueError(f"expected input [B, {self.cfg.in_chans}, D, H, W], got {tuple(x_BCDHW.shape)}")
        bad = [s for s, p in zip(x_BCDHW.shape[2:], self.cfg.patch_size) if s % p]
        if bad:
            raise ValueError(f"input {tuple(x_BCDHW.shape[2:])} is not a multiple of patch_size {self.cfg.patch_size}")
        x = self.patch_embed(x_BCDHW)
        if self.blob_embed is not None:  # each token: its patch's largest blob response per scale
            p = self.cfg.patch_size
            x = x + self.blob_embed(F.max_pool3d(self.blob_channels(x_BCDHW), kernel_size=p, stride=p))
        grid = tuple(x.shape[2:])
        x_BNE = x.flatten(2).transpose(1, 2)
        x_BNE = x_BNE + self._pos(grid, x_BNE)
        if self.cls_token is not None:
            x_BNE = torch.cat([self.cls_token.expand(x_BNE.shape[0], -1, -1).to(x_BNE.dtype), x_BNE], dim=1)
        for blk in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x_BNE = checkpoint(blk, x_BNE, use_reentrant=False)
            else:
                x_BNE = blk(x_BNE)
        return self.norm(x_BNE)

    def blob_channels(self, x_BCDHW: torch.Tensor) -> torch.Tensor:
        """The fixed blob channels ``[B, len(cfg.blob_sigmas_vox), D, H, W]``, in the input's dtype."""
        cfg = self.cfg
        size = x_BCDHW.shape[2:]
        chans = []
        for sigma in cfg.blob_sigmas_vox:
            r = dot_filter(x_BCDHW[:, 0], sigma, cfg.blob_stride)[:, None] * cfg.blob_gain
            if r.shape[2:] != size:  # computed on a strided grid: repeat each value over its block
                r = F.interpolate(r, scale_factor=cfg.blob_stride, mode="nearest")[..., : size[0], : size[1], : size[2]]
            chans.append(r.to(x_BCDHW.dtype))
        return torch.cat(chans, 1)

    def pool(self, tok_BNE: torch.Tensor) -> torch.Tensor:
        if self.cfg.pool == "cls":
            return tok_BNE[:, 0]
        return tok_BNE.amax(dim=1) if self.cfg.pool == "max" else tok_BNE.mean(dim=1)

    def forward(self, x_BCDHW: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_features(x_BCDHW))

    # ----- accounting -------------------------------------------------------------------
    def flops_per_sample(self, training: bool = True, img_size: tuple[int, int, int] | None = None) -> float:
        """Analytic matmul FLOPs for one sample (training = 3x forward: fwd + 2x in backward)."""
        return vit_flops(self.cfg, img_size=img_size, training=training)


# ----- registered sizes -------------------------------------------------------------------


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered model; ``overrides`` are its config's fields (img_size, pool, ...)."""
    return get_config(name, **overrides).build()


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
