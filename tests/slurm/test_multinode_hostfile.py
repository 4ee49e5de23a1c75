"""`tte-scale launch local --hostfile` on the namespace cluster: DeepSpeed's launcher on the head
reaches node1 and node2 over ssh (pdsh), one rank on each, and the run completes."""

from __future__ import annotations

import json
import re

import pytest
from slurm_jobs import cli
from train_data import config_overrides, make_data

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(420)]


def test_two_host_deepspeed_run_completes(cluster, tmp_path):
    shards, labels = make_data(tmp_path / "data")
    out = tmp_path / "run"
    hostfile = tmp_path / "hosts"
    hostfile.write_text("node1 slots=1\nnode2 slots=1\n")
    sets = config_overrides(shards, labels, out) + [
        "max_steps=4",
        "eval.every_steps=0",
        "checkpoint.export_encoder=false",
        "telemetry.log_every=1",
        "zero.stage=3",
    ]
    proc = cli(
        "launch", "local", "--hostfile", str(hostfile), "--nproc", "1", "--config", "configs/pretrain/demo.yaml",
        *[a for s in sets for a in ("--set", s)],
        timeout=360, cluster=cluster,
    )  # fmt: skip
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-6000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]
    assert [r["world_size"] for r in records if r["kind"] == "memory"] == [2]
    # pdsh prefixes each host's output with its name: one rank ran on each host, rank 0 on node1
    # (DeepSpeed found the master address with `ssh node1 hostname -I`).
    assert re.search(r"^node1: .*rank 0: step 4 done", text, re.M), text[-6000:]
    assert re.search(r"^node2: .*rank 1: step 4 done", text, re.M), text[-6000:]
    assert "--master_addr=10.213.0.11" in text, text[-6000:]
