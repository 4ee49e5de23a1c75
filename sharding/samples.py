"""One scan -> one sample: read, canonicalize, encode. The body of a scan task.

Never raises: a failure is a result with ``status="failed"`` and a reason code, so the rest of
the job proceeds. Error details name the file and the exception *type*, never header values;
the file by its ``image_path`` as written in the scans table, so a record does not depend on
where the cohort folder lies.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np

from sharding.codec import encode
from sharding.plan import PlanItem
from tte_scale.imaging import CANONICAL_ORIENTATION, ImagingConfig, ScanReadError, canonicalize, read_scan


def process_scan(item: PlanItem, imaging: ImagingConfig, codec: dict[str, Any], keep_volume: bool):
    """Return (meta, encoded volume bytes or None, int16 volume or None)."""
    meta: dict[str, Any] = {"row": item.row, "scan_id": item.scan_id, "status": "ok", "reason": None, "detail": None}
    file = item.image_file
    try:
        raw = read_scan(file, item.modality, imaging)
        vol_DHW, _ = canonicalize(raw, imaging)
    except ScanReadError as exc:
        meta.update(status="failed", reason=exc.reason, detail=as_written(exc.detail, file, item.image_path))
        return meta, None, None
    except Exception as exc:  # a bug or a broken file type: quarantine this scan only
        meta.update(status="failed", reason="worker_error", detail=f"{item.image_path}: {type(exc).__name__}")
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
    return meta, data, (vol_DHW if keep_volume else None)


def as_written(detail: str, file: Path, image_path: str) -> str:
    """``detail`` with the opened path ``file`` (or a file under it, in a DICOM folder) named by
    the scans table's ``image_path`` instead: the readers only see the absolute path."""
    opened = str(file)
    if detail == opened:
        return image_path
    if detail.startswith((opened + ":", opened + os.sep)):
        # Path() drops a trailing separator from `file`; drop it from image_path too
        return (image_path.rstrip("/" + os.sep) or image_path) + detail[len(opened):]
    return detail


def header_json(item: PlanItem, meta: dict, imaging: ImagingConfig, codec: dict) -> bytes:
    """The ``KEY.header.json`` member (docs/formats.md): canonical geometry + whitelisted fields."""
    header = {
        "scan_id": item.scan_id,
        "subject_id": int(item.subject_id),
        "split": item.split,
        "row": int(item.row),
        "shape": [int(v) for v in meta["shape"]],
        "spacing_mm": [float(v) for v in imaging.spacing_mm],
        "orientation": CANONICAL_ORIENTATION,
        "dtype": "int16",
        "codec": dict(codec),
        "scanner": meta.get("scanner") or {},
    }
    return json.dumps(header, sort_keys=False, separators=(",", ":")).encode()


def volume_of(data: bytes, codec: dict, shape) -> np.ndarray:
    from sharding.codec import decode

    return decode(data, codec, tuple(shape))
