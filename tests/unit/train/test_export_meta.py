"""The exported encoder stores the HU window and objective of its training run."""

from __future__ import annotations

import json

import pytest
import torch
from support.tiny_model import TINY_VIT

from tte_scale.config import load_config
from tte_scale.errors import InputError
from tte_scale.models import create_model, load_pretrained, read_export_config, save_pretrained
from tte_scale.train import PretrainConfig
from tte_scale.train.export import export_encoder
from tte_scale.train.parts import build_model

SMALL = TINY_VIT


def _stage0_checkpoint(tmp_path, cfg):
    model = build_model(cfg, num_tasks=3, num_bins=2)
    (tmp_path / "ckpt" / "step_00000005").mkdir(parents=True)
    torch.save({"module": model.state_dict()}, tmp_path / "ckpt" / "step_00000005" / "mp_rank_00_model_states.pt")
    return model


@pytest.mark.parametrize("objective", ["tte", "supervised"])
def test_export_stores_window_and_objective(tmp_path, objective):
    cfg = load_config(
        PretrainConfig, None, [*SMALL, "zero.stage=0", "data.hu_window=[-1100, 500]", f"objective={objective}"]
    )
    model = _stage0_checkpoint(tmp_path, cfg)
    out = export_encoder(cfg, tmp_path / "ckpt", "step_00000005", tmp_path / "enc")
    meta = read_export_config(out)
    assert meta["preprocessing"] == {"normalizer": "tte_scale.data.hu_to_float", "hu_window": (-1100.0, 500.0)}
    assert meta["pretraining"]["objective"] == objective and meta["pretraining"]["checkpoint"] == "step_00000005"
    enc = load_pretrained(out)
    x = torch.rand(1, 1, 8, 16, 16)
    model.eval()
    assert torch.allclose(enc(x), model.encoder(x), atol=1e-6)
    assert read_export_config(out / "model.safetensors") == meta  # a weights file names its folder


def test_old_exports_without_window_still_load_and_bad_windows_are_named(tmp_path):
    enc = create_model("vit3d_tiny", img_size=(8, 16, 16), patch_size=(4, 8, 8), embed_dim=16, depth=1, num_heads=2)
    save_pretrained(enc, tmp_path / "old")
    assert "preprocessing" not in read_export_config(tmp_path / "old")
    load_pretrained(tmp_path / "old")
    with pytest.raises(InputError, match="min must be < max"):
        save_pretrained(enc, tmp_path / "bad", hu_window=(10, -10))
    save_pretrained(enc, tmp_path / "edit", hu_window=(-1000, 1000))
    meta = json.loads((tmp_path / "edit" / "config.json").read_text())
    meta["preprocessing"]["hu_window"] = [5]
    (tmp_path / "edit" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="preprocessing.hu_window: expected \\[min, max\\]"):
        load_pretrained(tmp_path / "edit")
