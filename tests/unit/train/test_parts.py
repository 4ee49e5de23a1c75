"""Labels-folder reading for the bias prefit, and the model built from a config."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from support.tiny_model import TINY_VIT

from tte_scale.config import load_config
from tte_scale.errors import InputError
from tte_scale.train import PretrainConfig
from tte_scale.train.parts import build_model, read_bins, train_label_sample
from tte_scale.train.telemetry import model_state_bytes


def _labels(tmp_path, starts=(0.0, 30.0, 365.0)):
    import zarr

    (tmp_path / "bins.json").write_text(json.dumps({"format_version": 1, "bin_starts_days": list(starts)}))
    pq.write_table(
        pa.table({"scan_id": [f"s{i}" for i in range(6)], "split": ["train", "tuning"] * 3}), tmp_path / "rows.parquet"
    )
    g = zarr.open_group(str(tmp_path / "tte.zarr"), mode="w")
    g.create_array("time", data=np.arange(24, dtype=np.float32).reshape(6, 4))
    g.create_array("event", data=np.eye(6, 4, dtype=bool))
    return tmp_path


def test_train_rows_only_and_capped(tmp_path):
    root = _labels(tmp_path)
    time_NK, event_NK = train_label_sample(root, "train", max_rows=10)
    assert time_NK.shape == (3, 4) and time_NK[:, 0].tolist() == [0.0, 8.0, 16.0]
    assert train_label_sample(root, "train", max_rows=2)[0].shape == (2, 4)
    with pytest.raises(InputError, match="no rows in split 'held_out'"):
        train_label_sample(root, "held_out", max_rows=10)


def test_bins_are_checked(tmp_path):
    assert read_bins(_labels(tmp_path)).tolist() == [0.0, 30.0, 365.0]
    (tmp_path / "bins.json").write_text(json.dumps({"bin_starts_days": [0.0, 30.0, 10.0]}))
    with pytest.raises(InputError, match="must start at 0 and increase"):
        read_bins(tmp_path)
    with pytest.raises(InputError, match="not found"):
        read_bins(tmp_path / "missing")


def test_prefit_model_from_config(tmp_path):
    root = _labels(tmp_path)
    cfg = load_config(
        PretrainConfig,
        None,
        TINY_VIT,
    )
    time_NK, event_NK = train_label_sample(root, "train", 10)
    model = build_model(cfg, num_tasks=4, num_bins=3)
    model.head.init_bias_from_labels(
        torch.from_numpy(time_NK), torch.from_numpy(event_NK), torch.from_numpy(read_bins(root))
    )
    loss = model(
        torch.rand(2, 1, 8, 16, 16),
        torch.from_numpy(time_NK[:2]),
        torch.from_numpy(event_NK[:2]),
        torch.from_numpy(read_bins(root)),
    )
    assert torch.isfinite(loss)
    opt = torch.optim.AdamW(model.parameters())
    loss.backward()
    opt.step()
    mem = model_state_bytes(model, opt)
    n = sum(p.numel() for p in model.parameters())
    assert mem["param_bytes"] == 4 * n and mem["optim_bytes"] == 2 * 4 * n + 4 * len(opt.state)  # moments + fp32 step
