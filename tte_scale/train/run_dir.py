"""The run folder (``out_dir``): when a run may start there, what ``--overwrite`` removes, run ids.

A training run owns these entries of its ``out_dir`` and nothing else::

    checkpoints/  metrics.jsonl  tb/  encoder/  .tte_scale_output.json (the owner marker)

Other files there (a launcher's ``slurm/`` logs, the user's notes) are never touched. The owner
marker (``tte_scale.outputs``, command ``train``) is written when a run starts and holds the
run id (new for every new run, kept across resumes), the attempt count (+1 per start) and the
SLURM job id of the attempt.

:func:`plan_start` decides, reading only, on every rank alike:

* ``resume``: continue the run (``checkpoint.resume``); the checkpoint is chosen later.
* ``new``: the folder holds no run (absent, empty, or only files of others).
* ``replace``: it holds a run and ``checkpoint.overwrite`` is set: that run's own entries are
  removed, only when the folder carries the ``train`` marker; or the same SLURM job is starting
  again before its first checkpoint (a requeue), which replaces what its own earlier attempt wrote.

Anything else is refused with one line: a run is never started on top of another one (its
metrics would be appended to, its checkpoints mixed with the new ones).
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from tte_scale.errors import InputError
from tte_scale.outputs import MARKER, check_not_input, mark, read_marker
from tte_scale.train.metrics_log import METRICS_FILE

__all__ = ["RUN_ENTRIES", "RunStart", "existing_run", "plan_start", "start_run"]

log = logging.getLogger(__name__)

COMMAND = "train"
RUN_ENTRIES = ("checkpoints", METRICS_FILE, "tb", "encoder")
"""What a run writes into its out_dir (and all ``--overwrite`` removes)."""


@dataclass(frozen=True, slots=True)
class RunStart:
    """What rank 0 recorded when the run started in its out_dir."""

    run_id: str
    """Identifies the run (kept across resumes); checkpoint markers record it."""
    attempt: int
    """1 for a new run, +1 at every resume or restart; every metrics record carries it."""


def existing_run(out_dir: Path) -> list[str]:
    """The entries of a run found in ``out_dir`` (an empty ``checkpoints/`` does not count)."""
    found = []
    for name in RUN_ENTRIES:
        p = Path(out_dir) / name
        if p.is_file() or (p.is_dir() and any(p.iterdir())):
            found.append(name)
    return found


def _same_slurm_job(owner: dict | None) -> bool:
    job = os.environ.get("SLURM_JOB_ID")
    return bool(job) and owner is not None and owner.get("command") == COMMAND and owner.get("slurm_job_id") == job


def plan_start(out_dir: Path, *, resume: bool, overwrite: bool, has_checkpoint: bool, inputs=()) -> str:
    """``"resume"``, ``"new"`` or ``"replace"`` (see the module doc), or :class:`InputError`.

    ``has_checkpoint``: whether ``out_dir/checkpoints`` holds a complete one (a requeued job that
    has one resumes; only one without one starts again). ``inputs``: the run's input folders,
    which ``out_dir`` must not be or lie in, and ``--overwrite`` must not remove.
    """
    out = Path(out_dir)
    check_not_input(out, inputs, "out_dir", inside_too=True, noun="out_dir")
    owner = read_marker(out)
    if owner is not None and owner.get("command") != COMMAND:
        raise InputError(
            f"out_dir {out}: written by `tte-scale {owner.get('command')}` ({MARKER}); a training run needs "
            "a folder of its own"
        )
    if resume:
        return "resume"
    found = existing_run(out)
    if not found:
        return "new"
    if overwrite or (_same_slurm_job(owner) and not has_checkpoint):
        if owner is None:
            raise InputError(
                f"out_dir {out}: holds {', '.join(found)} but no {MARKER} (a run from before owner markers, "
                "or not a training run); refusing to delete it: remove those entries yourself or choose another out_dir"
            )
        _check_inputs_not_removed(out, inputs)
        return "replace"
    raise InputError(
        f"out_dir {out}: already holds a training run ({', '.join(found)}); pass --resume to continue it, "
        f"--overwrite to replace it (removes only {', '.join(RUN_ENTRIES)}), or choose another out_dir"
    )


def start_run(out_dir: Path, plan: str, run_id: str | None = None) -> RunStart:
    """Rank 0, after every rank agreed on ``plan``: remove a replaced run's entries, then write the
    owner marker. ``run_id``: the run a resume continues (from its checkpoint) when the folder has
    no marker yet (a checkpoint copied into a new folder)."""
    out = Path(out_dir)
    owner = read_marker(out) or {}
    if plan == "replace":
        for name in RUN_ENTRIES:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        log.warning("out_dir %s: removed the earlier run's %s", out, ", ".join(RUN_ENTRIES))
        owner = {}
    if plan == "resume":
        run_id = owner.get("run_id") or run_id or uuid.uuid4().hex[:12]
        attempt = int(owner.get("attempts", 0)) + 1
    else:
        run_id, attempt = uuid.uuid4().hex[:12], 1
    out.mkdir(parents=True, exist_ok=True)
    mark(out, COMMAND, run_id=run_id, attempts=attempt, slurm_job_id=os.environ.get("SLURM_JOB_ID"))
    return RunStart(run_id=run_id, attempt=attempt)


def _check_inputs_not_removed(out: Path, inputs) -> None:
    for given in inputs:
        if given is None or "://" in str(given):
            continue
        p = Path(given).resolve()
        for name in RUN_ENTRIES:
            entry = (out / name).resolve()
            if p == entry or entry in p.parents:
                raise InputError(f"--overwrite: {out / name} holds the input {given}; refusing to delete it")
