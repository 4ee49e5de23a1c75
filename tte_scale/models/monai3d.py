"""The seed paper's three other backbones, built from MONAI's networks, as pooled-feature encoders.

Legend: B batch, C input channels, D/H/W volume voxels, F pooled feature width.

* ``swinunetr_encoder``: the Swin transformer of MONAI's SwinUNETR (``swinViT``: patch 2, window 7,
  depths 2-2-2-2, heads 3-6-12-24, ``feature_size`` 48 as in MONAI's self-supervised weights),
  its last stage (``normalize=True``: layer-normed, as SwinUNETR reads it) averaged over space:
  F = 16 * feature_size = 768.
* ``densenet121_3d``: ``monai.networks.nets.DenseNet121(spatial_dims=3)``'s ``features`` then
  ReLU and global average pooling (its own classifier head without the last Linear): F = 1024.
* ``resnet152_3d``: ``monai.networks.nets.resnet152(spatial_dims=3, feed_forward=False)`` with
  MONAI's defaults (7x7x7 stem, depth stride 1, shortcut B): global average pooling, F = 2048.

Each encoder is ``forward(x_BCDHW) -> [B, F]`` like ``VisionTransformer3D`` (same TTE and
supervised heads, same trainer), and its ``state_dict`` keys are MONAI's own (``swinViT.*``,
``features.*``, ``conv1.*``/``layer1.*``), so MONAI checkpoints map onto it
(``tte_scale.models.weights``). Configs are registered by name; ``monai`` is imported only when a
model is built, so the registry and the accounting stay cheap to import.

Accounting (``params``, ``flops``) comes from the architecture run on the meta device (shapes
only, no compute). FLOPs count what torch's ``FlopCounterMode`` counts (convolutions, linear layers, the
window attention's two matmuls; 2 per multiply-add; norms, pooling and activations left out),
from forward hooks on the modules, so the test against the counter checks an independent path.
Training = 3x the forward, as for the ViT (``tte_scale/models/accounting.py``).

``grad_checkpointing`` recomputes each stage in backward; with BatchNorm (DenseNet, ResNet) the
recomputation updates the running statistics a second time (as torchvision's memory-efficient
DenseNet does): training is unchanged, the eval-mode statistics move slightly faster.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from tte_scale.config import check
from tte_scale.models.registry import register_model

__all__ = [
    "Backbone3DConfig",
    "DenseNet121Config",
    "DenseNetEncoder3D",
    "ResNet152Config",
    "ResNetEncoder3D",
    "SwinEncoder3D",
    "SwinEncoderConfig",
    "backbone_flops",
]


def _triple(v) -> tuple[int, int, int]:
    v = (v, v, v) if isinstance(v, int) else tuple(int(x) for x in v)
    if len(v) != 3:
        raise ValueError(f"expected 3 values (D, H, W), got {v}")
    return v  # type: ignore[return-value]


@dataclass(kw_only=True, slots=True)
class Backbone3DConfig:
    """What every MONAI backbone takes (the subclasses add their own fields)."""

    ARCHITECTURE: ClassVar[str] = ""
    MIN_SIDE: ClassVar[int] = 1
    META_BUILD: ClassVar[bool] = True

    img_size: tuple[int, int, int] = (160, 224, 224)
    """Nominal input (D, H, W) in voxels: sets the FLOPs figure (any input size runs)."""
    in_chans: int = 1
    """Input channels (1 for CT)."""
    grad_checkpointing: bool = False
    """Recompute each stage's activations in backward (less memory, ~1/3 more compute)."""

    def __post_init__(self):
        self.img_size = _triple(self.img_size)
        check(self.in_chans >= 1, "in_chans", f"must be >= 1, got {self.in_chans}")
        check(
            all(s >= self.MIN_SIDE for s in self.img_size),
            "img_size",
            f"{self.ARCHITECTURE} needs every side >= {self.MIN_SIDE} voxels (it downsamples 32x), "
            f"got {list(self.img_size)}",
        )

    def to_json(self) -> dict:
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in dataclasses.fields(self)
        }

    def build(self) -> nn.Module:
        return _ENCODERS[self.ARCHITECTURE](self)

    def params(self) -> int:
        return _accounting(type(self), json.dumps(self.to_json(), sort_keys=True), tuple(self.img_size))[0]

    def largest_tensor(self) -> int:
        return _accounting(type(self), json.dumps(self.to_json(), sort_keys=True), tuple(self.img_size))[1]

    def flops(self, img_size: tuple[int, int, int] | None = None, training: bool = True) -> float:
        img = tuple(img_size) if img_size is not None else tuple(self.img_size)
        f = _accounting(type(self), json.dumps(self.to_json(), sort_keys=True), img)[2]
        return 3.0 * f if training else f

    def tokens(self, img_size: tuple[int, int, int] | None = None) -> int:
        """Positions of the last feature map (what the pooling averages): the telemetry's "tokens"."""
        img = tuple(img_size) if img_size is not None else tuple(self.img_size)
        return _accounting(type(self), json.dumps(self.to_json(), sort_keys=True), img)[3]


