"""Helpers of the SLURM tests: the CLI (here or on the cluster's head), a job's state, bounded waits."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TERMINAL_BAD = ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")


def cli(*args: str, timeout: float = 120, cluster=None) -> subprocess.CompletedProcess:
    """`tte-scale ARGS` in the checkout: on this machine, or on ``cluster``'s head (the login node)."""
    cmd = [sys.executable, "-m", "tte_scale.cli", *args]
    if cluster is not None:
        return cluster.run(cmd, cwd=REPO, timeout=timeout)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout)


def job_info(cluster, job_id: str) -> dict[str, str]:
    from tte_scale.launch.status import parse_scontrol

    proc = cluster.run(["scontrol", "show", "job", "-o", str(job_id)], timeout=30)
    return parse_scontrol(proc.stdout.splitlines()[0]) if proc.returncode == 0 and proc.stdout.strip() else {}


def submitted_id(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr + proc.stdout
    first = proc.stdout.splitlines()[0]
    assert first.startswith("submitted job "), proc.stdout
    return first.split()[2].rstrip(":")


def wait_for(
    cluster,
    job_id: str,
    ready,
    what: str,
    timeout: float = 240.0,
    release_requeued: bool = True,
    fail_on: tuple[str, ...] = TERMINAL_BAD,
) -> dict:
    """Poll `scontrol show job` until ``ready(info)``; fail on a state in ``fail_on`` that is not ready.

    A requeued job waits ~2 minutes (SLURM sets its BeginTime) before it may start again; the
    tests release it at once with `scontrol update StartTime=now`.
    """
    deadline = time.monotonic() + timeout
    info: dict[str, str] = {}
    while time.monotonic() < deadline:
        info = job_info(cluster, job_id)
        if info and ready(info):
            return info
        state = info.get("JobState", "")
        if state in fail_on:
            raise AssertionError(f"job {job_id} ended {state} while waiting for {what}: {info}")
        if release_requeued and state == "PENDING" and info.get("Reason") == "BeginTime":
            cluster.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], timeout=30)
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} of job {job_id}: {info}")


def logs(folder: Path, job_id: str) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')}" for p in sorted(folder.glob(f"{job_id}_*_log.*")))
