"""Helpers of the SLURM tests: poll a job's state, release a requeued job, submit through the CLI."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TERMINAL_BAD = ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tte_scale.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


def job_info(job_id: str) -> dict[str, str]:
    from launch.status import job_state

    return job_state(job_id) or {}


def wait_for(job_id: str, ready, what: str, timeout: float = 240.0, release_requeued: bool = True) -> dict:
    """Poll `scontrol show job` until ``ready(info)``; fail on a terminal state that is not ready.

    A requeued job waits ~2 minutes (SLURM sets its BeginTime) before it may start again; the
    tests release it at once with `scontrol update StartTime=now`.
    """
    deadline = time.monotonic() + timeout
    info: dict[str, str] = {}
    while time.monotonic() < deadline:
        info = job_info(job_id)
        if info and ready(info):
            return info
        state = info.get("JobState", "")
        if state in TERMINAL_BAD:
            raise AssertionError(f"job {job_id} ended {state} while waiting for {what}: {info}")
        if release_requeued and state == "PENDING" and info.get("Reason") == "BeginTime":
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} of job {job_id}: {info}")
