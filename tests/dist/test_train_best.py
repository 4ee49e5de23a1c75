"""Keep the best, stop early, through the real trainer: the exported encoder is the evaluated
step with the lowest validation loss, its checkpoint survives keep_last, the run stops after
`patience` evaluations without improvement, and config.json records the choice."""

from __future__ import annotations

import json

import pytest
import torch

from train_data import config_overrides, make_data
from train_launch import logs, metrics, run

pytestmark = [pytest.mark.slow, pytest.mark.dist, pytest.mark.timeout(600)]


def test_best_validation_loss_is_exported_and_patience_stops(tmp_path):
    from safetensors.torch import load_file

    from tte_scale.train.checkpoint import tag_for
    from tte_scale.train.export import full_state_dict

    shards, labels = make_data(tmp_path / "data")
    out = tmp_path / "run"
    # A learning rate far too large: the validation loss soon stops improving.
    sets = config_overrides(shards, labels, out) + [
        "max_steps=30", "optim.lr=0.5", "optim.warmup_steps=0", "eval.every_steps=1", "checkpoint.every_steps=0",
        "checkpoint.keep_last=1", "eval.select=val_loss", "eval.patience=3", "zero.stage=2",
    ]  # fmt: skip
    assert run(1, sets, tmp_path / "best") == [0], logs(tmp_path / "best", 1)
    train, evals = metrics(out)
    losses = {s: r["val_loss"] for s, r in evals.items()}
    best = min(losses, key=losses.get)
    last = max(train)
    cfg = json.loads((out / "encoder" / "config.json").read_text())
    sel = cfg["pretraining"]["selection"]
    assert sel["metric"] == "val_loss" and sel["best_step"] == best and sel["best_value"] == pytest.approx(losses[best])
    assert cfg["pretraining"]["checkpoint"] == tag_for(best)
    # stopped early: 3 evaluations without improvement after the best
    assert last < 30 and sel["stopped_early_at"] == last == best + 3, (losses, sel)
    assert best != last  # the test can fail: the last step is not the one exported
    # the exported weights are the best step's, whose checkpoint survived keep_last=1
    steps = sorted(int(p.name.split("_")[1]) for p in (out / "checkpoints").glob("step_*"))
    assert steps == [best, last]
    state = full_state_dict(out / "checkpoints", tag_for(best), 2)
    exported = load_file(str(out / "encoder" / "model.safetensors"))
    for k, v in exported.items():
        torch.testing.assert_close(v, state[f"encoder.{k}"])
    last_state = full_state_dict(out / "checkpoints", tag_for(last), 2)
    assert any(not torch.equal(v, last_state[f"encoder.{k}"]) for k, v in exported.items())
