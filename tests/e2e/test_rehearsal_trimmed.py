"""Issue 17, trimmed full-size rehearsal: every stage at the INSPECT geometry on a tiny cohort.

synth --profile realistic (512x512 slices, 0.6-1 mm pixels; 2 subjects, 3 scans) -> labels
(asks K = 8,192) -> shard with configs/shard/default.yaml (160x224x224, both formats) -> train
configs/pretrain/vit_b_8gpu.yaml overridden for the CPU (ViT-B with 2 blocks, 1,960 tokens, fp32,
ZeRO-2, 2 steps) -> export -> embed from WebDataset and from Zarr (identical rows).

What the tiny cohort cannot give: K stays at the codes it has (labels says "tasks kept N of
8,192"), and with two subjects there is no `tuning` split, so the run evaluates on held_out
(`eval.every_steps=0` still evaluates once at the end).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tte_scale.benchmarks.bench_rehearsal import Variant, cpu_train_sets

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

# The CPU overrides of `tte-scale bench rehearsal` for one rank (ViT-B with 2 blocks, fp32, ZeRO-2,
# 2 steps); with two subjects there is no tuning split, so training evaluates on held_out.
TRAIN_SETS = [
    *cpu_train_sets(Variant(name="trimmed", precision="fp32", zero=2, checkpointing=False, depth=2, steps=2), ranks=1),
    "data.eval_split=held_out",
]


def tte(*args, timeout=900) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "DS_ACCELERATOR": "cpu",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [sys.executable, "-m", "tte_scale.cli", *map(str, args)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    assert res.returncode == 0, f"{args[0]}: {res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return res


def test_trimmed_rehearsal_at_full_size(tmp_path):
    cohort, labels, shards, run = (tmp_path / n for n in ("cohort", "labels", "shards", "run"))
    tte("synth", "--out", cohort, "--subjects", 2, "--profile", "realistic", "--workers", 1, "--no-progress")
    scans = pq.read_table(cohort / "scans.parquet").num_rows
    assert scans >= 2

    res = tte("labels", "--meds", cohort, "--scans", cohort / "scans.parquet", "--out", labels, "--tasks", 8192)
    summary = json.loads((labels / "summary.json").read_text())
    assert summary["tasks_requested"] == 8192 and 0 < summary["tasks_kept"] <= 8192
    assert f"tasks kept {summary['tasks_kept']:,} of 8,192" in res.stdout + res.stderr

    tte("shard", "--scans", cohort / "scans.parquet", "--labels", labels, "--out", shards, "--config",
        REPO / "configs/shard/default.yaml", "--workers", 1, timeout=1200)  # fmt: skip
    samples = pq.read_table(shards / "manifest" / "samples.parquet").to_pydict()
    assert set(samples["status"]) == {"ok"} and {tuple(s) for s in samples["shape"]} == {(160, 224, 224)}

    sets = [*TRAIN_SETS, f"data.shards_dir={shards}", f"data.labels_dir={labels}", f"out_dir={run}"]
    tte("train", "--config", REPO / "configs/pretrain/vit_b_8gpu.yaml", *[a for s in sets for a in ("--set", s)])
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if r["kind"] == "train"] == [1, 2]
    export = json.loads((run / "encoder" / "config.json").read_text())
    assert export["config"]["img_size"] == [160, 224, 224] and export["config"]["embed_dim"] == 768
    assert export["config"]["depth"] == 2

    for fmt in ("wds", "zarr"):
        tte("embed", "--encoder", run / "encoder", "--shards", shards, "--out", tmp_path / f"emb_{fmt}",
            "--format", fmt, "--batch-size", 1)  # fmt: skip
    a, b = (pq.read_table(tmp_path / f"emb_{f}" / "embeddings.parquet") for f in ("wds", "zarr"))
    assert a.num_rows == scans and str(a.schema.field("vector").type) == "fixed_size_list<element: float>[768]"
    assert a.replace_schema_metadata(None).equals(b.replace_schema_metadata(None))
    assert np.isfinite(np.asarray(a.column("vector").to_pylist())).all()
