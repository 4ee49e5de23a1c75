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


def test_a_file_rewritten_with_the_same_size_fails_the_checksum(tmp_path):
    """Sizes alone accepted a step folder whose model states were rewritten after its marker."""
    mgr = CheckpointManager(tmp_path, keep_last=5)
    _fake_save(mgr, 2)
    _fake_save(mgr, 4)
    shard = tmp_path / "step_00000004" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    shard.write_bytes(b"y" * shard.stat().st_size)
    ok, reason, _ = check_complete(shard.parent)
    assert not ok and "CRC-32C" in reason
    assert check_complete(shard.parent, verify=None)[0]  # the cheap check (sizes) cannot see it
    assert mgr.resume_point().step == 2


def test_resume_follows_latest_not_the_highest_step(tmp_path, caplog):
    mgr = CheckpointManager(tmp_path, keep_last=5)
    _fake_save(mgr, 2)
    _fake_save(mgr, 4)
    _fake_save(mgr, 30)  # complete, but e.g. an old run's
    atomic_write_text(tmp_path / LATEST, "step_00000004")
    assert mgr.resume_point().step == 4 and "newer than `latest`" in caplog.text
    (tmp_path / "step_00000004" / MARKER).unlink()
    assert mgr.resume_point().step == 2  # the newest verified one before `latest`
    (tmp_path / LATEST).unlink()
    assert mgr.resume_point().step == 30  # no `latest` (a checkpoint copied by hand): the newest complete


def test_resume_skips_checkpoints_of_another_run(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=5)
    folder = mgr.folder(2)
    folder.mkdir()
    (folder / "a.pt").write_bytes(b"a")
    mgr.publish(2, 1, run_id="old")
    folder = mgr.folder(4)
    folder.mkdir()
    (folder / "a.pt").write_bytes(b"b")
    mgr.publish(4, 1, run_id="new")
    (folder / "a.pt").write_bytes(b"c")  # damaged: the fallback must not take the other run's step 2
    assert mgr.resume_point(run_id="new") is None
    assert mgr.resume_point().step == 2


def test_every_rank_verifies_its_share_and_all_must_agree(tmp_path):
    """Two ranks (threads) each checksum half of the files; a damaged file in rank 1's half makes both
    fall back together (``all_agree`` stands in for the all-reduce)."""
    import threading

    mgr = CheckpointManager(tmp_path, keep_last=5)
    _fake_save(mgr, 2)
    _fake_save(mgr, 4)
    files = sorted(p.name for p in (tmp_path / "step_00000004").iterdir() if p.name != MARKER)
    (tmp_path / "step_00000004" / files[1]).write_bytes(b"z" * 104)  # rank 1's share of 2 ranks
    assert check_complete(tmp_path / "step_00000004", verify=(0, 2))[0]
    assert not check_complete(tmp_path / "step_00000004", verify=(1, 2))[0]

    votes, barrier, found = {}, threading.Barrier(2), {}

    def rank(r):
        def all_agree(ok):
            votes[r] = ok
            barrier.wait()
            verdict = all(votes.values())
            barrier.wait()
            return verdict

        found[r] = mgr.resume_point(rank=r, world_size=2, all_agree=all_agree).step

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert found == {0: 2, 1: 2}


def test_clear_removes_the_marker_before_the_files(tmp_path, monkeypatch):
    import shutil

    mgr = CheckpointManager(tmp_path, keep_last=5)
    _fake_save(mgr, 4)
    seen = []
    real_rmtree = shutil.rmtree
    monkeypatch.setattr(shutil, "rmtree", lambda p, **kw: seen.append((tmp_path / "step_00000004" / MARKER).exists()))
    mgr.clear(4)
    assert seen[0] is False  # the marker was gone before any file was removed
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    mgr.clear(4)
    assert not mgr.folder(4).exists()


def test_markers_of_format_1_are_checked_by_size(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=5)
    _fake_save(mgr, 2, publish=False)
    folder = mgr.folder(2)
    files = {p.name: p.stat().st_size for p in folder.iterdir()}
    (folder / MARKER).write_text(json.dumps({"format_version": 1, "step": 2, "world_size": 2, "files": files}))
    assert check_complete(folder)[0]
    next(folder.glob("*.pt")).write_bytes(b"x")
    assert not check_complete(folder)[0]
