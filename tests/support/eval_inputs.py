"""A tiny complete input of `tte-scale eval`: shards, a labels folder's bench.parquet, a task
file and exported encoders, in seconds on a CPU.

The benchmark label of a scan is mostly whether its volume is bright (a brightness offset added
to the phantom; 15% of the labels flipped so that the probes converge), so that an encoder, even a
random one, ranks the classes well and the metrics are far from 0.5. One volume per Zarr shard
file (``zarr_shard_rows=1``): deleting a file loses exactly one scan.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from support.shards import phantom, write_shards
from tte_scale.ehr.store import BENCH_SCHEMA

SHAPE = (8, 8, 8)
SPLITS = ["train"] * 16 + ["tuning"] * 10 + ["held_out"] * 10
TASKS = ("bright", "bright_later")
TASK_YAML = """\
tasks:
  - name: bright
    codes: [X/1]
    horizon_days: 30
  - name: bright_later
    codes: [X/2]
    horizon_days: 60
"""


def write_eval_inputs(root: Path, *, seed: int = 0, shape=SHAPE) -> dict:
    """root/shards, root/labels/bench.parquet, root/tasks.yaml, root/encoder (a tiny ViT export),
    volumes of ``shape``."""
    rng = np.random.default_rng(seed)
    n = len(SPLITS)
    bright = np.array([i % 2 == 0 for i in range(n)])
    volumes = [(phantom(shape, rng) + (600 if b else 0)).astype(np.int16) for b in bright]
    info = write_shards(
        root / "shards",
        n=n,
        shape=shape,
        splits=SPLITS,
        K=4,
        T=len(TASKS),
        volumes=volumes,
        zarr_shard_rows=1,
        seed=seed,
    )
    flip = rng.random((n, len(TASKS))) < 0.15
    cols = {c: [] for c in ("scan_id", "subject_id", "split", "task", "label", "time", "event", "excluded")}
    for r in range(n):
        for j, task in enumerate(TASKS):
            event = bool(bright[r]) != bool(flip[r, j])  # mostly the brightness: not separable
            time = float(5 + 10 * j + rng.uniform(0, 5)) if event else float(100 + rng.uniform(0, 50))
            cols["scan_id"].append(info["scan_ids"][r])
            cols["subject_id"].append(r)
            cols["split"].append(SPLITS[r])
            cols["task"].append(task)
            cols["label"].append(event)
            cols["time"].append(time)
            cols["event"].append(event)
            cols["excluded"].append(None)
    (root / "labels").mkdir(parents=True)
    pq.write_table(pa.table(cols, schema=BENCH_SCHEMA), root / "labels" / "bench.parquet")
    (root / "tasks.yaml").write_text(TASK_YAML)
    write_encoder(root / "encoder", seed=seed, shape=shape)
    return {"scan_ids": info["scan_ids"], "splits": SPLITS}


def write_one_task_labels(root: Path, ids, splits, task: str, task_yaml: str, event, time) -> None:
    """root/labels/bench.parquet with the benchmark task ``task`` (label = event, subject = row,
    no scan excluded) and root/tasks.yaml, for tools that read a labels folder and a task set."""
    n = len(ids)
    bench = {"scan_id": list(ids), "subject_id": list(range(n)), "split": list(splits), "task": [task] * n,
             "label": list(map(bool, event)), "time": list(map(float, time)), "event": list(map(bool, event)),
             "excluded": [None] * n}  # fmt: skip
    (root / "labels").mkdir(parents=True)
    pq.write_table(pa.table(bench, schema=BENCH_SCHEMA), root / "labels" / "bench.parquet")
    (root / "tasks.yaml").write_text(task_yaml)


def write_encoder(path: Path, *, seed: int = 0, embed_dim: int = 16, hu_window=(-1000.0, 1000.0), shape=SHAPE) -> Path:
    import torch

    from tte_scale.models import save_pretrained
    from tte_scale.models.vit3d import VisionTransformer3D, ViTConfig

    torch.manual_seed(seed)
    cfg = ViTConfig(img_size=shape, patch_size=(4, 4, 4), embed_dim=embed_dim, depth=1, num_heads=2, pool="mean")
    return save_pretrained(VisionTransformer3D(cfg), path, hu_window=hu_window)


def eval_argv(root: Path, *extra, out: str = "eval") -> list[str]:
    argv = ["eval", "--checkpoint", root / "encoder", "--shards", root / "shards", "--labels", root / "labels"]
    argv += ["--out", root / out, "--tasks", root / "tasks.yaml", "--bootstrap", "20", "--no-progress", *extra]
    return [str(a) for a in argv]


GROWS_TASK_YAML = """\
tasks:
  - name: grows
    codes: [X/1]
    horizon_days: 30
"""


def size_driven_outcome(root: Path, split_sizes: dict[str, int], rng: np.random.Generator):
    """(scan ids, split per scan, size per scan) of a cohort where half the scans hold a finding of
    size in (0, 1], the others 0, and the outcome (an event within 30 days, task `grows`) gets
    likelier with the size; writes root/labels/bench.parquet and root/tasks.yaml."""
    n = sum(split_sizes.values())
    size = np.where(np.arange(n) % 2 == 0, rng.uniform(0.05, 1.0, n), 0.0)
    event = rng.random(n) < 1 / (1 + np.exp(-(6 * size - 2.5)))
    ids = [f"s{i:03d}" for i in range(n)]
    splits = [s for s, k in split_sizes.items() for _ in range(k)]
    time = np.where(event, rng.uniform(1, 29, n), rng.uniform(40, 90, n))
    write_one_task_labels(root, ids, splits, "grows", GROWS_TASK_YAML, event, time)
    return ids, splits, size


def write_eval_embeddings(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """An embeddings file in the layout `tte-scale eval` caches (tte_scale/eval/embed.py):
    ``<split>/scan_id`` and ``<split>/features`` arrays, plus its key and excluded scans."""
    np.savez(path, key=np.array("{}"), excluded=np.array("[]"), **arrays)
    return path
