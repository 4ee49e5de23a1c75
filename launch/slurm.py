"""Submit training to SLURM through submitit: one task per GPU, checkpointable, requeued on preemption.

Layout of a submission (``<folder>`` defaults to ``<out_dir>/slurm``)::

    <folder>/<jobid>_submission.sh       the sbatch script (also printed by --dry-run)
    <folder>/<jobid>_submitted.pkl       the pickled TrainJob (config frozen at submission)
    <folder>/<jobid>_<task>_log.out/.err one pair per task (rank); appended across requeues
    <folder>/<jobid>_<task>_result.pkl   written when a task finishes
    <out_dir>/checkpoints/, metrics.jsonl  as for `tte-scale train`

One task per GPU (not one per node plus a local launcher): SLURM then owns every process,
so its signals reach every rank directly and ``srun`` reports a rank's failure; rank and
world size come from ``SLURM_PROCID``/``SLURM_NTASKS`` (``launch.rendezvous``).
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tte_scale.config import check
from tte_scale.errors import TteScaleError
from tte_scale.launch.rendezvous import PORT_BASE, PORT_SPAN


class LaunchError(TteScaleError):
    """The launch cannot go ahead (bad options, SLURM unavailable, submission refused)."""


@dataclass(kw_only=True, slots=True)
class SlurmConfig:
    nodes: int = 1
    """Nodes to allocate."""
    gpus_per_node: int = 1
    """GPUs per node; 0 for a CPU-only job (then give tasks_per_node)."""
    tasks_per_node: int | None = None
    """Ranks per node; defaults to gpus_per_node (one task per GPU)."""
    cpus_per_task: int | None = None
    """CPU cores per rank (DataLoader workers + 1 is a good start)."""
    mem: str | None = None
    """Memory per node, sbatch syntax (e.g. 480G); None = the partition's default."""
    time_min: int = 60
    """Wall-clock limit in minutes (parsed from --time)."""
    partition: str | None = None
    """sbatch --partition."""
    account: str | None = None
    """sbatch --account."""
    qos: str | None = None
    """sbatch --qos."""
    constraint: str | None = None
    """sbatch --constraint (node features)."""
    exclusive: bool = False
    """Whole nodes only."""
    job_name: str = "tte-pretrain"
    """sbatch --job-name."""
    signal: str = "USR1"
    """Warning signal SLURM sends before the time limit (and that preemption tooling should send)."""
    signal_delay_s: int = 120
    """How long before the limit it comes: enough for one step plus a checkpoint write."""
    max_requeues: int = 20
    """Requeues allowed before the job stops requeueing itself."""
    setup: list[str] = field(default_factory=list)
    """Extra shell lines in the sbatch script before srun (module load, conda activate)."""
    env: dict[str, str] = field(default_factory=dict)
    """Variables exported in the sbatch script (inherited by every task)."""
    folder: Path | None = None
    """Where submitit writes scripts and logs; default <out_dir>/slurm. Must be on a shared filesystem."""

    def __post_init__(self) -> None:
        check(self.nodes >= 1, "nodes", "must be >= 1")
        check(self.gpus_per_node >= 0, "gpus_per_node", "must be >= 0")
        check(
            self.gpus_per_node > 0 or self.tasks_per_node is not None,
            "tasks_per_node",
            "must be given for a CPU-only job (gpus_per_node=0)",
        )
        check(self.tasks_per_node is None or self.tasks_per_node >= 1, "tasks_per_node", "must be >= 1")
        check(self.time_min >= 1, "time", "must be at least one minute")
        check(self.signal_delay_s >= 10, "signal_delay_s", "must be >= 10 s (one step plus a checkpoint)")
        check(
            self.signal_delay_s < self.time_min * 60,
            "signal_delay_s",
            f"{self.signal_delay_s} s is not shorter than the time limit ({self.time_min} min)",
        )
        check(self.signal in ("USR1", "USR2", "TERM"), "signal", f"{self.signal!r} is not one of USR1, USR2, TERM")
        check(self.max_requeues >= 0, "max_requeues", "must be >= 0")

    @property
    def ntasks_per_node(self) -> int:
        return self.tasks_per_node if self.tasks_per_node is not None else self.gpus_per_node

    @property
    def world_size(self) -> int:
        return self.nodes * self.ntasks_per_node


