"""Preemption signal -> same-step checkpoint on every rank + requeue status; NaN guard."""

from __future__ import annotations

import json
import math
import signal
import time

import pytest
import torch

from tte_scale.train import EXIT_REQUEUE
from train_data import config_overrides, make_data
from train_launch import logs, metrics, run, start, wait

pytestmark = [pytest.mark.slow, pytest.mark.dist, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_guards")
    return make_data(root / "data")


def test_sigusr1_on_one_rank_checkpoints_all_and_exits_for_requeue(data, tmp_path):
    shards, labels = data
    out = tmp_path / "sig"
    procs = start(2, config_overrides(shards, labels, out) + ["max_steps=500", "checkpoint.every_steps=0",
                                                              "zero.stage=2"], tmp_path / "sig")
    deadline = time.monotonic() + 300
    while len(metrics(out)[0]) < 2:
        assert all(p.poll() is None for p in procs), logs(tmp_path / "sig", 2)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGUSR1)  # only rank 1: the flag is all-reduced at the step boundary
    assert wait(procs) == [EXIT_REQUEUE, EXIT_REQUEUE], logs(tmp_path / "sig", 2)
    last = max(metrics(out)[0])
    folder = out / "checkpoints" / f"step_{last:08d}"
    marker = json.loads((folder / "COMPLETE.json").read_text())
    assert marker["step"] == last and marker["world_size"] == 2 and last < 500
    for rank in (0, 1):
        assert torch.load(folder / f"trainer_rank{rank:05d}.pt", weights_only=False)["step"] == last
    assert (out / "checkpoints" / "latest").read_text() == folder.name


def test_nonfinite_steps_are_skipped_then_abort(data, tmp_path):
    shards, labels = data
    out = tmp_path / "nan"
    codes = run(1, config_overrides(shards, labels, out) + [
        "zero.stage=0", "max_steps=8", "guards.inject_nonfinite_steps=[2,4,5]",
        "guards.max_consecutive_nonfinite=2", "checkpoint.every_steps=0",
        # also covers the bias prefit from the labels folder and a DataLoader worker process
        "head.bias_prefit=true", "data.num_workers=1"], tmp_path / "nan")
    assert codes == [2]
    assert "2 optimizer steps in a row had a non-finite loss" in logs(tmp_path / "nan", 1)
    train, _ = metrics(out)
    assert train[2]["skipped"] and not math.isfinite(train[2]["loss"])
    assert not train[3]["skipped"] and math.isfinite(train[3]["loss"]) and math.isfinite(train[3]["grad_norm"])
    assert train[3]["skipped_total"] == 1 and train[4]["skipped"] and 5 not in train
