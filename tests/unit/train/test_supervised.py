"""The supervised-pretraining baseline: masked BCE head, label reading, model choice by objective."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from support.tiny_model import TINY_VIT

from tte_scale.config import ConfigError, load_config
from tte_scale.errors import InputError
from tte_scale.models import SupervisedHead, SupervisedModel, TTEModel
from tte_scale.train import PretrainConfig
from tte_scale.train.parts import build_model, model_inputs, train_bench_labels

SMALL = TINY_VIT


def test_masked_bce_ignores_null_labels_in_value_and_gradient():
    label = torch.tensor([[1, 0, -1], [-1, -1, -1], [0, 1, 1], [-1, 0, -1]], dtype=torch.int8)
    known = label >= 0
    for feature_norm in ("batch", "none"):
        torch.manual_seed(0)
        head = SupervisedHead(6, 3, feature_norm=feature_norm)
        h = torch.randn(4, 6, requires_grad=True)
        loss = head(h, label)
        logit = head.logits(h)
        ref = F.binary_cross_entropy_with_logits(logit[known], label[known].float())
        assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
        loss.backward()
    # Without batch statistics a row with no known label gets no gradient (with them it only
    # shifts the batch's mean and spread, which is not reading its labels).
    assert torch.all(h.grad[1] == 0)


def test_batch_without_labels_gives_zero_loss_with_a_graph():
    head = SupervisedHead(5, 2)
    h = torch.randn(3, 5, requires_grad=True)
    loss = head(h, torch.full((3, 2), -1, dtype=torch.int8))
    assert loss.item() == 0.0
    loss.backward()  # every rank must be able to run backward
    with pytest.raises(InputError, match="expected \\[3, 2\\]"):
        head(h, torch.zeros(3, 4, dtype=torch.int8))


def test_bias_prefit_is_the_logit_of_known_prevalence():
    head = SupervisedHead(4, 2)
    label = torch.tensor([[1, -1], [0, 1], [0, -1], [1, 0]], dtype=torch.int8)
    bias = head.init_bias_from_labels(label)
    p = torch.tensor([0.5, 0.5])
    assert torch.allclose(bias, torch.log(p / (1 - p)).float(), atol=1e-6)
    assert torch.allclose(
        head.init_bias_from_labels(torch.tensor([[1, 0], [1, 0]]))[0], torch.tensor(6.9068), atol=1e-3
    )


def test_train_bench_labels_reads_one_split_in_task_order(tmp_path):
    pq.write_table(
        pa.table(
            {
                "scan_id": ["a", "a", "b", "b", "c", "c"],
                "split": ["train", "train", "train", "train", "tuning", "tuning"],
                "task": ["t2", "t1", "t1", "t2", "t1", "t2"],
                "label": pa.array([True, None, False, True, True, True], pa.bool_()),
            }
        ),
        tmp_path / "bench.parquet",
    )
    out = train_bench_labels(tmp_path, "train", ["t1", "t2"])
    assert out.dtype == np.int8 and out.tolist() == [[-1, 1], [0, 1]]
    with pytest.raises(InputError, match="no benchmark labels in split 'held_out'"):
        train_bench_labels(tmp_path, "held_out", ["t1", "t2"])
    with pytest.raises(InputError, match="bench.parquet: not found"):
        train_bench_labels(tmp_path / "nope", "train", ["t1"])


def test_objective_picks_model_and_inputs():
    sup = load_config(PretrainConfig, None, [*SMALL, "objective=supervised"])
    model = build_model(sup, num_tasks=8, num_bins=4)
    assert isinstance(model, SupervisedModel) and model.head.num_tasks == 8
    assert isinstance(build_model(load_config(PretrainConfig, None, SMALL), num_tasks=8, num_bins=4), TTEModel)
    batch = {
        "volume": torch.rand(2, 1, 8, 16, 16),
        "bench_label": torch.tensor([[1] * 8, [-1] * 8], dtype=torch.int8),
        "tte_time": torch.ones(2, 8),
        "tte_event": torch.zeros(2, 8, dtype=torch.bool),
    }
    bins = torch.tensor([0.0, 1.0, 2.0, 3.0])
    args = model_inputs("supervised", batch, bins)
    assert len(args) == 2 and args[1] is batch["bench_label"]
    assert torch.isfinite(model(*args))
    assert len(model_inputs("tte", batch, bins)) == 4
    with pytest.raises(ConfigError, match="objective"):
        load_config(PretrainConfig, None, ["objective=classification"])


def test_supervised_training_learns_an_image_label():
    """A few hundred steps on volumes whose label is their brightness: the head must learn it."""
    torch.manual_seed(0)
    cfg = load_config(PretrainConfig, None, [*SMALL, "objective=supervised"])
    model = build_model(cfg, num_tasks=1, num_bins=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    bright = torch.rand(64) < 0.5
    vol = torch.rand(64, 1, 8, 16, 16) * 0.5 + 0.4 * bright[:, None, None, None, None]
    label = bright[:, None].to(torch.int8)
    first = model(vol, label).item()
    for _ in range(100):
        opt.zero_grad()
        loss = model(vol, label)
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first


def test_hu_window_is_checked():
    with pytest.raises(ConfigError, match="data.hu_window"):
        load_config(PretrainConfig, None, ["data.hu_window=[100, -100]"])
    cfg = load_config(PretrainConfig, None, ["data.hu_window=[-1200, 400]"])
    assert tuple(cfg.data.hu_window) == (-1200.0, 400.0)
    json.dumps(list(cfg.data.hu_window))