@dataclass(kw_only=True, slots=True)
class SwinEncoderConfig(Backbone3DConfig):
    """SwinUNETR's Swin encoder (``swinViT``)."""

    ARCHITECTURE: ClassVar[str] = "SwinEncoder3D"
    MIN_SIDE: ClassVar[int] = 2
    META_BUILD: ClassVar[bool] = False  # MONAI's SwinTransformer reads its drop-path rates with .item()

    feature_size: int = 48
    """Width of the first stage (SwinUNETR's ``feature_size``; MONAI's SSL weights use 48);
    the pooled feature is 16x this. Must be a multiple of 12."""
    drop_path_rate: float = 0.0
    """Stochastic depth, linearly increasing to this rate over the 8 blocks."""

    def __post_init__(self):
        Backbone3DConfig.__post_init__(self)
        check(
            self.feature_size >= 12 and self.feature_size % 12 == 0,
            "feature_size",
            f"must be a positive multiple of 12 (SwinUNETR), got {self.feature_size}",
        )
        check(0.0 <= self.drop_path_rate < 1.0, "drop_path_rate", f"must be in [0, 1), got {self.drop_path_rate}")

    @property
    def num_features(self) -> int:
        return 16 * self.feature_size


@dataclass(kw_only=True, slots=True)
class DenseNet121Config(Backbone3DConfig):
    """MONAI's DenseNet121 in 3D (init features 64, growth 32, blocks 6-12-24-16)."""

    ARCHITECTURE: ClassVar[str] = "DenseNetEncoder3D"
    MIN_SIDE: ClassVar[int] = 32  # the third transition's 2x2x2 average pool needs 2 voxels left

    @property
    def num_features(self) -> int:
        return 1024


@dataclass(kw_only=True, slots=True)
class ResNet152Config(Backbone3DConfig):
    """MONAI's resnet152 in 3D (bottleneck blocks 3-8-36-3, MONAI's default stem)."""

    ARCHITECTURE: ClassVar[str] = "ResNetEncoder3D"

    @property
    def num_features(self) -> int:
        return 2048


def _stage(module: nn.Module, x: torch.Tensor, ckpt: bool) -> torch.Tensor:
    if ckpt and torch.is_grad_enabled():
        return checkpoint(module, x, use_reentrant=False)
    return module(x)


def _check_input(x: torch.Tensor, cfg: Backbone3DConfig) -> None:
    if x.dim() != 5 or x.shape[1] != cfg.in_chans:
        raise ValueError(f"expected input [B, {cfg.in_chans}, D, H, W], got {tuple(x.shape)}")
    if min(x.shape[2:]) < cfg.MIN_SIDE:
        raise ValueError(f"{cfg.ARCHITECTURE} needs every side >= {cfg.MIN_SIDE} voxels, got {tuple(x.shape[2:])}")


class _Encoder(nn.Module):
    cfg: Backbone3DConfig

    def forward(self, x_BCDHW: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x_BCDHW).mean(dim=(2, 3, 4))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def flops_per_sample(self, training: bool = True, img_size: tuple[int, int, int] | None = None) -> float:
        """Forward FLOPs counted as torch's FlopCounterMode does (training = 3x forward)."""
        return self.cfg.flops(img_size=img_size, training=training)


class SwinEncoder3D(_Encoder):
    """``forward(x) -> [B, 16 * feature_size]``: SwinUNETR's last encoder stage, layer-normed, averaged."""

    def __init__(self, cfg: SwinEncoderConfig):
        super().__init__()
        from monai.networks.nets.swin_unetr import SwinTransformer

        self.cfg = cfg
        self.num_features = self.embed_dim = cfg.num_features
        self.grad_checkpointing = cfg.grad_checkpointing
        # SwinUNETR's own arguments to its swinViT (monai/networks/nets/swin_unetr.py), defaults kept.
        self.swinViT = SwinTransformer(
            in_chans=cfg.in_chans,
            embed_dim=cfg.feature_size,
            window_size=(7, 7, 7),
            patch_size=(2, 2, 2),
            depths=(2, 2, 2, 2),
            num_heads=(3, 6, 12, 24),
            mlp_ratio=4.0,
            qkv_bias=True,
            drop_path_rate=cfg.drop_path_rate,
            spatial_dims=3,
            downsample="merging",
        )

    def forward_features(self, x_BCDHW: torch.Tensor) -> torch.Tensor:
        _check_input(x_BCDHW, self.cfg)
        s = self.swinViT
        for layer in (s.layers1, s.layers2, s.layers3, s.layers4):  # MONAI's use_checkpoint, switchable
            for blk in layer[0].blocks:
                blk.use_checkpoint = self.grad_checkpointing
        return s(x_BCDHW, normalize=True)[-1]


