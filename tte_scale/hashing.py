"""File digests: one streaming reader for every stage that hashes files (shard manifests, the
shard cache, labels fingerprints, embedding cache keys)."""

from __future__ import annotations

import hashlib
from pathlib import Path

BLOCK = 1 << 22
"""Bytes read at a time: large enough to keep the loop off the profile, small enough for RAM."""


def update_from_file(h, path: str | Path):
    """Feed the file's bytes to the hash object ``h`` (a ``hashlib`` object) and return it."""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            h.update(block)
    return h


def sha256_file(path: str | Path) -> str:
    """The file's sha256, hex."""
    return update_from_file(hashlib.sha256(), path).hexdigest()
