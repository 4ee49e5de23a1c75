"""A tiny input of `tte-scale embed`: a shards folder (both formats) and an exported encoder.

Three splits of uneven sizes, three samples per WebDataset shard and one volume per Zarr shard
file (``zarr_shard_rows=1``: deleting a file loses exactly one scan), so that parts, shards and
ranks cut the scans at different places.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from support.shards import write_shards

SHAPE = (8, 8, 8)
SPLITS = ["train"] * 7 + ["tuning"] * 4 + ["held_out"] * 5


def write_embed_inputs(root: Path, *, seed: int = 0) -> dict:
    """root/shards and root/encoder; returns write_shards' info (scan ids, splits, volumes)."""
    from support.eval_inputs import write_encoder

    info = write_shards(
        root / "shards", n=len(SPLITS), shape=SHAPE, splits=SPLITS, samples_per_shard=3, zarr_shard_rows=1, seed=seed
    )
    write_encoder(root / "encoder", seed=seed)
    return info


def drop_zarr(shards: Path) -> Path:
    """Make ``shards`` a WebDataset-only build: no zarr/ folder, no zarr row in shards.parquet."""
    import shutil

    path = shards / "manifest" / "shards.parquet"
    table = pq.read_table(path)
    keep = np.asarray(table.column("format").to_pylist()) != "zarr"
    pq.write_table(table.filter(pa.array(keep)), path)
    shutil.rmtree(shards / "zarr")
    return shards


def reference_vectors(encoder_dir: Path, volumes, hu_window=(-1000.0, 1000.0)) -> np.ndarray:
    """Each volume through the encoder on its own (batch of one): what every row must be close to."""
    import torch

    from tte_scale.data import hu_to_float
    from tte_scale.models import load_pretrained

    enc = load_pretrained(encoder_dir).eval()
    with torch.no_grad():
        return np.stack([enc(hu_to_float(torch.from_numpy(v)[None, None], *hu_window))[0].numpy() for v in volumes])


def embed_argv(root: Path, *extra, out: str = "emb", shards: str = "shards") -> list[str]:
    argv = ["embed", "--encoder", root / "encoder", "--shards", root / shards, "--out", root / out]
    return [str(a) for a in (*argv, "--part-size", "3", "--batch-size", "2", *extra)]
