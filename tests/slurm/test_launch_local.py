"""`tte-scale launch local --nproc 2`: torchrun starts two gloo ranks of a tiny CPU run."""

from __future__ import annotations

import json

import pytest
from slurm_jobs import cli
from train_data import config_overrides, make_data

pytestmark = [pytest.mark.slow, pytest.mark.dist, pytest.mark.timeout(300)]


def test_local_two_processes_train_to_the_end(tmp_path):
    shards, labels = make_data(tmp_path / "data")
    out = tmp_path / "run"
    sets = config_overrides(shards, labels, out) + [
        "max_steps=4",
        "eval.every_steps=0",
        "checkpoint.export_encoder=false",
        "telemetry.log_every=1",
    ]
    proc = cli(
        "launch",
        "local",
        "--nproc",
        "2",
        "--config",
        "configs/pretrain/demo.yaml",
        *[a for s in sets for a in ("--set", s)],
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]
    assert [r["world_size"] for r in records if r["kind"] == "memory"] == [2]
