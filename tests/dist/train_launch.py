"""Start `tte-scale train` ranks as real processes, the way torchrun or SLURM would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "pretrain" / "demo.yaml"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(world: int, overrides: list[str], log_prefix: Path, extra_args: tuple[str, ...] = ()) -> list[subprocess.Popen]:
    """Spawn ``world`` ranks (env RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT)."""
    port = _port()
    cmd = [sys.executable, "-m", "tte_scale.cli", "train", "--config", str(DEMO), *extra_args]
    for o in overrides:
        cmd += ["--set", o]
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "DS_ACCELERATOR": "cpu",
               "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        log = open(f"{log_prefix}.rank{rank}.log", "w")
        procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO))
    return procs


def wait(procs: list[subprocess.Popen], timeout: float = 300) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    try:
        for p in procs:
            codes.append(p.wait(timeout=max(1.0, deadline - time.monotonic())))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return codes


def run(world: int, overrides: list[str], log_prefix: Path, extra_args: tuple[str, ...] = (), timeout: float = 300) -> list[int]:
    return wait(start(world, overrides, log_prefix, extra_args), timeout)


def logs(log_prefix: Path, world: int) -> str:
    return "\n".join(Path(f"{log_prefix}.rank{r}.log").read_text() for r in range(world))


def metrics(out_dir: Path) -> tuple[dict[int, dict], dict[int, dict]]:
    """(train records by step, eval records by step), read as the trainer's own reader reads them
    (after a resume, the records of the repeated steps are the resumed run's)."""
    from tte_scale.train.metrics_log import read_metrics

    path = out_dir / "metrics.jsonl"
    if not path.exists():
        return {}, {}
    train, evals = ({r["step"]: r for r in read_metrics(path, kind=k)} for k in ("train", "eval"))
    return train, evals
