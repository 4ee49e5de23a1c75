"""Tiny shards + labels folder for the trainer's multi-process tests (real formats on disk).

Shards come from the shared test writer (tests/support/shards.py, the exact
docs/formats.md layout); the labels folder (bins.json, rows.parquet, tte.zarr) is written
from the same labels so the bias prefit reads what the loader serves.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, when run outside pytest
from support.shards import write_shards  # noqa: E402

SHAPE = (8, 16, 16)
K, T = 6, 3
BIN_STARTS = [0.0, 30.0, 365.0, 1000.0]


def make_data(root: Path, n_train: int = 16, n_tuning: int = 8, shape=SHAPE) -> tuple[Path, Path]:
    """Write ``root/shards`` and ``root/labels`` (volumes of ``shape``); returns both paths."""
    import zarr

    splits = ["train"] * n_train + ["tuning"] * n_tuning
    shards = root / "shards"
    out = write_shards(shards, n=len(splits), shape=shape, splits=splits, K=K, T=T, samples_per_shard=4, seed=3)
    labels = root / "labels"
    labels.mkdir(parents=True, exist_ok=True)
    (labels / "bins.json").write_text(json.dumps({
        "format_version": 1, "bin_starts_days": BIN_STARTS, "num_bins": len(BIN_STARTS), "config": {},
        "bench_tasks": [f"task{t}" for t in range(T)], "software": {}}))
    pq.write_table(pa.table({"scan_id": out["scan_ids"], "subject_id": list(range(len(splits))),
                             "split": splits}), labels / "rows.parquet")
    g = zarr.open_group(str(labels / "tte.zarr"), mode="w")
    g.create_array("time", data=np.stack([lab["tte_time"] for lab in out["labels"]]))
    g.create_array("event", data=np.stack([lab["tte_event"] for lab in out["labels"]]))
    return shards, labels


def config_overrides(shards: Path, labels: Path, out_dir: Path, shape=SHAPE) -> list[str]:
    """--set overrides of configs/pretrain/demo.yaml for a seconds-long CPU run."""
    return [
        f"out_dir={out_dir}", f"data.shards_dir={shards}", f"data.labels_dir={labels}",
        "data.format=zarr", "data.num_workers=0", "data.shuffle_window=8",
        "model.name=vit3d_tiny", f"model.img_size=[{shape[0]},{shape[1]},{shape[2]}]",
        "model.patch_size=[4,8,8]", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
        "model.drop_path_rate=0.1", "head.rank=8", "head.bias_prefit=false",
        "optim.global_batch_size=4", "optim.lr=0.01", "optim.warmup_steps=2", "optim.weight_decay=0.01",
        "max_steps=8", "eval.max_batches=2", "checkpoint.every_steps=2", "checkpoint.keep_last=10",
        "telemetry.progress_bar=false", "telemetry.tensorboard=false", "zero.precision=fp32", "device=cpu",
    ]
