"""Fingerprints of what embeddings depend on: file contents and an encoder's weights."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from tte_scale.hashing import update_from_file

__all__ = ["file_digest", "weights_digest"]


def file_digest(*paths: Path | str) -> str:
    """sha256 (16 hex digits) of the files' contents; a path may be an fsspec URL."""
    from tte_scale.data.storage import is_remote, read_bytes

    h = hashlib.sha256()
    for p in paths:
        if is_remote(p):
            h.update(read_bytes(str(p)))
            continue
        update_from_file(h, p)
    return h.hexdigest()[:16]


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of the model's state (names, dtypes, shapes and bytes, in name order)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-dim too (BatchNorm)
    return h.hexdigest()
