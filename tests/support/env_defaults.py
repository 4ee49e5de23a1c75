"""The environment the test session sets before anything imports triton or deepspeed.

Kept apart from tests/conftest.py as a pure function so that tests can check it without a GPU.
"""

from __future__ import annotations

import os


def cuda_available() -> bool:
    """Whether torch sees a CUDA device. Imports torch (not triton: torch loads triton lazily,
    so the Triton settings below are still read at its first import)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - torch is a hard dependency
        return False


def env_defaults(*, cuda: bool, prefix: str) -> dict[str, str]:
    """Variables the session sets when they are unset.

    Without a CUDA device: Triton kernels run in the interpreter and DeepSpeed uses its CPU
    accelerator (gloo). With one: neither, so `pytest -m gpu` runs the compiled kernels and NCCL.
    Always: DeepSpeed's JIT op builds go under this venv (``prefix`` = sys.prefix), so sessions with
    different venvs do not wait on one shared build lock in ~/.cache/torch_extensions.
    """
    env = {
        "RAY_USAGE_STATS_ENABLED": "0",
        "TOKENIZERS_PARALLELISM": "false",
        "TORCH_EXTENSIONS_DIR": os.path.join(prefix, "torch_extensions"),
    }
    if not cuda:
        env.update(TRITON_INTERPRET="1", DS_ACCELERATOR="cpu")
    return env
