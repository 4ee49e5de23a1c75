"""Export and load an encoder without DeepSpeed: ``model.safetensors`` + ``config.json``.

``config.json``: ``{"format_version": 1, "architecture": "VisionTransformer3D" (or a MONAI
backbone: "SwinEncoder3D", "DenseNetEncoder3D", "ResNetEncoder3D"), "model_name": <registry name
or null>, "config": {the architecture's config fields}, "preprocessing":
{"normalizer": "tte_scale.data.hu_to_float", "hu_window": [min, max]}, "pretraining": {...}}``.
``preprocessing`` is how the training volumes were turned into floats: a user of the encoder
must feed it volumes normalized the same way (``read_export_config(path)["preprocessing"]``).
Both it and ``pretraining`` (objective, steps: provenance) are optional, so exports written
before they existed still load. Loading needs only torch and safetensors, so probes and other
projects can use a pretrained encoder directly.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tte_scale.config import ConfigError, from_dict
from tte_scale.errors import InputError
from tte_scale.models.monai3d import CONFIGS as MONAI_CONFIGS
from tte_scale.models.vit3d import ViTConfig

__all__ = ["save_pretrained", "load_pretrained", "read_export_config", "EXPORT_FORMAT_VERSION"]

EXPORT_FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
NORMALIZER = "tte_scale.data.hu_to_float"
CONFIG = "config.json"
ARCHITECTURES = {"VisionTransformer3D": ViTConfig, **MONAI_CONFIGS}
"""``config.json`` architecture -> its config class (whose ``build()`` makes the encoder)."""


def architecture_of(model: torch.nn.Module) -> str:
    """The export name of an encoder's architecture (TypeError for anything else)."""
    if (
        type(model).__name__ in ARCHITECTURES
        and type(getattr(model, "cfg", None)) is ARCHITECTURES[type(model).__name__]
    ):
        return type(model).__name__
    raise TypeError(
        f"save_pretrained expects a registered encoder ({', '.join(ARCHITECTURES)}), got {type(model).__name__}"
    )


def save_pretrained(
    model: torch.nn.Module,
    path: str | Path,
    model_name: str | None = None,
    *,
    hu_window: tuple[float, float] | None = None,
    pretraining: dict | None = None,
) -> Path:
    """Write ``path/model.safetensors`` and ``path/config.json`` (weights first, config last,
    each through a temporary file, so a folder with a config always has complete weights).

    ``hu_window``: the (min, max) HU that ``hu_to_float`` mapped to [0, 1] in training;
    ``pretraining``: JSON-able provenance (objective, steps, ...)."""
    architecture = architecture_of(model)
    if hu_window is not None:
        hu_window = _check_window(hu_window, "hu_window")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = path / (WEIGHTS + ".tmp")
    save_file(state, str(tmp), metadata={"format_version": str(EXPORT_FORMAT_VERSION)})
    tmp.replace(path / WEIGHTS)
    meta = {
        "format_version": EXPORT_FORMAT_VERSION,
        "architecture": architecture,
        "model_name": model_name,
        "config": model.cfg.to_json(),
    }
    if hu_window is not None:
        meta["preprocessing"] = {"normalizer": NORMALIZER, "hu_window": list(hu_window)}
    if pretraining is not None:
        meta["pretraining"] = pretraining
    tmp = path / (CONFIG + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(path / CONFIG)
    return path


def _check_window(window, where: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in window)
    except (TypeError, ValueError):
        raise InputError(f"{where}: expected [min, max] HU, got {window!r}") from None
    if not lo < hi:
        raise InputError(f"{where}: min must be < max, got {window!r}")
    return lo, hi


def read_export_config(path: str | Path) -> dict:
    """``config.json`` of an export folder (or of a ``.safetensors`` file's folder), checked.

    ``["preprocessing"]["hu_window"]`` is a (min, max) tuple when the export stores it; the key
    is absent for exports written before the window was stored.
    """
    path = Path(path)
    cfg_file = (path.parent if path.suffix == ".safetensors" else path) / CONFIG
    if not cfg_file.is_file():
        raise InputError(f"{cfg_file}: not found (expected an encoder exported with save_pretrained)")
    try:
        meta = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{cfg_file}: invalid JSON: {exc}") from None
    if meta.get("format_version") != EXPORT_FORMAT_VERSION or meta.get("architecture") not in ARCHITECTURES:
        raise InputError(
            f"{cfg_file}: unsupported export (format_version={meta.get('format_version')!r}, "
            f"architecture={meta.get('architecture')!r}); this version reads format 1 of "
            f"{', '.join(ARCHITECTURES)}"
        )
    pre = meta.get("preprocessing")
    if pre is not None:
        if pre.get("normalizer") != NORMALIZER:
            raise InputError(
                f"{cfg_file}: preprocessing.normalizer {pre.get('normalizer')!r}; this version "
                f"knows {NORMALIZER!r} only"
            )
        pre["hu_window"] = _check_window(pre.get("hu_window"), f"{cfg_file}: preprocessing.hu_window")
    return meta


def load_pretrained(path: str | Path, map_location: str | torch.device = "cpu", **overrides) -> torch.nn.Module:
    """Build the encoder from ``path/config.json`` and load ``path/model.safetensors``.

    ``overrides`` change run-time fields (e.g. ``grad_checkpointing=True``, ``drop_path_rate``).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        path = path.parent
    cfg_file, w_file = path / CONFIG, path / WEIGHTS
    for f in (cfg_file, w_file):
        if not f.is_file():
            raise InputError(f"{f}: not found (expected an encoder exported with save_pretrained)")
    meta = read_export_config(path)
    try:
        cfg = from_dict(ARCHITECTURES[meta["architecture"]], {**meta["config"], **overrides})
    except ConfigError as exc:
        raise InputError(f"{cfg_file}: bad model config: {exc}") from None
    model = cfg.build()
    state = load_file(str(w_file), device=str(map_location))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(
            f"{w_file}: weights do not match config.json (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    return model.to(map_location)
