"""bench_train on CUDA measures the full-size run (issue 15, defect 2.10): 160x224x224 shards and the
ViT-B config, not the demo's 32x64x64 ones (which made its ViT-B MFU meaningless)."""

from __future__ import annotations

import json

import pytest
import torch

from tte_scale.benchmarks import bench_train
from tte_scale.config import read_yaml


def _capture(monkeypatch, tmp_path):
    seen = {}

    def fake_make_data(root, subjects, tasks, shard_config, synth_set=(), synth_workers=2):
        seen["shard_config"] = read_yaml(shard_config)
        (root / "shards" / "_state").mkdir(parents=True)
        (root / "shards" / "_state" / "last_run.json").write_text(json.dumps({"processed": 1}))
        return root / "shards", root / "labels", {}

    def fake_measure(world, zero, args, shards, labels, tmp, peak):
        seen["config"] = args.config
        return {"world_size": world, "zero_stage": zero, "volumes_per_s": 1.0}

    monkeypatch.setattr(bench_train, "make_data", fake_make_data)
    monkeypatch.setattr(bench_train, "measure", fake_measure)
    monkeypatch.setattr(bench_train, "to_markdown", lambda result: "")
    monkeypatch.setattr(bench_train, "machine_info", lambda device: {})
    monkeypatch.setattr(bench_train, "cpu_matmul_peak_tflops", lambda: 1.0)
    import tte_scale.data.build_info

    monkeypatch.setattr(tte_scale.data.build_info, "labels_num_tasks", lambda labels: 8192)
    return seen


def test_cuda_defaults_are_full_shape(monkeypatch, tmp_path):
    seen = _capture(monkeypatch, tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert bench_train.main(["--device", "cuda", "--worlds", "1", "--out", str(tmp_path), "--machine", "m"]) == 0
    assert seen["shard_config"]["imaging"]["shape"] == [160, 224, 224] and seen["shard_config"]["format"] == "wds"
    cfg = read_yaml(seen["config"])
    assert cfg["model"]["name"] == "vit3d_base" and cfg["model"]["img_size"] == [160, 224, 224]
    assert cfg["model"]["patch_size"] == [16, 16, 16] and cfg["zero"] == {"stage": 2, "precision": "bf16"}
    result = json.loads((tmp_path / "train.json").read_text())
    assert result["shard_shape"] == [160, 224, 224]


def test_cpu_defaults_stay_the_demo(monkeypatch, tmp_path):
    seen = _capture(monkeypatch, tmp_path)
    assert bench_train.main(["--worlds", "1", "--out", str(tmp_path), "--machine", "m"]) == 0
    assert seen["shard_config"]["imaging"]["shape"] == [32, 64, 64]
    assert read_yaml(seen["config"])["model"]["name"] == "vit3d_tiny"


@pytest.mark.parametrize("overrides, expect", [([], 8), (["optim.global_batch_size=16"], 16)])
def test_global_batch_read_from_the_last_override(overrides, expect):
    assert bench_train._cfg_value(["optim.global_batch_size=8", *overrides], "optim.global_batch_size", 4) == expect
