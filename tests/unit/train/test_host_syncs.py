"""The training loop reads device values back at most once per telemetry.log_every steps (#15 2.4).

Each read (``.item()``, ``float(t)``, ``bool(t)``, ``.tolist()``, ...) waits for the device to
finish everything queued so far, so a read per micro-step keeps the host from queuing the next
step (and the next batch's copies) while the device computes. A real few-step run counts them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "dist"))
from train_data import make_data  # noqa: E402
from train_launch import _port  # noqa: E402

HELPER = Path(__file__).with_name("sync_count_run.py")
LOG_EVERY = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sync_data")
    make_data(root)
    return root


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("world", "sets"),
    [
        (1, ["zero.stage=0"]),  # the loop, GuardedAdamW and the stage-0 gradient norm are all ours
        (1, ["zero.stage=2", "optim.grad_accum_steps=2"]),  # accumulation: reads per micro-step would show
        (2, ["zero.stage=2"]),  # two ranks: FeatureNorm's cross-rank statistics, the all-reduced flags
    ],
    ids=["zero0", "zero2-accum", "zero2-2ranks"],
)
def test_at_most_one_host_sync_per_log_interval(tmp_path, data, world, sets):
    overrides = [
        "max_steps=8",
        f"telemetry.log_every={LOG_EVERY}",
        "checkpoint.every_steps=0",
        "eval.every_steps=0",
        "checkpoint.export_encoder=false",
        *sets,
    ]
    args = [a for o in overrides for a in ("--set", o)]
    port = str(_port())
    procs = []
    for rank in range(world):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "RANK": str(rank),
               "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}  # fmt: skip
        cmd = [
            sys.executable,
            str(HELPER),
            str(data),
            str(tmp_path / "run"),
            str(tmp_path / f"syncs{rank}.json"),
            *args,
        ]
        log = open(tmp_path / f"rank{rank}.log", "w")
        procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
    codes = [p.wait(timeout=540) for p in procs]
    logs = "\n".join((tmp_path / f"rank{r}.log").read_text()[-3000:] for r in range(world))
    assert codes == [0] * world, logs
    for rank in range(world):
        result = json.loads((tmp_path / f"syncs{rank}.json").read_text())
        assert result["code"] == 0 and result["left_process_group"]
        ours = [e for e in result["events"] if e["phase"] == "loop" and e["who"] == "tte_scale"]
        per_interval = Counter((e["step"] - 1) // LOG_EVERY for e in ours)
        where = Counter(e["where"] for e in ours)
        assert all(n <= 1 for n in per_interval.values()), (
            f"rank {rank}: syncs per interval {dict(per_interval)} at {dict(where)}"
        )
        assert sum(per_interval.values()) == 2, dict(where)  # one read per interval: the counter sees them
