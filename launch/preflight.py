"""Checks `tte-scale launch slurm` runs before sbatch: what would otherwise fail hours later in the queue.

Each check returns problems as one line each, naming the option or config key and what to do.
Two groups, because ``--dry-run`` is also used on a laptop to look at a job meant for a cluster:

* :func:`config_problems` needs nothing but the config and the job's shape: the encoder name
  (the registry's names only: a ``--set model.name=...`` with anything else never reaches the
  job), the global batch split over ranks x accumulation, the model's memory estimate against
  ``--gpu-mem``, and the time limit against one checkpoint interval plus the signal delay.
  They refuse the dry run too.
* :func:`submission_problems` reads the shards and labels folders (which the job will read from
  the same shared filesystem: both set, each a complete build) and the run folder (a checkpoint
  there needs ``--resume``, ``--resume`` needs one). A dry run lists them; a submission is refused.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from tte_scale.config import ConfigError
from tte_scale.errors import InputError
from tte_scale.launch.slurm import LaunchError, SlurmConfig

__all__ = ["PreflightError", "config_problems", "data_problems", "submission_problems", "recent_step_seconds"]


class PreflightError(LaunchError):
    """The job would fail in the queue; one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def config_problems(
    cfg, sc: SlurmConfig, *, gpu_mem_gib: float | None = None, step_time_s: float | None = None
) -> list[str]:
    """Problems of the frozen config for this job's shape (``cfg.cluster`` already frozen)."""
    from tte_scale.train import resolve_batch
    from tte_scale.train.parts import check_model_config

    problems = []
    model_ok = True
    try:
        check_model_config(cfg)
    except ConfigError as exc:
        problems.append(str(exc))
        model_ok = False
    try:
        resolve_batch(cfg, sc.world_size)
    except ConfigError as exc:
        problems.append(f"{exc} ({sc.nodes} node(s) x {sc.ntasks_per_node} task(s))")
    if gpu_mem_gib is not None:
        if sc.gpus_per_node == 0:
            problems.append("--gpu-mem: the job has no GPUs (--gpus-per-node 0)")
        elif model_ok:
            problems += _memory_problems(cfg, gpu_mem_gib)
    if step_time_s is not None:
        problems += _time_problems(cfg, sc, step_time_s)
    return problems


def _memory_problems(cfg, gpu_mem_gib: float) -> list[str]:
    from tte_scale.train import estimate_memory

    try:
        est = estimate_memory(cfg)
    except (InputError, OSError):
        # No labels folder here (a dry run on a laptop, or one that data_problems names): K from
        # head.num_tasks and the default bins, as `--estimate-memory` without data.labels_dir.
        est = estimate_memory(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, labels_dir=None)))
    need = est["per_device_gib"]
    if need <= gpu_mem_gib:
        return []
    fix = "add nodes or offload (zero.offload_*)" if est["zero_stage"] == 3 else "raise zero.stage or add nodes"
    return [
        f"--gpu-mem {gpu_mem_gib:g}: model {est['model']} needs {need:.1f} GiB of model states per GPU "
        f"(ZeRO-{est['zero_stage']} over {est['nodes']} x {est['gpus_per_node']} GPUs, before activations; "
        f"`tte-scale train --estimate-memory`): {fix}"
    ]


def _time_problems(cfg, sc: SlurmConfig, step_time_s: float) -> list[str]:
    every = cfg.checkpoint.every_steps
    if every == 0:  # checkpoints only at the end and on the warning signal: no interval to fit
        return []
    interval_s = every * step_time_s
    need_s = interval_s + sc.signal_delay_s
    if sc.time_min * 60 >= need_s:
        return []
    return [
        f"--time {sc.time_min} min is shorter than one checkpoint interval (checkpoint.every_steps={every} "
        f"x {step_time_s:.3g} s/step = {interval_s / 60:.1f} min) plus --signal-delay-s {sc.signal_delay_s}: "
        f"give at least {math.ceil(need_s / 60)} min or checkpoint more often"
    ]


