"""Checkpoint folders that survive crashes: completion marker, atomic `latest`, keep-last-k.

Layout under ``<out_dir>/checkpoints/``::

    step_00000040/                  one DeepSpeed tag folder per save
        ...DeepSpeed model/optimizer shards...
        trainer_rank00000.pt        per rank: step, loader state, RNG states, counters
        COMPLETE.json               written by rank 0 after a barrier: step, world size,
                                    and the size of every file in the folder
    latest                          name of the newest complete folder (temp file + rename)

DeepSpeed writes its own ``latest`` before every rank has finished and never checks what it
loads. Here a folder counts only when its marker exists and every file it lists still has
its recorded size, so a half-written folder or a truncated shard is skipped and the previous
checkpoint is used. The marker also records the world size: a resume onto another world size
first converts the folder with DeepSpeed's universal-checkpoint tool.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tte_scale.errors import TteScaleError

log = logging.getLogger(__name__)

MARKER = "COMPLETE.json"
LATEST = "latest"
UNIVERSAL_SUFFIX = "_universal"
CHECKPOINT_FORMAT_VERSION = 1
_TAG_RE = re.compile(r"^step_(\d{8})$")


class NoCheckpointError(TteScaleError):
    """Resume was requested but there is no complete checkpoint to resume from."""


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def trainer_state_name(rank: int) -> str:
    return f"trainer_rank{rank:05d}.pt"


@dataclass(frozen=True, slots=True)
class Found:
    """A complete checkpoint: its folder, step and the world size that wrote it."""

    path: Path
    step: int
    world_size: int


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder, fsync, then rename over the target."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _file_sizes(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MARKER
    }


def write_marker(folder: Path, step: int, world_size: int) -> None:
    """Rank 0, after a barrier: record the folder's files so truncation is detectable."""
    marker = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "step": step,
        "world_size": world_size,
        "files": _file_sizes(folder),
    }
    atomic_write_text(folder / MARKER, json.dumps(marker, indent=1))


def check_complete(folder: Path) -> tuple[bool, str, dict]:
    """(ok, reason, marker): the marker exists and every listed file has its recorded size."""
    marker_path = folder / MARKER
    if not marker_path.is_file():
        return False, "no completion marker (save did not finish)", {}
    try:
        marker = json.loads(marker_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return False, f"unreadable marker: {exc}", {}
    if marker.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        return False, f"marker format_version {marker.get('format_version')!r}", marker
    for rel, size in marker.get("files", {}).items():
        p = folder / rel
        if not p.is_file():
            return False, f"missing file {rel}", marker
        if p.stat().st_size != size:
            return False, f"{rel} has {p.stat().st_size} bytes, marker says {size} (truncated?)", marker
    return True, "", marker


class CheckpointManager:
    """Finds, validates, publishes and prunes the checkpoints of one run."""

    def __init__(self, root: Path, keep_last: int) -> None:
        self.root = Path(root)
        self.keep_last = keep_last

    def folder(self, step: int) -> Path:
        return self.root / tag_for(step)

    def candidates(self) -> list[tuple[int, Path]]:
        """Every step folder (complete or not), newest first."""
        if not self.root.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.root.iterdir() if (m := _TAG_RE.match(p.name)) and p.is_dir()]
        return sorted(found, reverse=True)

    def newest_complete(self) -> Found | None:
        """The newest checkpoint that passes :func:`check_complete`; broken ones are logged."""
        for step, path in self.candidates():
            ok, reason, marker = check_complete(path)
            if ok:
                return Found(path, step, int(marker["world_size"]))
            log.warning("checkpoint %s is not usable (%s); falling back to an older one", path, reason)
        return None

    def require_resume_point(self) -> Found:
        found = self.newest_complete()
        if found is None:
            raise NoCheckpointError(
                f"checkpoint.resume is true but {self.root} holds no complete checkpoint; "
                "set checkpoint.resume=false to start a new run"
            )
        return found

    def publish(self, step: int, world_size: int) -> None:
        """Rank 0 after all ranks saved: marker, then `latest`, then prune old folders."""
        folder = self.folder(step)
        write_marker(folder, step, world_size)
        atomic_write_text(self.root / LATEST, folder.name)
        self.prune(keep_from=step)

    def prune(self, keep_from: int) -> None:
        """Keep the newest ``keep_last`` complete folders; drop older ones and stale partials."""
        complete = 0
        for step, path in self.candidates():
            if step > keep_from:
                continue  # written by a later (dead) attempt: leave it, it sorts as incomplete
            ok = check_complete(path)[0]
            complete += ok
            if not ok or complete > self.keep_last:
                shutil.rmtree(path, ignore_errors=True)
                shutil.rmtree(path.with_name(path.name + UNIVERSAL_SUFFIX), ignore_errors=True)


def to_universal(found: Found) -> Path:
    """Convert a checkpoint to DeepSpeed's universal format (once), for another world size.

    Runs ``deepspeed.checkpoint.ds_to_universal`` in a subprocess; the output folder is
    written beside the checkpoint as ``<tag>_universal`` and gets its own marker.
    """
    out = found.path.with_name(found.path.name + UNIVERSAL_SUFFIX)
    if check_complete(out)[0]:
        return out
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal",
        "--input_folder", str(found.path), "--output_folder", str(out),
        "--num_extract_workers", "1", "--num_merge_workers", "1",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise TteScaleError(f"converting {found.path} to a universal checkpoint failed:\n{proc.stderr[-4000:]}")
    # The trainer states are per rank and small: copy them so the universal folder is self-contained.
    for p in found.path.glob("trainer_rank*.pt"):
        shutil.copy2(p, out / p.name)
    write_marker(out, found.step, found.world_size)
    return out