def freeze_cluster(cfg, sc: SlurmConfig) -> None:
    """Make ``cfg.cluster`` describe the job that runs, not the YAML's intended shape.

    The frozen config travels with the job (and into every checkpoint), and ``--estimate-memory``
    reads the shape from it: ``cluster.gpus_per_node`` is the devices (ranks) per node, one rank
    per GPU, or per task on a CPU-only job.
    """
    import dataclasses

    cfg.cluster = dataclasses.replace(cfg.cluster, nodes=sc.nodes, gpus_per_node=sc.ntasks_per_node)


def parse_time(text: str) -> int:
    """sbatch time syntax -> whole minutes: ``90``, ``1:30:00``, ``2-00:00:00``, ``2-12``, ``45:00`` (MM:SS)."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if m is None:
        raise LaunchError(f"--time {text!r}: expected MINUTES, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS")
    days, a, b, c = m.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        minutes = int(days) * 1440 + int(a) * 60 + int(b or 0) + (int(c or 0) + 59) // 60
    elif c is not None:  # HH:MM:SS
        minutes = int(a) * 60 + int(b) + (int(c) + 59) // 60
    elif b is not None:  # MM:SS
        minutes = int(a) + (int(b) + 59) // 60
    else:
        minutes = int(a)
    if minutes < 1:
        raise LaunchError(f"--time {text!r}: must be at least one minute")
    return minutes


def sbatch_parameters(sc: SlurmConfig, python: str) -> dict[str, Any]:
    """submitit SlurmExecutor parameters (native sbatch names) for this job."""
    params: dict[str, Any] = {
        "job_name": sc.job_name,
        "nodes": sc.nodes,
        "ntasks_per_node": sc.ntasks_per_node,
        "time": sc.time_min,
        "signal_delay_s": sc.signal_delay_s,
        # submitit writes --signal with its own default signal; ours replaces it.
        "additional_parameters": {"signal": f"{sc.signal}@{sc.signal_delay_s}"},
        "setup": _setup_lines(sc, python),
        "stderr_to_stdout": False,
        # One rank that dies (a crash, an OOM kill, a lost node) ends the whole step at once: the
        # others would otherwise wait in their next collective until its timeout.
        "srun_args": ["--kill-on-bad-exit=1"],
    }
    if sc.gpus_per_node:
        params["gpus_per_node"] = sc.gpus_per_node
    for key in ("cpus_per_task", "mem", "partition", "account", "qos", "constraint"):
        if getattr(sc, key) is not None:
            params[key] = getattr(sc, key)
    if sc.exclusive:
        params["exclusive"] = True
    return params


def _setup_lines(sc: SlurmConfig, python: str) -> list[str]:
    env = {
        # submitit's own handler (active until the trainer installs its flag) listens to the same signal.
        "SUBMITIT_PREEMPT_SIGNAL": sc.signal,
        # Threads per rank: one per allotted core, not one per core of the node.
        "OMP_NUM_THREADS": str(sc.cpus_per_task or 1),
        "PYTHONUNBUFFERED": "1",
        **sc.env,
    }
    lines = list(sc.setup)
    lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    return lines


def task_environment(sc: SlurmConfig) -> list[tuple[str, str]]:
    """What each task sees besides the sbatch exports: (variable, value or where it comes from)."""
    return [
        ("RANK", "$SLURM_PROCID"),
        ("WORLD_SIZE", f"$SLURM_NTASKS (= {sc.nodes} nodes x {sc.ntasks_per_node} tasks = {sc.world_size})"),
        ("LOCAL_RANK", "$SLURM_LOCALID (also the CUDA device index)"),
        ("LOCAL_WORLD_SIZE", str(sc.ntasks_per_node)),
        ("MASTER_ADDR", "first host of $SLURM_JOB_NODELIST"),
        ("MASTER_PORT", f"{PORT_BASE} + (job id * 7919 + restart count * 31) mod {PORT_SPAN}"),
        ("backend", "nccl on GPUs, gloo on CPU"),
        ("resume", "automatic: the newest complete checkpoint under <out_dir>/checkpoints, if any"),
    ]


def submitit_command(python: str, folder: Path) -> str:
    """The command submitit puts after ``srun`` (the same string as ``SlurmExecutor`` builds)."""
    return " ".join([python, "-u -m submitit.core._submit", shlex.quote(str(folder))])


def render_script(params: dict[str, Any], folder: Path, python: str | None = None) -> str:
    """The sbatch script submitit writes for these executor parameters, without SLURM on this machine.

    submitit (1.5.4) has no public renderer: ``SlurmExecutor`` needs ``srun`` on PATH and writes
    its script only while submitting, through the module function called here. The real-cluster
    tests compare this text with the script submitit wrote for a submitted job, so a submitit
    release that changes the script fails them instead of making --dry-run print a stale one.
    """
    from submitit.slurm.slurm import _make_sbatch_string

    python = python or shlex.quote(sys.executable)
    return _make_sbatch_string(command=submitit_command(python, folder), folder=folder, **params)


def render_sbatch(sc: SlurmConfig, folder: Path, python: str | None = None) -> str:
    """The training job's sbatch script (``--dry-run``)."""
    python = python or shlex.quote(sys.executable)
    return render_script(sbatch_parameters(sc, python), folder, python)


