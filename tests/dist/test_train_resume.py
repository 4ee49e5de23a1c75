"""Kill-and-resume exactness, fallback past a truncated checkpoint, resume onto 1 rank.

The uninterrupted run and the killed run are identical 2-rank ZeRO-3 runs with stochastic
depth and augmentation on, so an unrestored RNG stream (torch, numpy, python, augmentation
generator) or loader cursor would change the losses after the resume. They read through one
DataLoader worker per rank (Zarr, so forkserver workers), which must neither draw from the
model's RNG streams (a DataLoader draws its workers' seed from the global torch RNG unless
given a generator: the resumed run starts its workers at another step than the uninterrupted
one) nor restart at epoch boundaries (the 16 samples make 4-step epochs, so the 8 steps cross
one, and the resume at step 2 starts mid-epoch).
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import time
from pathlib import Path

import pytest

from train_data import config_overrides, make_data
from train_launch import logs, metrics, run, start, wait

pytestmark = [pytest.mark.slow, pytest.mark.dist, pytest.mark.timeout(900)]

STEPS = 8
COMMON = [f"max_steps={STEPS}", "zero.stage=3", "data.augmentation=true", "model.drop_path_rate=0.2",
          "checkpoint.every_steps=2", "eval.every_steps=4", "checkpoint.export_encoder=false", "data.num_workers=1"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_resume")
    shards, labels = make_data(root / "data")
    ref = root / "uninterrupted"
    codes = run(2, config_overrides(shards, labels, ref) + COMMON, root / "ref")
    assert codes == [0, 0], logs(root / "ref", 2)
    return root, shards, labels, ref


def _wait_for_published(ckpts: Path, step: int, procs, timeout: float = 300) -> None:
    """Until ``latest`` names ``step`` or a later step. A save publishes its marker first and
    ``latest`` after it: a kill between the two leaves a complete folder that a resume must never
    take (it was not published), so waiting for the marker alone would race with that path."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            published = int((ckpts / "latest").read_text().strip().split("_")[1])
        except (OSError, IndexError, ValueError):
            published = -1
        if published >= step:
            return
        assert all(p.poll() is None for p in procs), "run ended before the checkpoint to kill at"
        assert time.monotonic() < deadline, f"timed out waiting for {ckpts}/latest to reach step {step}"
        time.sleep(0.02)


def test_sigkill_then_resume_is_bitwise_identical(setup):
    root, shards, labels, ref = setup
    out = root / "killed"
    overrides = config_overrides(shards, labels, out) + COMMON
    procs = start(2, overrides, root / "killed")
    _wait_for_published(out / "checkpoints", 4, procs)
    for p in procs:
        p.send_signal(signal.SIGKILL)
    assert wait(procs) == [-9, -9]
    assert not (out / "checkpoints" / "step_00000008" / "COMPLETE.json").exists()

    # Truncate one optimizer shard of the published checkpoint: resume must fall back.
    ckpts = sorted(p for p in (out / "checkpoints").glob("step_*") if (p / "COMPLETE.json").exists())
    published = out / "checkpoints" / (out / "checkpoints" / "latest").read_text().strip()
    # (A kill between a later save's marker and its `latest` leaves a complete folder after this
    # one; the resume must pass over it unused.)
    shard = sorted(published.glob("*optim_states.pt"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    assert ckpts.index(published) > 0, f"no complete checkpoint before {published.name} to fall back to"
    fallback_step = int(ckpts[ckpts.index(published) - 1].name.split("_")[1])

    codes = run(2, overrides, root / "resumed", extra_args=("--resume",))
    assert codes == [0, 0], logs(root / "resumed", 2)
    text = logs(root / "resumed", 2)
    assert "not usable" in text and f"at step {fallback_step}" in text

    ref_train, ref_eval = metrics(ref)
    got_train, got_eval = metrics(out)
    for step in range(fallback_step + 1, STEPS + 1):
        assert got_train[step]["loss"] == ref_train[step]["loss"], step  # bitwise on CPU
        assert got_train[step]["grad_norm"] == ref_train[step]["grad_norm"], step
    assert got_eval[STEPS]["val_loss"] == ref_eval[STEPS]["val_loss"]


def test_resume_without_checkpoint_fails_clearly(setup, tmp_path):
    root, shards, labels, _ = setup
    codes = run(1, config_overrides(shards, labels, tmp_path / "empty") + COMMON, tmp_path / "noresume",
                extra_args=("--resume",))
    assert codes == [2]
    assert "holds no complete checkpoint" in logs(tmp_path / "noresume", 1)


def test_resume_two_ranks_onto_one(setup, tmp_path):
    root, shards, labels, ref = setup
    out = tmp_path / "one_rank"
    (out / "checkpoints").mkdir(parents=True)
    shutil.copytree(ref / "checkpoints" / "step_00000004", out / "checkpoints" / "step_00000004")
    codes = run(1, config_overrides(shards, labels, out) + COMMON + ["max_steps=6", "checkpoint.export_encoder=true"],
                tmp_path / "w1", extra_args=("--resume",))
    assert codes == [0], logs(tmp_path / "w1", 1)
    assert (out / "checkpoints" / "step_00000004_universal" / "COMPLETE.json").exists()
    train, _ = metrics(out)
    assert sorted(train) == [5, 6]
    ref_train, _ = metrics(ref)
    for step in (5, 6):
        # Same weights, optimizer state and sample order; only the RNG streams differ.
        assert math.isfinite(train[step]["loss"])
        assert train[step]["loss"] == pytest.approx(ref_train[step]["loss"], rel=0.25)
    marker = json.loads((out / "checkpoints" / "step_00000006" / "COMPLETE.json").read_text())
    assert marker["world_size"] == 1 and (out / "encoder" / "model.safetensors").exists()
