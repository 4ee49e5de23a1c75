"""benchmarks/bench_backbones.py --collect: a demo folder + trained backbones -> demo_backbones.{json,md}."""

from __future__ import annotations

import json

import pytest

from tte_scale.benchmarks import bench_backbones
from tte_scale.errors import InputError
from tte_scale.models import create_model, save_pretrained

TINY = {"img_size": [8, 16, 16], "patch_size": [4, 8, 8], "embed_dim": 16, "depth": 1, "num_heads": 2}


def _run(folder, name, step_s, **overrides):
    save_pretrained(create_model(name, **overrides), folder / "encoder", model_name=name)
    rows = [{"kind": "start", "step": 0}] + [
        {"kind": "train", "step": i, "step_s": step_s * (2 if i == 1 else 1)} for i in range(1, 6)
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_collect_reads_the_eval_and_each_training(tmp_path):
    demo, runs = tmp_path / "demo", tmp_path / "runs"
    _run(demo / "pretrain", "vit3d_tiny", 0.1, **TINY)
    _run(runs / "densenet121_3d", "vit3d_tiny", 2.0, **{**TINY, "embed_dim": 32})  # any export will do
    (runs / "eval").mkdir(parents=True)
    summary = {
        "mean_over_tasks": {
            "tte/logistic/auroc": [0.78, 0.72, 0.83],
            "tte/cox/c_index": [0.76, 0.7, 0.8],
            "densenet121_3d/logistic/auroc": [0.7, 0.64, 0.76],
            "densenet121_3d/cox/c_index": [0.69, 0.63, 0.75],
        },
        "tte_minus": [
            {
                "model": "densenet121_3d",
                "probe": "logistic",
                "metric": "auroc",
                "diff": 0.08,
                "ci_low": 0.01,
                "ci_high": 0.15,
            }
        ],
    }
    (runs / "eval" / "summary.json").write_text(json.dumps(summary))
    argv = ["--demo-run", str(demo), "--runs-dir", str(runs), "--collect", "--out", str(tmp_path / "res")]
    assert bench_backbones.main([*argv, "--machine", "test box"]) == 0
    res = json.loads((tmp_path / "res" / "demo_backbones.json").read_text())
    assert res["training"]["densenet121_3d"] == {"steps": 5, "train_seconds": 12.0, "median_step_s": 2.0}
    assert res["training"]["tte"]["median_step_s"] == 0.1
    assert res["encoders"]["tte"]["model_name"] == "vit3d_tiny"
    assert res["encoders"]["densenet121_3d"]["params"] > res["encoders"]["tte"]["params"]
    assert res["vit_minus"]["densenet121_3d/logistic/auroc"]["diff"] == 0.08
    md = (tmp_path / "res" / "demo_backbones.md").read_text()
    assert "0.700 [0.640, 0.760]" in md and "+0.080 [+0.010, +0.150]" in md and "test box" in md


def test_collect_without_the_eval_names_what_is_missing(tmp_path):
    _run(tmp_path / "demo" / "pretrain", "vit3d_tiny", 0.1, **TINY)
    argv = ["--demo-run", str(tmp_path / "demo"), "--runs-dir", str(tmp_path / "runs"), "--collect"]
    with pytest.raises(InputError, match=r"eval/summary.json: missing"):
        bench_backbones.main([*argv, "--out", str(tmp_path / "res")])
