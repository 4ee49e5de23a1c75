"""One scan -> one sample: read, check, canonicalize, encode. The body of a scan task.

Never raises: a failure is a result with ``status="failed"`` and a reason code, so the rest of
the job proceeds. What a usable scan needed to be usable (non-DICOM files skipped in its folder,
non-finite voxels filled on request) goes into its ``notes``, listed in build.json. Error details name the file and the exception *type*, never header values;
the file by its ``image_path`` as written in the scans table, so a record does not depend on
where the cohort folder lies.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import google_crc32c

from tte_scale.formats.shards import STATUS_FAILED, STATUS_OK, header_bytes
from tte_scale.imaging import (
    CANONICAL_ORIENTATION,
    ImagingConfig,
    ScanReadError,
    canonicalize,
    check_scan,
    read_scan,
)
from tte_scale.remote import StorageConfig
from tte_scale.sharding.codec import encode
from tte_scale.sharding.inputs import input_signature
from tte_scale.sharding.plan import PlanItem


def process_scan(
    item: PlanItem,
    imaging: ImagingConfig,
    codec: dict[str, Any],
    keep_volume: bool,
    storage: StorageConfig | None = None,
):
    """Return (meta, encoded volume bytes or None, int16 volume or None). ``storage``: transfers
    of an image_path URL (retries, objects at once)."""
    meta: dict[str, Any] = {
        "row": item.row,
        "scan_id": item.scan_id,
        "status": STATUS_OK,
        "reason": None,
        "detail": None,
    }
    file = item.image_file
    try:
        raw = read_scan(file, item.modality, imaging, storage)
        try:
            raw, filled = check_scan(raw, imaging)
        except ScanReadError as exc:  # the checks see numbers only: name the file here
            raise ScanReadError(exc.reason, f"{file}: {exc.detail}") from None
        vol_DHW, _ = canonicalize(raw, imaging)
    except ScanReadError as exc:
        meta.update(status=STATUS_FAILED, reason=exc.reason, detail=as_written(exc.detail, file, item.image_path))
        # what the input looked like when it failed: a re-run reads it again once it changed
        meta["input"] = input_signature(file, storage)
        return meta, None, None
    except Exception as exc:  # a bug or a broken file type: quarantine this scan only
        meta.update(status=STATUS_FAILED, reason="worker_error", detail=f"{item.image_path}: {type(exc).__name__}")
        meta["input"] = input_signature(file)
        return meta, None, None
    data = encode(vol_DHW, codec)
    meta.update(
        volume_bytes=len(data),
        # of the encoded bytes: the loader checks it before decoding, far cheaper than the sha256
        volume_crc32c=google_crc32c.value(data),
        raw_bytes=int(vol_DHW.nbytes),
        volume_sha256=hashlib.sha256(vol_DHW.tobytes()).hexdigest(),
        shape=list(vol_DHW.shape),
        scanner=raw.scanner,
        input_spacing_mm=[round(s, 4) for s in raw.spacing_mm],
    )
    notes = {}
    if raw.ignored_files:
        where = item.image_path.rstrip("/" + os.sep) or item.image_path
        notes["ignored_files"] = "not DICOM, ignored: " + ", ".join(f"{where}/{name}" for name in raw.ignored_files)
    if filled:
        notes["nonfinite_filled"] = f"{filled} voxel(s) set to {imaging.nonfinite_fill_hu} HU"
    if notes:
        meta["notes"] = notes
    return meta, data, (vol_DHW if keep_volume else None)


def as_written(detail: str, file: Path, image_path: str) -> str:
    """``detail`` with the opened path ``file`` (or a file under it, in a DICOM folder) named by
    the scans table's ``image_path`` instead: the readers only see the absolute path."""
    opened = str(file)
    if detail == opened:
        return image_path
    if detail.startswith((opened + ":", opened + os.sep)):
        # Path() drops a trailing separator from `file`; drop it from image_path too
        return (image_path.rstrip("/" + os.sep) or image_path) + detail[len(opened) :]
    return detail


def header_json(item: PlanItem, meta: dict, imaging: ImagingConfig, codec: dict) -> bytes:
    """The ``KEY.header.json`` member of a read scan: canonical geometry + whitelisted fields."""
    return header_bytes(
        scan_id=item.scan_id,
        subject_id=item.subject_id,
        split=item.split,
        row=item.row,
        shape=meta["shape"],
        spacing_mm=imaging.spacing_mm,
        orientation=CANONICAL_ORIENTATION,
        codec=codec,
        scanner=meta.get("scanner") or {},
    )
