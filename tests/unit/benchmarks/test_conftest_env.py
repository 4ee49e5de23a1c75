"""The test session's environment (issue 15, defect 2.1): the Triton interpreter and DeepSpeed's CPU
accelerator only where no CUDA device exists; DeepSpeed op builds under this venv."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from support.env_defaults import env_defaults

# Not `from conftest import REPO`: which conftest module that names depends on collection order.
REPO = Path(__file__).resolve().parents[3]


def test_defaults_without_cuda():
    env = env_defaults(cuda=False, prefix="/v")
    assert env["TRITON_INTERPRET"] == "1" and env["DS_ACCELERATOR"] == "cpu"
    assert env["TORCH_EXTENSIONS_DIR"] == os.path.join("/v", "torch_extensions")


def test_defaults_with_cuda_leave_triton_compiled_and_deepspeed_on_cuda():
    env = env_defaults(cuda=True, prefix="/v")
    assert "TRITON_INTERPRET" not in env and "DS_ACCELERATOR" not in env
    assert env["TORCH_EXTENSIONS_DIR"] == os.path.join("/v", "torch_extensions")


PROBE = """
import json, os, runpy, sys
import torch
torch.cuda.is_available = lambda: {cuda}
runpy.run_path({conftest!r})
print(json.dumps({{k: os.environ.get(k) for k in ("TRITON_INTERPRET", "DS_ACCELERATOR", "TORCH_EXTENSIONS_DIR")}}))
print("triton imported" if "triton" in sys.modules else "triton not imported")
"""


def _conftest_env(cuda: bool) -> tuple[dict, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "DS_ACCELERATOR", "TORCH_EXTENSIONS_DIR")
    }
    code = PROBE.format(cuda=cuda, conftest=str(REPO / "tests" / "conftest.py"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=REPO)
    lines = out.stdout.strip().splitlines()
    return json.loads(lines[-2]), lines[-1]


def test_real_conftest_on_a_cuda_machine_sets_no_interpreter():
    got, triton = _conftest_env(cuda=True)
    assert got["TRITON_INTERPRET"] is None and got["DS_ACCELERATOR"] is None
    assert got["TORCH_EXTENSIONS_DIR"] == os.path.join(sys.prefix, "torch_extensions")
    assert triton == "triton not imported"  # decided before triton could read its settings


def test_real_conftest_on_a_cpu_machine_sets_the_interpreter():
    got, _ = _conftest_env(cuda=False)
    assert got["TRITON_INTERPRET"] == "1" and got["DS_ACCELERATOR"] == "cpu"
