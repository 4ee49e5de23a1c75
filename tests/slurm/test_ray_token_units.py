"""`launch ray-shard`'s Ray auth token (no cluster needed): one 0600 file per submission, named
in that job's config, removed by that job's task 0 when it ends, never another job's."""

from __future__ import annotations

import stat
import subprocess
import types
from pathlib import Path

import pytest
from slurm_jobs import cli

import tte_scale.launch.ray_slurm as ray_slurm
from tte_scale.cli import main
from tte_scale.launch.ray_slurm import TOKEN_PREFIX, RayShardJob, new_token_file


class FakeSlurmExecutor:
    """Stands in for submitit.SlurmExecutor: keeps the submitted callables instead of sbatch."""

    submitted: list = []

    def __init__(self, folder):
        self.folder = Path(folder)

    def update_parameters(self, **params):
        self.params = params

    def submit(self, fn):
        FakeSlurmExecutor.submitted.append(fn)
        return types.SimpleNamespace(job_id=str(100 + len(FakeSlurmExecutor.submitted)))


def tokens(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"{TOKEN_PREFIX}*"))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_two_submissions_to_one_folder_get_their_own_token(tmp_path, monkeypatch, capsys):
    import submitit

    monkeypatch.setattr(submitit, "SlurmExecutor", FakeSlurmExecutor)
    monkeypatch.setattr(FakeSlurmExecutor, "submitted", [])
    monkeypatch.setenv("TTE_SCALE_JOB_INDEX", str(tmp_path / "jobs.jsonl"))
    folder = tmp_path / "shards.slurm"
    argv = [
        "launch",
        "ray-shard",
        "--cpus-per-node",
        "2",
        "--folder",
        str(folder),
        "--",
        "--scans",
        "s.parquet",
        "--labels",
        "labels",
        "--out",
        str(tmp_path / "shards"),
    ]
    assert main(argv) == 0 and main(argv) == 0
    assert "submitted job 101" in capsys.readouterr().out

    a, b = FakeSlurmExecutor.submitted
    assert a.token_file != b.token_file
    assert set(tokens(folder)) == {Path(a.token_file), Path(b.token_file)}
    for job in (a, b):
        assert Path(job.token_file).parent == folder and mode(Path(job.token_file)) == 0o600
    secret_a, secret_b = Path(a.token_file).read_text(), Path(b.token_file).read_text()
    assert secret_a != secret_b and len(secret_a) == len(secret_b) == 64

    a.remove_token()
    assert tokens(folder) == [Path(b.token_file)] and Path(b.token_file).read_text() == secret_b


def _ray_shard_argv(folder, out, *launch_flags) -> list[str]:
    """`launch ray-shard` on one CPU per node with a token folder; shard's own arguments are dummies."""
    return ["launch", "ray-shard", "--cpus-per-node", "1", "--folder", str(folder), *launch_flags, "--",
            "--scans", "s.parquet", "--labels", "l", "--out", str(out)]  # fmt: skip


def test_failed_submission_leaves_no_token(tmp_path, monkeypatch):
    import submitit

    class Refusing(FakeSlurmExecutor):
        def submit(self, fn):
            raise RuntimeError("sbatch: error: invalid partition")

    monkeypatch.setattr(submitit, "SlurmExecutor", Refusing)
    monkeypatch.setenv("TTE_SCALE_JOB_INDEX", str(tmp_path / "jobs.jsonl"))
    folder = tmp_path / "f"
    with pytest.raises(RuntimeError, match="invalid partition"):
        main(_ray_shard_argv(folder, tmp_path / "o"))
    assert tokens(folder) == []


@pytest.mark.parametrize(
    "rank, outcome, removed", [(0, "ok", True), (0, "failed", True), (0, "requeued", False), (1, "ok", False)]
)
def test_job_end_removes_its_own_token_only(tmp_path, monkeypatch, rank, outcome, removed):
    """Runs RayShardJob.__call__ with Ray and the sharding command stood in for: task 0 removes
    its token in its `finally` (also when sharding fails), but not when submitit requeues the
    job (the requeued run needs it); other tasks never remove it; another job's file stays."""
    folder = tmp_path / "slurm"
    mine, other = new_token_file(folder), new_token_file(folder)
    other_secret = other.read_text()
    for key, value in {
        "SLURM_JOB_ID": "7",
        "SLURM_JOB_NODELIST": "localhost",
        "SUBMITIT_FOLDER": str(folder),
        "SLURM_PROCID": str(rank),
        "SLURM_CPUS_PER_TASK": "1",
        "RAY_AUTH_MODE": "",
        "RAY_AUTH_TOKEN_PATH": "",
    }.items():
        monkeypatch.setenv(key, value)  # restored after the test: the job sets the RAY_AUTH_* ones
    if rank:
        (folder / "7_ray_done").write_text("0")
    seen = {}

    def fake_call(cmd):
        import os

        seen["token"] = os.environ["RAY_AUTH_TOKEN_PATH"]
        if outcome == "requeued":  # what submitit's signal handler does after `scontrol requeue`
            raise SystemExit(-1)
        return 0 if outcome == "ok" else 3

    # a real child process in place of `ray start --block`, so the job's stop_process runs for real
    fake_subprocess = types.SimpleNamespace(Popen=lambda cmd: subprocess.Popen(["sleep", "60"]), call=fake_call)
    monkeypatch.setattr(ray_slurm, "subprocess", fake_subprocess)
    monkeypatch.setattr(ray_slurm, "_wait_for_nodes", lambda *a: None)
    job = RayShardJob(shard_args=["--out", str(tmp_path / "out")], token_file=str(mine))
    if outcome == "failed":
        with pytest.raises(RuntimeError, match="status 3"):
            job()
    elif outcome == "requeued":
        with pytest.raises(SystemExit):
            job()
    else:
        assert job() == 0
    if rank == 0:
        assert seen["token"] == str(mine)
    assert mine.exists() is not removed
    assert other.read_text() == other_secret and mode(other) == 0o600
    if removed:
        with pytest.raises(RuntimeError, match="is gone"):  # a later start of the same job says why
            job()


def test_dry_run_creates_no_token(tmp_path):
    folder = tmp_path / "f"
    proc = cli(*_ray_shard_argv(folder, tmp_path / "o", "--dry-run"))
    assert proc.returncode == 0, proc.stderr
    assert f"{folder}/{TOKEN_PREFIX}<random>" in proc.stdout and not folder.exists()
