"""Shared test setup: CPU-only defaults, a clean environment for subprocesses."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Triton kernels run in the interpreter on CPU; it must be set before triton is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def tte_scale_cmd() -> list[str]:
    """The CLI as a subprocess command, using this interpreter's environment."""
    return [sys.executable, "-m", "tte_scale.cli"]


@pytest.fixture
def cli_cmd() -> list[str]:
    return tte_scale_cmd()


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch is a hard dependency
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA GPU (runs on the lent H100/H200 only)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
