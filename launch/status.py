"""`tte-scale launch status JOBID`: the job's state from SLURM and the tails of its task logs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from launch import jobindex
from launch.slurm import LaunchError


def _run(cmd: list[str]) -> subprocess.CompletedProcess | None:
    if shutil.which(cmd[0]) is None:
        return None
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def parse_scontrol(text: str) -> dict[str, str]:
    """``scontrol show job -o`` (one line of Key=Value pairs) -> dict; values may hold spaces only
    in the last field (Command/Comment never matter here)."""
    out: dict[str, str] = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        if sep:
            out[key] = value
    return out


def job_state(job_id: str) -> dict[str, str] | None:
    """SLURM's view of the job (``scontrol show job``), or None if SLURM no longer knows it."""
    proc = _run(["scontrol", "show", "job", "-o", str(job_id)])
    if proc is None or proc.returncode or not proc.stdout.strip():
        return None
    # An array job lists one line per element; the first is the job asked for.
    return parse_scontrol(proc.stdout.splitlines()[0])


def log_files(folder: Path, job_id: str) -> list[Path]:
    """Task logs of the job in submitit's folder, rank order, .out before .err."""
    def key(p: Path) -> tuple[int, str]:
        task = p.name[len(job_id) + 1:].split("_", 1)[0]
        return (int(task) if task.isdigit() else -1, p.suffix)

    return sorted(folder.glob(f"{job_id}_*_log.*"), key=key)


def tail(path: Path, lines: int) -> str:
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - 64 * 1024 * max(1, lines // 40)))
        text = fh.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def status_text(job_id: str, lines: int = 20, folder: Path | None = None) -> str:
    state = job_state(job_id)
    rec = jobindex.lookup(job_id)
    if folder is None and state and state.get("StdOut"):
        folder = Path(state["StdOut"]).parent
    if folder is None and rec:
        folder = Path(rec["folder"])
    if state is None and folder is None:
        raise LaunchError(f"job {job_id}: SLURM does not know it (finished more than MinJobAge ago?) and "
                          f"{jobindex.index_path()} has no record of it; pass --folder DIR (submitit's log folder)")
    out = [f"job {job_id}"]
    if state:
        out.append("  " + "  ".join(f"{k}={state[k]}" for k in
                                    ("JobState", "Reason", "Restarts", "RunTime", "TimeLimit", "NodeList", "ExitCode")
                                    if k in state))
    else:
        out.append("  state: unknown to SLURM now (finished long ago, or another cluster)")
    if rec and rec.get("out_dir"):
        out.append(f"  checkpoints: {rec['out_dir']}/checkpoints   metrics: {rec['out_dir']}/metrics.jsonl")
    if folder is not None:
        files = log_files(folder, job_id)
        out.append(f"  logs: {folder}/{job_id}_<rank>_log.out|err ({len(files)} files)")
        for path in files:
            text = tail(path, lines)
            if text.strip():
                out += [f"==> {path} <==", text]
    return "\n".join(out)
