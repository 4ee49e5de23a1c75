"""Fine-tuning protocol: `model.init_encoder` starts a training run (here the supervised
objective on the benchmark labels) from an exported encoder, through the real `tte-scale
train` under DeepSpeed; a mismatched architecture or HU window is refused before training."""

from __future__ import annotations

from pathlib import Path

from train_data import config_overrides, make_data
from train_launch import logs, metrics, run

BASE = ["max_steps=2", "checkpoint.every_steps=0", "checkpoint.export_encoder=true", "eval.every_steps=0",
        "zero.stage=2"]


def test_finetune_starts_from_the_export(tmp_path: Path):
    from tte_scale.models import load_pretrained

    shards, labels = make_data(tmp_path / "data")
    pre = tmp_path / "pre"
    assert run(1, config_overrides(shards, labels, pre) + BASE, tmp_path / "pre") == [0], logs(tmp_path / "pre", 1)
    export = pre / "encoder"

    ft = tmp_path / "ft"
    # A tiny learning rate: after 2 Adam steps every weight is within ~2 lr of where it started.
    sets = BASE + ["objective=supervised", f"model.init_encoder={export}", "optim.lr=1e-6", "optim.warmup_steps=0"]
    assert run(1, config_overrides(shards, labels, ft) + sets, tmp_path / "ft") == [0], logs(tmp_path / "ft", 1)
    start, tuned = load_pretrained(export).state_dict(), load_pretrained(ft / "encoder").state_dict()
    diff = max((start[k] - tuned[k]).abs().max().item() for k in start if start[k].is_floating_point())
    assert 0 < diff < 1e-4, diff  # trained, from the export (a fresh init differs by ~1e-2 and more)

    bad = tmp_path / "bad"
    sets = BASE + [f"model.init_encoder={export}", "model.embed_dim=16"]
    assert run(1, config_overrides(shards, labels, bad) + sets, tmp_path / "bad") != [0]
    assert "model.init_encoder" in logs(tmp_path / "bad", 1) and "embed_dim" in logs(tmp_path / "bad", 1)
    sets = BASE + [f"model.init_encoder={export}", "data.hu_window=[-1200,600]"]
    assert run(1, config_overrides(shards, labels, bad) + sets, tmp_path / "bad2") != [0]
    assert "HU window" in logs(tmp_path / "bad2", 1)


def test_per_task_finetuning_trains_on_its_task_alone(tmp_path: Path):
    """`supervised_tasks=[task1]`: the supervised head has one output, trained on that task's
    column; the periodic C-index reports that task only; the export records the task (what
    `tte-scale eval --per-task` checks). An unknown task is refused naming the known ones."""
    import json

    from tte_scale.models import load_pretrained

    shards, labels = make_data(tmp_path / "data")
    pre = tmp_path / "pre"
    assert run(1, config_overrides(shards, labels, pre) + BASE, tmp_path / "pre") == [0], logs(tmp_path / "pre", 1)
    ft = tmp_path / "ft" / "task1"
    sets = BASE + ["objective=supervised", "supervised_tasks=[task1]", f"model.init_encoder={pre / 'encoder'}",
                   "eval.every_steps=2"]
    assert run(1, config_overrides(shards, labels, ft) + sets, tmp_path / "ft") == [0], logs(tmp_path / "ft", 1)
    meta = json.loads((ft / "encoder" / "config.json").read_text())
    assert meta["pretraining"]["objective"] == "supervised" and meta["pretraining"]["supervised_tasks"] == ["task1"]
    load_pretrained(ft / "encoder")
    _, evals = metrics(ft)
    assert [k for k in evals[2] if k.startswith("cindex/")] == ["cindex/task1"]

    bad = tmp_path / "bad"
    sets = BASE + ["objective=supervised", "supervised_tasks=[task9]"]
    assert run(1, config_overrides(shards, labels, bad) + sets, tmp_path / "bad") != [0]
    assert "supervised_tasks: ['task9'] not among the benchmark tasks" in logs(tmp_path / "bad", 1)
