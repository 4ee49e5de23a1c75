"""`tte-scale launch ray-shard` on the real one-node SLURM: a Ray head in the job, the sharding
run against it, and the same bytes as an in-process `tte-scale shard --workers 0`."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import psutil
import pytest

from slurm_jobs import cli, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "sharding"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "imaging"))

from cohort_fixture import SHARD_SET, make_cohort  # noqa: E402

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(300)]


def _tree(root: Path) -> dict[str, str]:
    # _state/ holds resume bookkeeping (per-run), not part of the shards contract.
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.relative_to(root).parts[0] != "_state"}


def _ray_processes(job_id: str) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if f"ray_tte_{job_id}" in cmd:
            found.append(f"{proc.info['pid']}: {cmd[:200]}")
    return found


def test_ray_shard_job_matches_local_shard(slurm_cluster, tmp_path):
    scans, labels = make_cohort(tmp_path / "cohort", n_subjects=4)
    sets = [a for s in SHARD_SET for a in ("--set", s)]
    common = ["--scans", str(scans), "--labels", str(labels), "--no-progress", *sets]

    local = tmp_path / "local"
    proc = cli("shard", *common, "--out", str(local), "--workers", "0")
    assert proc.returncode == 0, proc.stderr + proc.stdout

    out = tmp_path / "ray"
    proc = cli("launch", "ray-shard", "--nodes", "1", "--cpus-per-node", "1", "--time", "10", "--",
               *common, "--out", str(out))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    first = proc.stdout.splitlines()[0]
    assert first.startswith("submitted job "), proc.stdout
    job_id = first.split()[2].rstrip(":")
    folder = out.with_name(out.name + ".slurm")

    def logs() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')}"
                         for p in sorted(folder.glob(f"{job_id}_*_log.*")))

    try:
        info = wait_for(job_id, lambda i: i["JobState"] == "COMPLETED", "completion", timeout=200)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs()[-8000:]}") from None
    assert info["ExitCode"] == "0:0", logs()[-8000:]
    assert (folder / f"{job_id}_ray_done").read_text() == "0"
    assert not list(folder.glob("ray_auth_token-*")), "the job must remove its own Ray auth token"
    assert "Ray cluster at" in logs() and "--ray-address" in logs()

    want, got = _tree(local), _tree(out)
    assert any(name.endswith(".tar") for name in want) and any(name.startswith("manifest") for name in want), want
    assert got == want

    # `ray start --block` ends its processes on SIGTERM; the job must leave none behind.
    left = _ray_processes(job_id)
    assert not left, "\n".join(left)
