"""Resume state: one small JSON record per completed shard, written by the driver only.

A shard is complete when its record exists and its file has the recorded size and sha256
(checked by :mod:`sharding.resume` before a re-run keeps it). The record is
written after the shard file was renamed into place, so a kill between the two only makes the
next run redo that shard (the rewrite is byte-identical). Leftover temporary files of killed
writers are removed at the start of a run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tte_scale.sharding.writers import TMP_MARK, tmp_name

STATE_DIR = "_state"


def record_path(out: Path, kind: str, shard: int) -> Path:
    return out / STATE_DIR / f"{kind}-{shard:06d}.json"


def write_json_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    tmp.write_text(json.dumps(obj, sort_keys=True, indent=1))
    os.replace(tmp, path)


def read_record(out: Path, kind: str, shard: int) -> dict | None:
    """The shard's record as written (None when absent or unreadable); nothing checked."""
    path = record_path(out, kind, shard)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def load_record(out: Path, kind: str, shard: int) -> dict | None:
    """The shard's record if its file has the recorded size, else None (a resumed build checks the
    sha256 as well before it keeps a shard: :mod:`sharding.resume`)."""
    rec = read_record(out, kind, shard)
    if rec is None:
        return None
    if rec.get("path") is not None:
        f = out / rec["path"]
        if not f.is_file() or f.stat().st_size != rec["bytes"]:
            return None
    return rec


def clean_partials(out: Path) -> int:
    """Remove temporary files left by killed writers (ours and zarr's `.partial`)."""
    n = 0
    for p in out.rglob("*"):
        if p.is_file() and (TMP_MARK in p.name or p.name.endswith(".partial")):
            p.unlink()
            n += 1
    return n
