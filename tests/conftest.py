"""Shared test setup: CPU defaults where no CUDA device exists, a clean environment for subprocesses."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "tests") not in sys.path:  # pytest puts it there too (rootdir conftest); direct imports need it
    sys.path.insert(0, str(REPO / "tests"))

from support.env_defaults import cuda_available, env_defaults  # noqa: E402

# Set before triton or deepspeed is imported: the Triton interpreter and DeepSpeed's CPU
# accelerator only where no CUDA device exists, so `pytest -m gpu` runs compiled kernels and NCCL.
HAS_CUDA = cuda_available()
for _k, _v in env_defaults(cuda=HAS_CUDA, prefix=sys.prefix).items():
    os.environ.setdefault(_k, _v)


def tte_scale_cmd() -> list[str]:
    """The CLI as a subprocess command, using this interpreter's environment."""
    return [sys.executable, "-m", "tte_scale.cli"]


@pytest.fixture
def cli_cmd() -> list[str]:
    return tte_scale_cmd()


def pytest_collection_modifyitems(config, items):
    if not HAS_CUDA:
        skip = pytest.mark.skip(reason="needs a CUDA GPU (runs on the lent H100/H200 only)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
