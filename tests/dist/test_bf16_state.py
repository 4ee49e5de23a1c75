"""DeepSpeed bf16 (#15 2.11): FeatureNorm statistics and the prefit log-hazard stay float32, and
ZeRO-2 accumulates micro-batch gradients in float32 -- one real gloo rank on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from train_launch import _port

pytestmark = [pytest.mark.slow, pytest.mark.dist, pytest.mark.timeout(600)]

HELPER = Path(__file__).with_name("bf16_init_run.py")


def test_deepspeed_bf16_zero2_keeps_fp32_state():
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_port()), "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(HELPER), "2"], env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["encoder_param"] == "torch.bfloat16" and got["bias_param"] == "torch.bfloat16"  # bf16 really on
    assert got["log_hazard0"] == got["running_mean"] == got["running_var"] == "torch.float32"
    assert got["prefit_exact"], "the prefit log-hazard was rounded"
    assert got["grad_accum_dtype"] == "torch.float32"
    assert got["loss_finite"]
