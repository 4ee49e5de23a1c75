"""Frozen-encoder embeddings of every scan of a shards folder, cached on disk.

Reads the canonical int16 volumes straight from the Zarr store (row = labels row, see
docs/formats.md), in manifest order, so every `ok` scan of a split is embedded exactly once
(the training loader drops a remainder per epoch; evaluation must not). The cache key is the
encoder's weights digest plus the manifest digest: a new checkpoint or new shards re-embed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tte_scale.errors import InputError

__all__ = ["Embeddings", "embed_shards", "file_digest"]


@dataclass(frozen=True)
class Embeddings:
    """Per split: the scan ids (manifest order) and their pooled features [N, D]."""

    scan_id: dict[str, np.ndarray]
    features: dict[str, np.ndarray]


def file_digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def _manifest(shards: Path):
    import pyarrow.parquet as pq

    path = shards / "manifest" / "samples.parquet"
    if not path.is_file():
        raise InputError(f"{path}: not found; is {shards} a folder written by `tte-scale shard`?")
    if not (shards / "zarr").is_dir():
        raise InputError(f"{shards / 'zarr'}: not found; evaluation reads the Zarr copy (shard with --format zarr or both)")
    return path, pq.read_table(path, columns=["row", "scan_id", "split", "status"]).to_pydict()


@torch.no_grad()
def embed_shards(encoder: torch.nn.Module, shards_dir: str | Path, splits: tuple[str, ...], *,
                 batch_size: int = 8, hu_window: tuple[float, float] = (-1000.0, 1000.0),
                 device: str | torch.device = "cpu", cache_dir: str | Path | None = None,
                 cache_key: str = "", progress: bool = True) -> Embeddings:
    """Embed every `ok` scan of ``splits``; reuse ``cache_dir/<key>.npz`` when it matches."""
    import zarr
    from tqdm import tqdm

    from tte_scale.data import hu_to_float

    shards = Path(shards_dir)
    mpath, man = _manifest(shards)
    key = f"{cache_key}-{file_digest(mpath)}-{hu_window[0]:g}_{hu_window[1]:g}"
    cache = Path(cache_dir) / f"{key}.npz" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            if all(f"{s}/features" in z for s in splits):
                return Embeddings({s: z[f"{s}/scan_id"] for s in splits}, {s: z[f"{s}/features"] for s in splits})
    volumes = zarr.open_group(str(shards / "zarr"), mode="r")["volumes"]
    encoder = encoder.to(device).eval()
    ids, feats = {}, {}
    for split in splits:
        pick = [i for i, (sp, st) in enumerate(zip(man["split"], man["status"])) if sp == split and st == "ok"]
        if not pick:
            raise InputError(f"{mpath}: no readable scans in split {split!r}")
        rows = [man["row"][i] for i in pick]
        out = []
        for start in tqdm(range(0, len(rows), batch_size), desc=f"embed {split}", disable=not progress,
                          unit="batch"):
            chunk = rows[start:start + batch_size]
            vol = np.stack([np.asarray(volumes[r]) for r in chunk])[:, None]  # [b, 1, D, H, W] int16
            x = hu_to_float(torch.from_numpy(vol).to(device), *hu_window)
            out.append(encoder(x).float().cpu().numpy())
        ids[split] = np.asarray([man["scan_id"][i] for i in pick])
        feats[split] = np.concatenate(out).astype(np.float32)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, **{f"{s}/scan_id": ids[s] for s in splits}, **{f"{s}/features": feats[s] for s in splits})
        tmp.replace(cache)
        (cache.parent / f"{key}.json").write_text(json.dumps({"shards": str(shards), "splits": list(splits)}))
    return Embeddings(ids, feats)
