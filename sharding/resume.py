"""Start or resume a build in ``--out``: whose folder it is, what is kept, what is redone.

The three rules (docs/contributing.md) as they apply to `tte-scale shard`:

- **Never delete what it did not write.** A fresh build marks ``--out`` with the owner marker of
  :mod:`tte_scale.outputs`. ``--overwrite`` deletes only the build's own folders (`wds/`,
  `zarr/`, `manifest/`, ...; other files in ``--out`` stay) and only when the marker says
  `shard` wrote them and ``--out`` holds none of the run's inputs.
- **A re-run checks what it keeps.** A complete shard is kept only if its file still has the
  size *and* sha256 its record holds (the same digest as `shards.parquet`), and the inputs of
  its failed scans have not changed since they failed (:func:`sharding.inputs.input_signature`);
  anything else is redone. Hashing is spread over threads (hashlib releases the GIL).
- The Zarr group's metadata and label arrays, written once by the driver, are kept under the
  same check; if they are damaged, the Zarr store is created again and every Zarr shard redone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tte_scale.errors import InputError
from tte_scale.formats.shards import (
    MANIFEST_DIR,
    STATUS_FAILED,
    WDS_DIR,
    WDS_LABELS_DIR,
    ZARR_DIR,
    ZARR_VOLUMES,
)
from tte_scale.hashing import sha256_file
from tte_scale.outputs import MARKER, check_not_input, mark, read_marker
from tte_scale.sharding.config import ShardConfig, output_config
from tte_scale.sharding.inputs import input_signature
from tte_scale.sharding.plan import Plan
from tte_scale.sharding.state import STATE_DIR, clean_partials, read_record, write_json_atomic

COMMAND = "shard"
OUTPUT_DIRS = (WDS_DIR, WDS_LABELS_DIR, ZARR_DIR, MANIFEST_DIR, STATE_DIR)
"""What a build writes into ``--out`` besides the marker; ``--overwrite`` deletes these only."""
REMOTE_READ_FAILED = "remote_read_failed"
"""The reason of a scan whose object could not be read (access, network): redone by every re-run."""
ZARR_META = "zarr-meta"
"""Record of the Zarr group, `volumes` metadata and label arrays (written by the driver)."""


def fingerprint(cfg: ShardConfig, labels, plan: Plan) -> dict:
    h = hashlib.sha256(json.dumps(output_config(cfg), sort_keys=True).encode())
    h.update(labels.fingerprint.encode())
    # image_path as the scans table writes it: moving the cohort folder must not change the plan
    for it in plan.items:
        h.update(f"{it.row}\0{it.scan_id}\0{it.image_path}\0{it.modality}\n".encode())
    return {"fingerprint": h.hexdigest()}


def prepare_out(out: Path, fp: dict, overwrite: bool, inputs: Callable[[], Iterable]) -> bool:
    """Make ``out`` ready; return True when an earlier build of the same plan is resumed.

    ``inputs`` lists the run's inputs (scans table, labels folder, image files); it is called
    only when something would be deleted.
    """
    plan_file = out / STATE_DIR / "plan.json"
    present = [d for d in OUTPUT_DIRS if (out / d).exists()]
    if overwrite and present:
        check_not_input(out, inputs())
        owner = read_marker(out)
        if owner is None or owner.get("command") != COMMAND:
            who = "no" if owner is None else f"`tte-scale {owner.get('command')}`'s"
            raise InputError(
                f"--out {out}: holds {', '.join(present)} with {who} {MARKER}, not a build marked by `tte-scale "
                f"{COMMAND}`; refusing to delete them (choose another folder, or delete them yourself if they are "
                "an old build)"
            )
        for d in present:
            shutil.rmtree(out / d)
    elif plan_file.is_file():
        if json.loads(plan_file.read_text()) != fp:
            raise InputError(
                f"{out}: holds a build of different scans/labels/config; pass --overwrite to replace it "
                "(or --relabel to attach new labels to the existing volumes)"
            )
        clean_partials(out)
        if read_marker(out) is None:  # a build from before markers: same plan, so this command's
            mark(out, COMMAND)
        return True
    elif present:
        raise InputError(f"{out}: holds shard outputs without a build plan; pass --overwrite to replace them")
    out.mkdir(parents=True, exist_ok=True)
    mark(out, COMMAND)
    write_json_atomic(plan_file, fp)
    return False


def _files_intact(out: Path, files: dict[str, list]) -> bool:
    """``files``: relative path -> [size, sha256]."""
    for rel, (size, digest) in files.items():
        f = out / rel
        if not f.is_file() or f.stat().st_size != size or sha256_file(f) != digest:
            return False
    return True


def zarr_meta_files(out: Path) -> dict[str, list]:
    """Size and sha256 of every file of the Zarr store except the volume shards (written later)."""
    zarr_dir = out / ZARR_DIR
    chunks = zarr_dir / ZARR_VOLUMES / "c"
    return {
        str(p.relative_to(out)): [p.stat().st_size, sha256_file(p)]
        for p in sorted(zarr_dir.rglob("*"))
        if p.is_file() and chunks not in p.parents
    }


def zarr_meta_intact(out: Path) -> bool:
    rec = read_record(out, ZARR_META, 0)
    # records of builds before this check hold no file list: kept as they were
    return rec is not None and _files_intact(out, rec.get("files", {}))


class KeptShards:
    """Which complete shards of an earlier run are kept, after checking each (see module doc)."""

    def __init__(self, out: Path, plan: Plan, kinds: dict[str, int], threads: int) -> None:
        self.out, self.plan = out, plan
        self.changed_rows: set[int] = set()
        self.damaged = 0
        jobs = [(kind, shard) for kind, n in kinds.items() for shard in range(n)]
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            status = list(pool.map(lambda job: self._check(*job), jobs))
        self.todo: dict[str, list[int]] = {kind: [] for kind in kinds}
        for (kind, shard), st in zip(jobs, status):
            if st != "kept":
                self.todo[kind].append(shard)
            self.damaged += st == "damaged"
        self.verified = sum(st == "kept" for st in status)

    def _check(self, kind: str, shard: int) -> str:
        rec = read_record(self.out, kind, shard)
        if rec is None:
            return "missing"
        if rec.get("path") is not None and not _files_intact(self.out, {rec["path"]: [rec["bytes"], rec["sha256"]]}):
            return "damaged"
        changed = [m["row"] for m in rec["rows"] if m["status"] == STATUS_FAILED and self._changed(m)]
        if changed:
            self.changed_rows.update(changed)  # set.update holds the GIL: safe across threads
            return "changed"
        return "kept"

    def _changed(self, meta: dict) -> bool:
        if meta.get("reason") == REMOTE_READ_FAILED:  # storage failed, not the input: always read again
            return True
        if "input" not in meta:  # records of builds before input signatures: nothing to compare
            return False
        return input_signature(self.plan.items[meta["row"]].image_file) != meta["input"]


def verify_threads() -> int:
    """Threads hashing kept shards: one per core, at most 8 (storage is the limit beyond)."""
    return max(1, min(8, os.cpu_count() or 1))
