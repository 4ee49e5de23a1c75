"""A small record of submitted jobs, so `tte-scale launch status JOBID` finds their logs later.

SLURM forgets a finished job after ``MinJobAge`` (5 minutes by default) and accounting is
not always there, so each submission appends one JSON line to
``$TTE_SCALE_JOB_INDEX`` (default ``~/.cache/tte-scale/slurm_jobs.jsonl``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def index_path() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tte-scale" / "slurm_jobs.jsonl"
    return Path(os.environ.get("TTE_SCALE_JOB_INDEX", default))


def record(job_id: str, folder: Path, out_dir: Path | None, kind: str) -> None:
    path = index_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    rec = {
        "job_id": str(job_id),
        "folder": str(Path(folder).resolve()),
        "kind": kind,
        "out_dir": str(Path(out_dir).resolve()) if out_dir is not None else None,
        "submitted": time.time(),
    }
    with open(path, "a") as fh:
        fh.write(json.dumps(rec) + "\n")


def lookup(job_id: str) -> dict | None:
    """The newest record for ``job_id`` (an id can repeat after a cluster's counter resets)."""
    path = index_path()
    if not path.exists():
        return None
    found = None
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a full disk must not hide the others
        if rec.get("job_id") == str(job_id):
            found = rec
    return found
