"""Capture and restore every random number generator a training step draws from.

DeepSpeed's checkpoints hold model, optimizer and scheduler state but none of these, so
without them a resumed run draws different dropout/drop-path masks and its losses diverge
from the first step after the resume. Each rank saves and restores its own states.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

RNG_STATE_VERSION = 1


def capture_rng() -> dict[str, Any]:
    """The states of python, numpy, torch (CPU) and, when present, every CUDA device."""
    state: dict[str, Any] = {
        "version": RNG_STATE_VERSION,
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`; refuses a state of another version."""
    if state.get("version") != RNG_STATE_VERSION:
        raise ValueError(f"RNG state version {state.get('version')!r}, expected {RNG_STATE_VERSION}")
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) identically."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
