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

HELPER = Path(__file__).with_name("sync_count_run.py")
LOG_EVERY = 4


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "sets",
    [
        ["zero.stage=0"],  # the loop, GuardedAdamW and the stage-0 gradient norm are all ours
        ["zero.stage=2", "optim.grad_accum_steps=2"],  # accumulation: reads per micro-step would show
    ],
    ids=["zero0", "zero2-accum"],
)
def test_at_most_one_host_sync_per_log_interval(tmp_path, sets):
    overrides = [
        "max_steps=8",
        f"telemetry.log_every={LOG_EVERY}",
        "checkpoint.every_steps=0",
        "eval.every_steps=0",
        "checkpoint.export_encoder=false",
        *sets,
    ]
    out = tmp_path / "syncs.json"
    args = [a for o in overrides for a in ("--set", o)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    proc = subprocess.run(
        [sys.executable, str(HELPER), str(tmp_path), str(out), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["code"] == 0
    ours = [e for e in result["events"] if e["phase"] == "loop" and e["who"] == "tte_scale"]
    per_interval = Counter((e["step"] - 1) // LOG_EVERY for e in ours)
    where = Counter(e["where"] for e in ours)
    assert all(n <= 1 for n in per_interval.values()), f"host syncs per interval {dict(per_interval)} at {dict(where)}"
    assert sum(per_interval.values()) == 2, dict(where)  # one read per interval: the counter sees them
