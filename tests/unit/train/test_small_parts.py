"""RNG capture, signals, guards, telemetry, C-index, memory estimate, CLI options."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tte_scale.train.guards import GuardedAdamW, NonFiniteAbort, NonFiniteGuard
from tte_scale.train.metrics_log import MetricsWriter
from tte_scale.train.rng import capture_rng, restore_rng
from tte_scale.train.signals import EXIT_REQUEUE, StopFlag, signals_blocked
from tte_scale.train.telemetry import peak_tflops, throughput


def test_rng_roundtrip_reproduces_every_stream():
    state = capture_rng()
    first = (random.random(), np.random.rand(), torch.rand(3))
    restore_rng(state)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1] and torch.equal(first[2], second[2])
    with pytest.raises(ValueError, match="version"):
        restore_rng({**state, "version": 99})


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM])
def test_stop_flag_catches_preemption_signals(sig):
    flag = StopFlag().install()
    try:
        os.kill(os.getpid(), sig)
        time.sleep(0.05)
        assert flag.requested and flag.signum == sig
    finally:
        flag.uninstall()
    assert EXIT_REQUEUE == 75


def test_children_started_with_signals_blocked_ignore_them():
    flag = StopFlag().install()
    try:
        with signals_blocked():
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
        child.send_signal(signal.SIGUSR1)  # blocked in the child: it keeps running
        time.sleep(0.5)
        assert child.poll() is None
        child.kill()
        child.wait()
        assert not flag.requested
    finally:
        flag.uninstall()


def test_guarded_adamw_skips_nonfinite_steps():
    p = torch.nn.Parameter(torch.ones(3))
    opt = GuardedAdamW([p], lr=0.1)
    p.grad = torch.tensor([1.0, float("nan"), 0.0])
    opt.step()
    assert torch.equal(p.detach(), torch.ones(3)) and opt.skipped == 1
    assert not opt.state or (opt.state[p]["step"] == 0 and not opt.state[p]["exp_avg"].any())  # as if never run
    p.grad = torch.ones(3)
    opt.step()
    ref = torch.nn.Parameter(torch.ones(3))
    ref.grad = torch.ones(3)
    torch.optim.AdamW([ref], lr=0.1).step()
    torch.testing.assert_close(p.detach(), ref.detach())  # the skipped step left no trace (step count, moments)


def test_nonfinite_guard_counts_and_aborts():
    guard = NonFiniteGuard(limit=2)
    guard.update(True, 1, math.nan, math.nan)
    guard.update(False, 2, 1.0, 1.0)
    guard.update(True, 3, math.nan, math.inf)
    assert guard.total == 2 and guard.in_a_row == 1
    with pytest.raises(NonFiniteAbort, match="2 optimizer steps in a row"):
        guard.update(True, 4, math.nan, math.nan)


def test_peak_table_and_mfu():
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_tflops("NVIDIA H200") == 989.0
    assert peak_tflops("cpu") is None and peak_tflops("cpu", override=2.0) == 2.0
    r = throughput(
        samples=64,
        step_seconds=2.0,
        data_seconds=0.5,
        flops_per_sample=1e12,
        tokens_per_sample=100,
        world_size=8,
        peak=100.0,
    )
    assert r["samples_per_s"] == 32 and r["tokens_per_s"] == 3200 and r["tflops"] == 32
    assert r["mfu"] == pytest.approx(0.04) and r["data_wait_frac"] == 0.25


def test_metrics_writer_jsonl_and_tensorboard(tmp_path):
    w = MetricsWriter(tmp_path, enabled=True, tensorboard=True, attempt=1)
    w.write({"kind": "train", "step": 1, "loss": 1.5})
    w.close()
    rec = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert rec["loss"] == 1.5 and rec["attempt"] == 1
    assert any((tmp_path / "tb").iterdir())
    MetricsWriter(tmp_path / "other", enabled=False, tensorboard=True, attempt=1).write({"step": 1})
    assert not (tmp_path / "other").exists()


def test_estimate_memory_zero3_shrinks_with_ranks():
    from tte_scale.config import load_config
    from tte_scale.train import PretrainConfig, estimate_memory

    base = ["model.name=vit3d_1b", "zero.stage=3", "head.num_tasks=8192"]
    one = estimate_memory(load_config(PretrainConfig, None, base))
    many = estimate_memory(load_config(PretrainConfig, None, base + ["cluster.nodes=8", "cluster.gpus_per_node=8"]))
    assert 0.9e9 < one["params"] < 1.2e9
    assert many["per_device_gib"] < one["per_device_gib"] / 10
    assert "Estimated memory needed" in many["deepspeed_table"]


def test_estimate_memory_of_a_monai_backbone():
    """--estimate-memory for the paper's backbones: their parameter count (meta device) and
    largest tensor, plus the TTE head on their pooled width (1024 for DenseNet-121)."""
    from tte_scale.config import load_config
    from tte_scale.train import PretrainConfig, estimate_memory
    from tte_scale.train.memory import head_params

    est = estimate_memory(load_config(PretrainConfig, None, ["model.name=densenet121_3d", "head.num_tasks=4096"]))
    assert est["encoder_params"] == 11_242_624
    assert est["head_params"] == head_params(1024, 8, 4096, 512)[0]
    assert est["params"] == est["encoder_params"] + est["head_params"]


def test_cli_help_and_estimate(cli_cmd):
    out = subprocess.run(cli_cmd + ["train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--estimate-memory" in out.stdout and "--resume" in out.stdout
    out = subprocess.run(
        cli_cmd + ["train", "--config", "configs/pretrain/vit_1b_64gpu.yaml", "--estimate-memory"],
        capture_output=True,
        text=True,
        env={**os.environ, "DS_ACCELERATOR": "cpu"},
    )
    assert out.returncode == 0, out.stderr
    assert '"zero_stage": 2' in out.stdout and '"nodes": 8' in out.stdout
    out = subprocess.run(
        cli_cmd + ["train", "--config", "configs/pretrain/demo.yaml", "--set", "model.name=nope"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "unknown model 'nope'" in out.stderr


def test_dist_env_from_torchrun_slurm_and_plain():
    from tte_scale.config import ConfigError
    from tte_scale.train.dist import dist_env

    env = {"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "MASTER_ADDR": "n1", "MASTER_PORT": "1"}
    d = dist_env(env)
    assert (d.rank, d.world_size, d.local_rank) == (3, 8, 1) and env["RANK"] == "3"
    plain = {}
    assert dist_env(plain).world_size == 1 and plain["MASTER_ADDR"] == "127.0.0.1"
    with pytest.raises(ConfigError, match="MASTER_ADDR"):
        dist_env({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="outside WORLD_SIZE"):
        dist_env({"RANK": "2", "WORLD_SIZE": "2"})
