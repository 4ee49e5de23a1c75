"""The GPU paths the CPU suite cannot reach (issue 15, defect 2.1): compiled Triton (not the
interpreter), DeepSpeed on NCCL, bf16 SDPA on a fused kernel, and real trainer steps in bf16 with
ZeRO-2. Skipped without a CUDA device (tests/conftest.py); run by `make gpu-check`'s pytest step."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.gpu

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without the CPU fallbacks and without a launcher's rank variables."""
    drop = ("TRITON_INTERPRET", "DS_ACCELERATOR", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "PYTHONUNBUFFERED": "1", **extra}


def test_session_runs_compiled_triton_and_deepspeed_on_cuda():
    assert os.environ.get("TRITON_INTERPRET", "0") != "1", "conftest put Triton in the interpreter on a GPU machine"
    assert os.environ.get("DS_ACCELERATOR", "cuda") != "cpu"


def test_fused_loss_compiled_matches_reference_fp32():
    from tte_scale.benchmarks.bench_loss import make_inputs
    from tte_scale.loss import fused_survival_loss, head_loss_reference

    inputs = make_inputs(5, 8, 1000, 64, torch.float32, "cuda", seed=1)  # odd K: a partial last chunk
    ref = head_loss_reference(*inputs)
    ref.backward()
    ref_grads = [p.grad.clone() for p in inputs[:3]]
    for p in inputs[:3]:
        p.grad = None
    got = fused_survival_loss(*inputs, backend="auto")
    got.backward()
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    for g, r in zip([p.grad for p in inputs[:3]], ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-3, atol=1e-4)


NCCL_PROBE = """
import json, torch, torch.distributed as dist
from tte_scale.train.dist import cuda_device_index, dist_env, init_distributed
env = dist_env()
torch.cuda.set_device(cuda_device_index(env.local_rank, torch.cuda.device_count()))
init_distributed("cuda", timeout_minutes=5)
t = torch.full((4,), 2.0, device="cuda")
dist.all_reduce(t)
from deepspeed.accelerator import get_accelerator
print(json.dumps({"backend": dist.get_backend(), "sum": t.sum().item(), "accelerator": get_accelerator().device_name()}))
dist.destroy_process_group()
"""


def test_deepspeed_initializes_nccl_on_one_rank():
    res = subprocess.run(
        [sys.executable, "-c", NCCL_PROBE], env=_clean_env(), capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got == {"backend": "nccl", "sum": 8.0, "accelerator": "cuda"}


def test_bf16_sdpa_runs_a_fused_kernel_and_matches_fp32():
    import torch.nn.functional as F

    from tte_scale.benchmarks.bench_model import build_ours, make_step, sdpa_backend_used

    g = torch.Generator(device="cpu").manual_seed(0)
    q, k, v = (torch.randn(2, 4, 196, 64, generator=g).cuda() for _ in range(3))
    ref = F.scaled_dot_product_attention(q, k, v)
    out = F.scaled_dot_product_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)
    # Our model's attention under bf16 autocast, as bench_model and the trainer run it.
    model = build_ours("vit3d_tiny", (32, 64, 64), False, "cuda")
    step = make_step(model, False, torch.randn(2, 1, 32, 64, 64, device="cuda"), torch.bfloat16, "cuda")
    step()
    backends = sdpa_backend_used(step)
    assert backends and "math" not in backends, backends


def test_trainer_steps_bf16_zero2_on_cuda(tmp_path):
    sys.path.insert(0, str(TESTS / "dist"))
    from train_data import config_overrides, make_data

    from tte_scale.train.metrics_log import read_metrics

    shards, labels = make_data(tmp_path / "data")
    out = tmp_path / "run"
    overrides = config_overrides(shards, labels, out) + [
        "device=cuda", "zero.precision=bf16", "zero.stage=2", "max_steps=4", "checkpoint.every_steps=0",
        "checkpoint.export_encoder=false", "eval.every_steps=0", "telemetry.log_every=1",
    ]  # fmt: skip
    cmd = [sys.executable, "-m", "tte_scale.cli", "train", "--config", str(REPO / "configs" / "pretrain" / "demo.yaml")]
    cmd += [a for o in overrides for a in ("--set", o)]
    res = subprocess.run(cmd, env=_clean_env(), capture_output=True, text=True, timeout=600, cwd=REPO)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    train = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) for r in train)
    assert all(r["peak_mem_gib"] > 0 for r in train)  # the CUDA allocator's peak, not host RSS