class DenseNetEncoder3D(_Encoder):
    """``forward(x) -> [B, 1024]``: DenseNet121's features, ReLU, global average pooling."""

    def __init__(self, cfg: DenseNet121Config):
        super().__init__()
        from monai.networks.nets import DenseNet121

        self.cfg = cfg
        self.num_features = self.embed_dim = cfg.num_features
        self.grad_checkpointing = cfg.grad_checkpointing
        net = DenseNet121(spatial_dims=3, in_channels=cfg.in_chans, out_channels=1)
        self.features = net.features  # the classifier (class_layers) is not kept: no unused parameters

    def forward_features(self, x_BCDHW: torch.Tensor) -> torch.Tensor:
        _check_input(x_BCDHW, self.cfg)
        x = x_BCDHW
        for name, module in self.features.named_children():
            x = _stage(module, x, self.grad_checkpointing and name.startswith("denseblock"))
        return torch.relu(x)  # DenseNet's class_layers start with a ReLU


class ResNetEncoder3D(_Encoder):
    """``forward(x) -> [B, 2048]``: resnet152's stem and four stages, global average pooling."""

    STAGES = ("layer1", "layer2", "layer3", "layer4")

    def __init__(self, cfg: ResNet152Config):
        super().__init__()
        from monai.networks.nets import resnet152

        self.cfg = cfg
        self.num_features = self.embed_dim = cfg.num_features
        self.grad_checkpointing = cfg.grad_checkpointing
        net = resnet152(spatial_dims=3, n_input_channels=cfg.in_chans, feed_forward=False)
        self.no_max_pool = net.no_max_pool
        for name in ("conv1", "bn1", "act", "maxpool", *self.STAGES):  # MONAI's names: its checkpoints map 1:1
            self.add_module(name, getattr(net, name))

    def forward_features(self, x_BCDHW: torch.Tensor) -> torch.Tensor:
        _check_input(x_BCDHW, self.cfg)
        x = self.act(self.bn1(self.conv1(x_BCDHW)))
        if not self.no_max_pool:
            x = self.maxpool(x)
        for name in self.STAGES:
            x = _stage(getattr(self, name), x, self.grad_checkpointing)
        return x


_ENCODERS: dict[str, type[nn.Module]] = {
    "SwinEncoder3D": SwinEncoder3D,
    "DenseNetEncoder3D": DenseNetEncoder3D,
    "ResNetEncoder3D": ResNetEncoder3D,
}
CONFIGS: dict[str, type[Backbone3DConfig]] = {
    c.ARCHITECTURE: c for c in (SwinEncoderConfig, DenseNet121Config, ResNet152Config)
}


# ----- accounting ---------------------------------------------------------------------------


def backbone_flops(model: nn.Module, x: torch.Tensor) -> float:
    """Forward FLOPs of ``model(x)`` per sample, from hooks on its convolutions, linear layers and
    window attentions (output shapes only: ``x`` may be on the meta device)."""
    from monai.networks.nets.swin_unetr import WindowAttention

    total = [0.0]

    def conv(m: nn.Conv3d, inp, out):
        total[0] += 2.0 * out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)

    def linear(m: nn.Linear, inp, out):
        total[0] += 2.0 * (out.numel() // m.out_features) * m.in_features * m.out_features

    def attention(m: WindowAttention, inp, out):
        b, n, c = inp[0].shape  # (batch x windows, tokens per window, channels): QK^T and AV
        total[0] += 2 * (2.0 * b * n * n * c)

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv3d):
            hooks.append(m.register_forward_hook(conv))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear))
        elif isinstance(m, WindowAttention):
            hooks.append(m.register_forward_hook(attention))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return total[0] / x.shape[0]


@functools.lru_cache(maxsize=64)
def _accounting(cls: type, cfg_json: str, img: tuple[int, int, int]) -> tuple[int, int, float, int]:
    """(params, largest tensor, forward FLOPs per sample at ``img``, last feature map positions),
    from the model on the meta device, in eval mode (BatchNorm takes a 1-voxel batch of one)."""
    cfg = cls(**json.loads(cfg_json))
    if cls.META_BUILD:
        with torch.device("meta"):
            model = cfg.build()
    else:  # its constructor calls .item(), which the meta device refuses: build on the CPU, then move
        model = cfg.build().to("meta")
    model.eval()
    x = torch.empty(1, cfg.in_chans, *img, device="meta")
    sizes = [p.numel() for p in model.parameters()]
    with torch.no_grad():
        tokens = math.prod(model.forward_features(x).shape[2:])
    return sum(sizes), max(sizes), backbone_flops(model, x), tokens


# ----- registered names ----------------------------------------------------------------------


def _make(cls: type[Backbone3DConfig], overrides: dict) -> Backbone3DConfig:
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(overrides) - fields
    if unknown:
        raise TypeError(f"unknown {cls.__name__} field(s): {sorted(unknown)}")
    return cls(**overrides)


@register_model
def swinunetr_encoder(**kw) -> SwinEncoderConfig:  # 8.1 M at feature_size 48
    return _make(SwinEncoderConfig, kw)


@register_model
def densenet121_3d(**kw) -> DenseNet121Config:  # 11.2 M
    return _make(DenseNet121Config, kw)


@register_model
def resnet152_3d(**kw) -> ResNet152Config:  # 117 M (3x3x3 kernels)
    return _make(ResNet152Config, kw)
