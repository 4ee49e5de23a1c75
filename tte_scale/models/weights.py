"""``model.init_weights``: starting weights for an encoder from a local file, keys mapped, all or nothing.

The file is a safetensors file or a torch checkpoint read with ``weights_only=True`` (no code
runs on load). A checkpoint that wraps its tensors (``{"state_dict": ...}``, ``{"model": ...}``,
as MONAI's self-supervised Swin weights and most training scripts do) is unwrapped.

Key mapping: wrappers that training code adds in front of the encoder's own names are dropped from
both sides before matching: ``module.`` (DataParallel / DeepSpeed), ``_orig_mod.``
(``torch.compile``), ``encoder.`` (tte_scale's own full-model checkpoints), ``swinViT.`` /
``swin_vit.`` (MONAI's SwinUNETR and its SSL pretraining code, whose checkpoint names the Swin
encoder ``module.layers1.0...``). ``ignore`` drops further keys by prefix (after mapping), e.g. the
SSL checkpoint's ``rotation_head.``/``contrastive_head.``/``conv.`` that are not part of the encoder.

Refused, with every offending key listed (a half-loaded backbone trains from a mix of random and
pretrained layers, and a wrong-shape or missing tensor gives NaNs or silent garbage): any encoder
tensor the file lacks, any file tensor the encoder lacks (unless ignored), any shape that differs.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from tte_scale.errors import InputError

__all__ = ["read_state_dict", "map_state_dict", "load_init_weights", "WRAPPER_PREFIXES"]

WRAPPER_PREFIXES = ("module.", "_orig_mod.", "encoder.", "swinViT.", "swin_vit.")
_CONTAINERS = ("state_dict", "model", "model_state_dict", "module")


def _canonical(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in WRAPPER_PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p) :], True
    return key


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file or a torch checkpoint (``weights_only=True``), unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model.init_weights {path}: not found (a .safetensors file or a torch state dict)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is one line naming the file
        raise InputError(
            f"model.init_weights {path}: cannot read weights ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            "expected a .safetensors file or a torch state dict loadable with weights_only=True"
        ) from None
    for _ in range(3):  # {"state_dict": {...}}, {"model": {"module": {...}}}, ...
        if isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
            inner = [k for k in _CONTAINERS if isinstance(state.get(k), dict)]
            if not inner:
                break
            state = state[inner[0]]
    if not isinstance(state, dict) or not state:
        raise InputError(f"model.init_weights {path}: holds no state dict (a mapping of names to tensors)")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise InputError(
            f"model.init_weights {path}: no tensors at the top level (keys: {sorted(state)[:8]}); "
            f"expected a state dict or one wrapped under {'/'.join(_CONTAINERS)}"
        )
    return tensors


def _short(keys: list[str], n: int = 12) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def map_state_dict(
    state: dict[str, torch.Tensor], model: nn.Module, ignore: Iterable[str] = (), source: str = "model.init_weights"
) -> dict[str, torch.Tensor]:
    """``state`` renamed to ``model``'s keys; InputError listing missing, unexpected, mismatched keys."""
    own = model.state_dict()
    by_canon: dict[str, str] = {}
    for k in own:
        c = _canonical(k)
        if c in by_canon:
            raise ValueError(f"{type(model).__name__}: keys {by_canon[c]!r} and {k!r} map to the same name")
        by_canon[c] = k
    ignore = tuple(ignore)
    mapped: dict[str, torch.Tensor] = {}
    unexpected, duplicate = [], []
    for k, v in state.items():
        c = _canonical(k)
        if ignore and c.startswith(ignore):
            continue
        if c not in by_canon:
            unexpected.append(k)
        elif by_canon[c] in mapped:
            duplicate.append(k)
        else:
            mapped[by_canon[c]] = v
    missing = [k for k in own if k not in mapped]
    shapes = [
        f"{k} {tuple(mapped[k].shape)} vs {tuple(own[k].shape)}" for k in mapped if mapped[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} of the encoder's {len(own)} tensors: {_short(missing)}")
    if unexpected:
        heads = sorted({_canonical(k).split(".")[0] + "." for k in unexpected})
        problems.append(
            f"{len(unexpected)} unexpected tensors: {_short(unexpected)} (if they are not part of the encoder, "
            f"drop them with model.init_weights_ignore={heads})"
        )
    if duplicate:
        problems.append(f"{len(duplicate)} tensors map to a name given twice: {_short(duplicate)}")
    if shapes:
        problems.append(f"{len(shapes)} shapes differ (file vs encoder): {_short(shapes, 6)}")
    if problems:
        raise InputError(
            f"{source}: the weights do not match {type(model).__name__} (wrappers "
            f"{'/'.join(WRAPPER_PREFIXES)} stripped): " + "; ".join(problems) + ". Refusing a partial load."
        )
    return mapped


@torch.no_grad()
def load_init_weights(model: nn.Module, path: str | Path, ignore: Iterable[str] = ()) -> None:
    """Copy the weights of ``path`` into ``model`` (all of them, or InputError and ``model`` untouched)."""
    state = map_state_dict(read_state_dict(path), model, ignore, source=f"model.init_weights {path}")
    own = model.state_dict()
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise InputError(f"model.init_weights {path}: non-finite values in {_short(bad)}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