def recent_step_seconds(out_dir: Path, last: int = 50) -> float | None:
    """Median ``step_s`` of the last train records of a run's metrics.jsonl (None without any)."""
    path = Path(out_dir) / "metrics.jsonl"
    if not path.is_file():
        return None
    times = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        if rec.get("kind") == "train" and isinstance(rec.get("step_s"), int | float) and rec["step_s"] > 0:
            times.append(float(rec["step_s"]))
    times = sorted(times[-last:])
    return times[len(times) // 2] if times else None


def submission_problems(cfg, *, resume: bool) -> list[str]:
    """What refuses a submission but not a dry run: the data folders, and the run folder's state
    (a checkpoint there needs --resume; --resume needs one)."""
    from tte_scale.train.checkpoint import CheckpointManager

    problems = data_problems(cfg)
    found = CheckpointManager(cfg.out_dir / "checkpoints", cfg.checkpoint.keep_last).newest_complete()
    if found is not None and not resume:
        problems.append(
            f"{cfg.out_dir} already holds a checkpoint (step {found.step}); pass --resume to continue "
            "that run, or choose another out_dir"
        )
    if found is None and resume:
        problems.append(f"--resume: {cfg.out_dir}/checkpoints holds no complete checkpoint")
    return problems


def data_problems(cfg) -> list[str]:
    """Problems of ``data.shards_dir`` / ``data.labels_dir`` as the job would read them."""
    d = cfg.data
    problems = []
    for key, value in (("data.shards_dir", d.shards_dir), ("data.labels_dir", d.labels_dir)):
        if value is None:
            problems.append(f"{key}: not set (--set {key}=FOLDER); the job would stop at start")
    remote = d.shards_dir is not None and "://" in str(d.shards_dir)
    if d.shards_dir is not None and not remote:
        problems += _shards_problems(Path(d.shards_dir), d.train_split, d.format)
    if d.labels_dir is not None:
        problems += _labels_problems(Path(d.labels_dir), cfg.objective)
    if d.shards_dir is not None and d.labels_dir is not None and not problems:
        problems += _belong_together(d.shards_dir, d.labels_dir, d.format)
    return problems


def _belong_together(shards_dir, labels_dir, fmt: str) -> list[str]:
    """The trainer's own check (tte_scale.data.build_info): the format was built, the labels have
    the shards' K and are the very labels folder the shards were built from (fingerprint)."""
    from tte_scale.data.build_info import check_run_inputs

    try:
        check_run_inputs(shards_dir, labels_dir, fmt)
    except InputError as exc:
        return [f"data.labels_dir: {exc}"]
    return []


def _shards_problems(root: Path, split: str, fmt: str) -> list[str]:
    import pyarrow.parquet as pq

    from tte_scale.data.split_index import read_split_index

    if not root.is_dir():
        return [f"data.shards_dir: {root} is not a folder"]
    try:
        read_split_index(str(root), split, fmt)  # the loader's own reading: tables, split, format
    except InputError as exc:
        return [f"data.shards_dir: {exc}"]
    table = pq.read_table(root / "manifest" / "shards.parquet").to_pylist()
    for rec in table:
        path = root / rec["path"]
        if not path.exists():
            return [f"data.shards_dir: {path} is listed in manifest/shards.parquet but missing (incomplete build?)"]
        if path.is_file() and rec.get("bytes") and path.stat().st_size != rec["bytes"]:
            return [
                f"data.shards_dir: {path} has {path.stat().st_size} bytes, manifest/shards.parquet says "
                f"{rec['bytes']} (a build still running, or a damaged copy)"
            ]
    if fmt == "zarr" and not (root / "zarr" / "zarr.json").is_file():
        return [f"data.shards_dir: {root / 'zarr'} holds no Zarr store (data.format=zarr; was it built with wds only?)"]
    return []


def _labels_problems(root: Path, objective: str) -> list[str]:
    import pyarrow.parquet as pq
    import zarr

    from tte_scale.train.parts import read_bins

    if not root.is_dir():
        return [f"data.labels_dir: {root} is not a folder"]
    try:
        read_bins(root)
    except InputError as exc:
        return [f"data.labels_dir: {exc}"]
    need = ["rows.parquet", "tte.zarr"] + (["bench.parquet"] if objective == "supervised" else [])
    missing = [n for n in need if not (root / n).exists()]
    if missing:
        return [f"data.labels_dir: {root} has no {', '.join(missing)} (incomplete `tte-scale labels` output?)"]
    try:
        rows = pq.read_metadata(root / "rows.parquet").num_rows
        group = zarr.open_group(str(root / "tte.zarr"), mode="r")
        shapes = {name: group[name].shape for name in ("time", "event")}
    except Exception as exc:  # unreadable parquet footer, missing array: name the folder and why
        return [f"data.labels_dir: {root} cannot be read ({type(exc).__name__}: {exc})"]
    bad = {n: s for n, s in shapes.items() if len(s) != 2 or s[0] != rows}
    if bad:
        return [f"data.labels_dir: {root}/tte.zarr arrays {bad} do not have one row per rows.parquet row ({rows})"]
    return []
