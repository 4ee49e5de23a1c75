"""Completion marker, atomic `latest`, fallback past broken folders, keep-last-k."""

from __future__ import annotations

import json

import pytest

from tte_scale.train.checkpoint import (
    LATEST,
    MARKER,
    CheckpointManager,
    NoCheckpointError,
    atomic_write_text,
    check_complete,
)


def _fake_save(mgr: CheckpointManager, step: int, publish: bool = True, world: int = 2) -> None:
    folder = mgr.folder(step)
    folder.mkdir(parents=True)
    for r in range(world):
        (folder / f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt").write_bytes(b"x" * (100 + step))
    if publish:
        mgr.publish(step, world)


def test_publish_writes_marker_latest_and_prunes(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for step in (2, 4, 6):
        _fake_save(mgr, step)
    assert (tmp_path / LATEST).read_text() == "step_00000006"
    assert [s for s, _ in mgr.candidates()] == [6, 4]  # keep the last 2
    marker = json.loads((tmp_path / "step_00000006" / MARKER).read_text())
    assert marker["step"] == 6 and marker["world_size"] == 2 and len(marker["files"]) == 2


def test_half_written_folder_falls_back(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=5)
    _fake_save(mgr, 2)
    _fake_save(mgr, 4, publish=False)  # killed before the marker
    found = mgr.newest_complete()
    assert found.step == 2 and found.world_size == 2


def test_truncated_shard_falls_back(tmp_path, caplog):
    mgr = CheckpointManager(tmp_path, keep_last=5)
    _fake_save(mgr, 2)
    _fake_save(mgr, 4)
    shard = tmp_path / "step_00000004" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    shard.write_bytes(b"x" * 10)
    assert not check_complete(shard.parent)[0]
    assert mgr.newest_complete().step == 2
    assert "truncated" in caplog.text


def test_missing_file_and_bad_marker_fall_back(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=5)
    _fake_save(mgr, 2)
    _fake_save(mgr, 4)
    _fake_save(mgr, 6)
    (tmp_path / "step_00000006" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").unlink()
    (tmp_path / "step_00000004" / MARKER).write_text("{not json")
    assert mgr.newest_complete().step == 2


def test_resume_without_checkpoint_raises(tmp_path):
    with pytest.raises(NoCheckpointError, match="holds no complete checkpoint"):
        CheckpointManager(tmp_path / "nothing", keep_last=1).require_resume_point()
    mgr = CheckpointManager(tmp_path, keep_last=1)
    _fake_save(mgr, 2, publish=False)
    with pytest.raises(NoCheckpointError):
        mgr.require_resume_point()


def test_prune_leaves_later_partial_folders(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=1)
    _fake_save(mgr, 8, publish=False)  # from a dead attempt that got further
    _fake_save(mgr, 2)
    _fake_save(mgr, 4)
    assert [s for s, _ in mgr.candidates()] == [8, 4]


def test_atomic_write_replaces_without_temp_leftovers(tmp_path):
    target = tmp_path / "latest"
    atomic_write_text(target, "a")
    atomic_write_text(target, "b")
    assert target.read_text() == "b" and [p.name for p in tmp_path.iterdir()] == ["latest"]
