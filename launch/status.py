"""`tte-scale launch status JOBID` and `launch cancel JOBID`.

Status: the job's state from SLURM; per node, each rank's liveness and last step, read from
the task logs; a failed rank named with its node; the tails of the task logs. What the task
logs hold (all ranks log to their own ``<jobid>_<rank>_log.err``, appended across requeues):

* :data:`START`, one per rank and (re)start: rank, world, node, restart count, config digest
  (``launch.job.TrainJob``);
* :data:`STEP` / :data:`SAVED` / :data:`RESUMED`: the trainer's per-rank step lines;
* :data:`FAILED`: a rank whose training raised (``TrainJob``); :data:`SRUN_FAILED`: srun's own
  report of a task that died (a kill, a signal, a crash before Python could log), in the
  batch script's log, which is rank 0's;
* submitit's "Job completed successfully" when a rank returned.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tte_scale.launch import jobindex
from tte_scale.launch.slurm import LaunchError

START = re.compile(r"rank (\d+)/(\d+) on node (\S+) \(restart (\d+), config (\w+)\)")
STEP = re.compile(r"rank (\d+): step (\d+) done")
SAVED = re.compile(r"rank (\d+): preemption signal: saved step (\d+)")
RESUMED = re.compile(r"rank (\d+): resumed from \S+ at step (\d+)")
FAILED = re.compile(r"rank (\d+) on node (\S+) failed: (.*)")
SRUN_FAILED = re.compile(r"srun: error: (\S+): tasks? ([\d,\-]+): (.*)")
DONE = "Job completed successfully"


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
        task = p.name[len(job_id) + 1 :].split("_", 1)[0]
        return (int(task) if task.isdigit() else -1, p.suffix)

    return sorted(folder.glob(f"{job_id}_*_log.*"), key=key)


def tail(path: Path, lines: int) -> str:
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - 64 * 1024 * max(1, lines // 40)))
        text = fh.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def expand_tasks(text: str) -> list[int]:
    """srun's task list ``0-1,3`` -> ``[0, 1, 3]``."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    return out


@dataclass
class RankState:
    """One rank of the job's latest (re)start, as its log tells it."""

    rank: int
    node: str = "?"
    restart: int = 0
    config: str = ""
    step: int | None = None
    state: str = "no log"
    detail: str = ""
    log_age_s: float | None = None
    failures: list[str] = field(default_factory=list)

    def describe(self) -> str:
        parts = [f"rank {self.rank} {self.state}"]
        if self.step is not None:
            parts.append(f"step {self.step}")
        if self.detail:
            parts.append(self.detail)
        if self.log_age_s is not None and self.state == "running":
            parts.append(f"last output {self.log_age_s:.0f} s ago")
        return ", ".join(parts)


def read_rank(path: Path, rank: int, now: float | None = None) -> RankState:
    """What the ``.err`` log of ``rank`` (and its ``.out``) says about its latest start; lines
    before that start belong to earlier runs of a requeued job."""
    st = RankState(rank=rank)
    text = path.read_text(errors="replace") if path.exists() else ""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if (m := START.search(line)) and int(m.group(1)) == rank]
    if not starts:
        return st
    m = START.search(lines[starts[-1]])
    st.node, st.restart, st.config = m.group(3), int(m.group(4)), m.group(5)
    st.state = "started"
    st.log_age_s = (now if now is not None else time.time()) - path.stat().st_mtime
    for line in lines[starts[-1] :]:
        for pattern in (STEP, SAVED, RESUMED):
            if (s := pattern.search(line)) and int(s.group(1)) == rank:
                st.step = int(s.group(2))
                st.state = "running" if pattern is not SAVED else "checkpointed"
                st.detail = "" if pattern is not SAVED else "stopped by a signal"
        if (f := FAILED.search(line)) and int(f.group(1)) == rank:
            st.state, st.detail = "FAILED", f.group(3)[:200]
    # submitit logs the return to stdout; a job whose rank returned never starts again
    out = path.with_suffix(".out")
    if st.state != "FAILED" and out.exists() and DONE in out.read_text(errors="replace"):
        st.state, st.detail = "done", ""
    return st


def srun_failures(batch_log: Path, restart_line: int | None = None) -> dict[int, tuple[str, str]]:
    """rank -> (node, reason) from srun's ``error: NODE: task N: REASON`` lines of the batch log."""
    if not batch_log.exists():
        return {}
    lines = batch_log.read_text(errors="replace").splitlines()[restart_line or 0 :]
    out = {}
    for line in lines:
        if m := SRUN_FAILED.search(line):
            for task in expand_tasks(m.group(2)):
                out.setdefault(task, (m.group(1), m.group(3).strip()))
    return out


