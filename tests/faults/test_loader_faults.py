"""The training loader under faults (issue 24): a trainer killed with SIGKILL takes its DataLoader
workers with it, and with them the forkserver, the resource tracker, the run's semaphores and
shared memory in /dev/shm and its /tmp/pymp-* folder. Before the fix, forkserver workers (Zarr)
watched the forkserver, which in turn waited for them: all of it stayed up for hours."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dist"))
from train_data import config_overrides, make_data  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.dist, pytest.mark.timeout(900)]


def shm_inodes(pids) -> set[int]:
    """Inodes of the /dev/shm files (named semaphores, shared memory) mapped by ``pids``."""
    out = set()
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].startswith("/dev/shm/"):
                out.add(int(parts[4]))
    return out


def alive(procs) -> list[psutil.Process]:
    left = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                left.append(p)
        except psutil.NoSuchProcess:
            pass
    return left


def train_steps(out: Path) -> int:
    path = out / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return sum(json.loads(line).get("kind") == "train" for line in lines if line.endswith("}"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("loader_faults") / "data")


@pytest.mark.parametrize("fmt, start_method", [("zarr", "forkserver"), ("wds", "fork")])
def test_sigkill_of_train_leaves_no_worker_semaphore_or_temp_folder(data, tmp_path, fmt, start_method):
    shards, labels = data
    out, tmp = tmp_path / "run", tmp_path / "tmp"
    tmp.mkdir()
    cmd = [sys.executable, "-m", "tte_scale.cli", "train", "--config", str(REPO / "configs" / "pretrain" / "demo.yaml")]
    sets = config_overrides(shards, labels, out) + [
        f"data.format={fmt}",
        "data.num_workers=2",
        "max_steps=100000",
        "checkpoint.every_steps=0",
        "zero.stage=0",
    ]
    for s in sets:
        cmd += ["--set", s]
    # TMPDIR: the run's multiprocessing temp folder (/tmp/pymp-*) lands where this test can see it
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    log = open(tmp_path / "train.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    procs: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 400
        while train_steps(out) < 2:
            assert proc.poll() is None, (tmp_path / "train.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no training step within the time limit"
            time.sleep(0.2)
        trainer = psutil.Process(proc.pid)
        procs = trainer.children(recursive=True)
        workers = [p for p in procs if "resource_tracker" not in " ".join(p.cmdline())]
        if start_method == "forkserver":
            assert any("forkserver" in " ".join(p.cmdline()) for p in procs)
            assert len(workers) >= 3  # the forkserver and its two workers
        else:
            assert len(workers) >= 2
        inodes = shm_inodes([proc.pid, *(p.pid for p in procs)])
        assert inodes, "the workers' shared memory and semaphores should be mapped"

        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 30  # "within a few seconds", with room for a loaded CI machine
        while alive(procs) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [(p.pid, " ".join(p.cmdline())[:100]) for p in alive(procs)]
        assert not left, f"still running after the trainer was killed: {left}"
        remaining = {e.name for e in os.scandir("/dev/shm") if e.inode() in inodes}
        assert not remaining, f"left in /dev/shm: {sorted(remaining)}"
        assert not list(tmp.glob("pymp-*")), "the run's multiprocessing temp folder is left"
    finally:
        for p in [proc, *alive(procs)]:
            try:
                p.kill()
            except (OSError, psutil.Error):
                pass
        proc.wait(timeout=60)
        log.close()