def dry_run_text(
    sc: SlurmConfig,
    cfg,
    folder: Path,
    python: str | None = None,
    checks: list[str] | None = None,
    step_time_s: float | None = None,
    gpu_mem_gib: float | None = None,
) -> str:
    """What --dry-run prints: the script, the per-task environment, where things go, the checks a
    submission would run (``checks``: the problems that would refuse it), and the frozen config."""
    from tte_scale.config import to_dict

    width = max(len(k) for k, _ in task_environment(sc))
    env_lines = [f"  {k:<{width}}  {v}" for k, v in task_environment(sc)]
    skipped = []
    if gpu_mem_gib is None:
        skipped.append("model memory (give --gpu-mem)")
    if step_time_s is None:
        skipped.append("time limit vs checkpoint interval (give --step-time-s)")
    check_lines = [f"  would refuse: {c}" for c in checks or []] or ["  all passed"]
    if skipped:
        check_lines.append(f"  not checked: {'; '.join(skipped)}")
    return "\n".join(
        [
            f"# sbatch script ({folder}/<jobid>_submission.sh)",
            render_sbatch(sc, folder, python).rstrip(),
            "",
            "# environment of every task (set by launch.rendezvous before training)",
            *env_lines,
            "",
            "# where things go",
            f"  logs         {folder}/<jobid>_<rank>_log.out, <jobid>_<rank>_log.err",
            f"  checkpoints  {cfg.out_dir}/checkpoints (latest -> newest complete)",
            f"  metrics      {cfg.out_dir}/metrics.jsonl",
            "",
            "# checks before submission (data folders, model name, batch split, memory, time limit)",
            *check_lines,
            "",
            "# training config (frozen into the job at submission)",
            json.dumps(to_dict(cfg), indent=1, sort_keys=True),
            "",
        ]
    )


def submit(sc: SlurmConfig, cfg, folder: Path):
    """Submit; returns the submitit job. Refuses a config that cannot split over the world size."""
    import submitit

    from tte_scale.config import to_dict
    from tte_scale.launch import jobindex
    from tte_scale.launch.job import TrainJob

    try:
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=sc.max_requeues)
    except RuntimeError as exc:  # no srun on PATH
        raise LaunchError(f"cannot submit to SLURM here: {exc}") from None
    executor.update_parameters(**sbatch_parameters(sc, executor.python))
    job = executor.submit(TrainJob(config=to_dict(cfg), requeue_signal=sc.signal, max_requeues=sc.max_requeues))
    jobindex.record(job.job_id, folder, cfg.out_dir, kind="train")
    return job


def default_folder(out_dir: Path) -> Path:
    return Path(out_dir).resolve() / "slurm"