def rank_states(folder: Path, job_id: str, slurm_state: str | None, now: float | None = None) -> list[RankState]:
    """Every rank of the job with a log, its latest (re)start; srun's reports of dead tasks merged in."""
    ranks = sorted(
        {int(t) for p in folder.glob(f"{job_id}_*_log.err") if (t := p.name[len(job_id) + 1 :].split("_")[0]).isdigit()}
    )
    states = [read_rank(folder / f"{job_id}_{r}_log.err", r, now) for r in ranks]
    batch = folder / f"{job_id}_0_log.err"
    first = 0
    if batch.exists():  # srun lines after rank 0's latest start belong to this (re)start
        lines = batch.read_text(errors="replace").splitlines()
        starts = [i for i, line in enumerate(lines) if (m := START.search(line)) and m.group(1) == "0"]
        first = starts[-1] if starts else 0
    dead = srun_failures(batch, first)
    for st in states:
        if st.rank in dead and st.state not in ("done", "checkpointed"):
            node, why = dead[st.rank]
            st.node = node if st.node == "?" else st.node
            st.state, st.detail = "FAILED", f"{why} (srun)" if st.state != "FAILED" else st.detail
            st.failures.append(why)
        if st.state in ("running", "started") and slurm_state not in (None, "RUNNING", "COMPLETING"):
            st.state = "ended"  # the job is over (or requeued) but this rank left no exit record
    return states


def ranks_text(states: list[RankState]) -> list[str]:
    """Per node (in rank order of appearance), each rank's state; then one line per failed rank."""
    if not any(st.state != "no log" for st in states):
        return []
    by_node: dict[str, list[RankState]] = {}
    for st in states:
        by_node.setdefault(st.node, []).append(st)
    restarts = sorted({st.restart for st in states if st.state != "no log"})
    configs = sorted({st.config for st in states if st.config})
    out = [
        f"  ranks (from the task logs; restart {'/'.join(map(str, restarts))}; "
        f"config {', '.join(configs) if configs else '?'}"
        f"{'' if len(configs) <= 1 else ' -- DIFFERENT CONFIGS'}):"
    ]
    for node, group in by_node.items():
        alive = sum(st.state in ("running", "started") for st in group)
        out.append(f"    node {node}: {alive}/{len(group)} running")
        out += [f"      {st.describe()}" for st in group]
    failed = sorted((st for st in states if st.state == "FAILED"), key=_cause_first)
    out += [f"  failure: rank {st.rank} on node {st.node}: {st.detail}" for st in failed]
    return out


_CONSEQUENCE = re.compile(r"Connection (closed|reset) by peer|Read error|Terminated \(srun\)|timed out|Timeout")


def _cause_first(st: RankState) -> tuple[int, int]:
    """Failed ranks, the likely cause first: a rank that died on its own (a kill, a crash) before
    the ranks that failed because it was gone (connection errors, srun's SIGTERM to the rest)."""
    return (1 if _CONSEQUENCE.search(st.detail) else 0, st.rank)


def status_text(job_id: str, lines: int = 20, folder: Path | None = None) -> str:
    state = job_state(job_id)
    rec = jobindex.lookup(job_id)
    if folder is None and state and state.get("StdOut"):
        folder = Path(state["StdOut"]).parent
    if folder is None and rec:
        folder = Path(rec["folder"])
    if state is None and folder is None:
        raise LaunchError(
            f"job {job_id}: SLURM does not know it (finished more than MinJobAge ago?) and "
            f"{jobindex.index_path()} has no record of it; pass --folder DIR (submitit's log folder)"
        )
    out = [f"job {job_id}"]
    if state:
        out.append(
            "  "
            + "  ".join(
                f"{k}={state[k]}"
                for k in ("JobState", "Reason", "Restarts", "RunTime", "TimeLimit", "NodeList", "ExitCode")
                if k in state
            )
        )
    else:
        out.append("  state: unknown to SLURM now (finished long ago, or another cluster)")
    if rec and rec.get("out_dir"):
        out.append(f"  checkpoints: {rec['out_dir']}/checkpoints   metrics: {rec['out_dir']}/metrics.jsonl")
    if folder is not None:
        out += ranks_text(rank_states(folder, job_id, state.get("JobState") if state else None))
        files = log_files(folder, job_id)
        out.append(f"  logs: {folder}/{job_id}_<rank>_log.out|err ({len(files)} files)")
        for path in files:
            text = tail(path, lines)
            if text.strip():
                out += [f"==> {path} <==", text]
    return "\n".join(out)


def cancel(job_id: str, signal: str | None = None) -> str:
    """``scancel JOBID`` (SLURM sends SIGTERM: the ranks checkpoint at the step boundary if they can
    within KillWait, then the job stays cancelled), or with ``signal`` the warning signal to every
    rank (``scancel --signal``): checkpoint, then the job requeues itself."""
    cmd = ["scancel", str(job_id)] if signal is None else ["scancel", f"--signal={signal}", str(job_id)]
    proc = _run(cmd)
    if proc is None:
        raise LaunchError("cannot cancel: scancel is not on PATH (not on a SLURM login node?)")
    if proc.returncode:
        raise LaunchError(f"{' '.join(cmd)} failed: {(proc.stderr or proc.stdout).strip()}")
    if signal is None:
        return f"cancelled job {job_id} (scancel: ranks checkpoint at the next step boundary if they can)"
    return f"sent SIG{signal} to job {job_id}: every rank checkpoints the same step, then the job requeues itself"
