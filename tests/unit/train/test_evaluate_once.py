"""Evaluation runs the encoder once per batch (#15 2.12) and gives the same figures as the loss path."""

from __future__ import annotations

import math

import pytest
import torch
from support.tiny_model import TINY_VIT

from tte_scale.config import load_config
from tte_scale.train import PretrainConfig
from tte_scale.train.evaluate import evaluate
from tte_scale.train.parts import build_model

SMALL = TINY_VIT


class _Engine:
    """What evaluate reads of a DeepSpeed engine: ``.module`` and ``engine(*inputs) -> loss``."""

    def __init__(self, module):
        self.module = module

    def __call__(self, *inputs):
        return self.module(*inputs)


def _batches(n, B, K, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        yield {
            "volume": torch.rand(B, 1, 8, 16, 16, generator=g),
            "tte_time": torch.rand(B, K, generator=g) * 500,
            "tte_event": torch.rand(B, K, generator=g) < 0.3,
            "bench_label": (torch.rand(B, T, generator=g) < 0.5).to(torch.int8),
            "bench_time": torch.rand(B, T, generator=g) * 500,
            "bench_event": torch.rand(B, T, generator=g) < 0.5,
            "scan_id": [f"s{i}_{j}" for j in range(B)],
        }


@pytest.mark.parametrize("objective", ["tte", "supervised"])
def test_encoder_runs_once_per_evaluation_batch(objective):
    torch.manual_seed(0)
    cfg = load_config(PretrainConfig, None, [*SMALL, f"objective={objective}"])
    K, T, B, n = 6, 3, 4, 3
    model = build_model(cfg, num_tasks=K if objective == "tte" else T, num_bins=3)
    calls = []
    model.encoder.register_forward_hook(lambda *a: calls.append(1))
    starts = torch.tensor([0.0, 30.0, 365.0])
    metrics = evaluate(
        _Engine(model),
        _batches(n, B, K, T),
        lambda b: b,
        starts,
        max_batches=10,
        zero_stage=0,
        bench_tasks=["a", "b", "c"],
        objective=objective,
    )
    assert len(calls) == n, f"{len(calls)} encoder forwards for {n} batches"
    # the validation loss is the model's own loss (through its forward) averaged over samples
    model.eval()
    with torch.no_grad():
        inputs = {"tte": ("volume", "tte_time", "tte_event"), "supervised": ("volume", "bench_label")}[objective]
        want = sum(
            float(model(*[b[k] for k in inputs], *([starts] if objective == "tte" else []))) * B
            for b in _batches(n, B, K, T)
        ) / (n * B)
    assert metrics["val_samples"] == n * B
    assert metrics["val_loss"] == pytest.approx(want, rel=1e-5)
    assert all(math.isfinite(metrics[f"cindex/{t}"]) for t in "abc")
