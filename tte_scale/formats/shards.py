"""The shards folder of `tte-scale shard` (docs/formats.md "Shards folder"), defined once.

Writers (:mod:`tte_scale.sharding`, the test writer ``tests/support/shards.py``) and readers
(:mod:`tte_scale.data`, the eval stage) import these names instead of spelling a key, a member
order, a dtype or a column again: a rule written twice drifts, and a reader that disagrees with
its writer by one dtype reads every sample as corrupt (or worse, as something else).

Legend: D, H, W volume axes; K TTE tasks; T benchmark tasks.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "FORMAT_VERSION",
    "WDS_DIR",
    "WDS_LABELS_DIR",
    "ZARR_DIR",
    "MANIFEST_DIR",
    "wds_shard_name",
    "sample_key",
    "HEADER_MEMBER",
    "VOLUME_MEMBER",
    "LABEL_DTYPES",
    "LABEL_KEYS",
    "LABEL_MEMBERS",
    "BENCH_LABEL_NULL",
    "header_bytes",
    "label_member_bytes",
    "labels_sha256",
    "ZARR_VOLUMES",
    "ZARR_LABEL_GROUPS",
    "ZARR_LABEL_ARRAYS",
    "ZARR_LABEL_FILL",
    "VOLUME_FILL",
    "VOLUME_DIMENSION_NAMES",
    "volume_chunks",
    "SHARD_FORMATS",
    "STATUS_OK",
    "STATUS_FAILED",
    "WDS_LABELS_INLINE",
    "WDS_LABELS_SIDECAR",
    "SAMPLE_COLUMNS",
    "SHARD_COLUMNS",
    "samples_schema",
    "shards_schema",
]

FORMAT_VERSION = 1
"""`build.json` ``format_version`` and the Zarr group attribute of the same name."""

# -- folders and file names ---------------------------------------------------------------------
WDS_DIR = "wds"
"""WebDataset volume shards: ``wds/shard-000000.tar`` ..."""
WDS_LABELS_DIR = "wds-labels"
"""Sidecar label shards written by ``--relabel`` (same numbers as the volume shards)."""
ZARR_DIR = "zarr"
"""The Zarr v3 group."""
MANIFEST_DIR = "manifest"
"""``samples.parquet``, ``shards.parquet``, ``build.json``."""


def wds_shard_name(shard: int) -> str:
    """File name of WebDataset shard number ``shard`` (in ``wds/`` and ``wds-labels/``)."""
    return f"shard-{shard:06d}.tar"


# -- WebDataset samples -------------------------------------------------------------------------
def sample_key(scan_id: str) -> str:
    """The WebDataset sample key of a scan id.

    WebDataset splits a member name at the first dot into key and suffix, and a ``/`` would make a
    folder inside the tar, so ``%``, ``.`` and ``/`` are percent-encoded (``%`` first, so the
    encoding is reversible).
    """
    return scan_id.replace("%", "%25").replace(".", "%2E").replace("/", "%2F")


HEADER_MEMBER = "header.json"
VOLUME_MEMBER = "volume.bin"

LABEL_DTYPES: dict[str, np.dtype] = {
    "tte_time": np.dtype(np.float32),  # [K] days to the event or to censoring
    "tte_event": np.dtype(np.bool_),  # [K]
    "bench_label": np.dtype(np.int8),  # [T] 1 / 0, BENCH_LABEL_NULL when censored or excluded
    "bench_time": np.dtype(np.float32),  # [T]
    "bench_event": np.dtype(np.bool_),  # [T]
}
"""The label arrays of a sample in their member order (``labels_sha256`` hashes them in this order)."""
LABEL_KEYS: tuple[str, ...] = tuple(LABEL_DTYPES)
LABEL_MEMBERS: tuple[str, ...] = tuple(f"{k}.npy" for k in LABEL_KEYS)
"""Member suffixes of the label arrays (``KEY.tte_time.npy`` ...), in order."""
BENCH_LABEL_NULL = -1


def header_bytes(
    *,
    scan_id: str,
    subject_id: int,
    split: str,
    row: int,
    shape: Sequence[int],
    spacing_mm: Sequence[float],
    orientation: str,
    codec: Mapping[str, Any],
    scanner: Mapping[str, Any],
) -> bytes:
    """The ``KEY.header.json`` member: canonical geometry, codec and whitelisted scanner fields.

    Compact JSON in this key order, so equal samples give equal bytes.
    """
    header = {
        "scan_id": scan_id,
        "subject_id": int(subject_id),
        "split": split,
        "row": int(row),
        "shape": [int(v) for v in shape],
        "spacing_mm": [float(v) for v in spacing_mm],
        "orientation": orientation,
        "dtype": "int16",
        "codec": dict(codec),
        "scanner": dict(scanner),
    }
    return json.dumps(header, sort_keys=False, separators=(",", ":")).encode()


def label_member_bytes(labels: Mapping[str, np.ndarray]) -> dict[str, bytes]:
    """``{member suffix: np.save bytes}`` of one sample's label arrays, in member order."""
    out = {}
    for key, member in zip(LABEL_KEYS, LABEL_MEMBERS):
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(labels[key], dtype=LABEL_DTYPES[key]), allow_pickle=False)
        out[member] = buf.getvalue()
    return out


def labels_sha256(member_bytes: Iterable[bytes]) -> str:
    """The manifest's ``labels_sha256``: sha256 over the label members' bytes in member order."""
    h = hashlib.sha256()
    for data in member_bytes:
        h.update(data)
    return h.hexdigest()


# -- Zarr group ---------------------------------------------------------------------------------
ZARR_VOLUMES = "volumes"
"""int16 [N, D, H, W]; row r = labels row r."""
ZARR_LABEL_GROUPS = ("tte", "bench")
"""Subgroups holding the label arrays (a relabel swaps them whole, `volumes` untouched)."""
ZARR_LABEL_ARRAYS: dict[str, str] = {
    "tte_time": "tte/time",
    "tte_event": "tte/event",
    "bench_label": "bench/label",
    "bench_time": "bench/time",
    "bench_event": "bench/event",
}
"""Label key -> array path in the group; dtypes as :data:`LABEL_DTYPES`, rows aligned with `volumes`."""
ZARR_LABEL_FILL: dict[str, Any] = {
    "tte_time": np.float32("nan"),
    "tte_event": False,
    "bench_label": BENCH_LABEL_NULL,
    "bench_time": np.float32("nan"),
    "bench_event": False,
}
VOLUME_FILL = 0
"""Fill value of `volumes`: a failed row (and a missing shard file) reads as all zeros."""
VOLUME_DIMENSION_NAMES = ("row", "d", "h", "w")


def volume_chunks(shape: Sequence[int]) -> tuple[int, int, int, int]:
    """Inner chunk of `volumes`: one whole volume (inside a sharding codec, crc32c last)."""
    return (1, *(int(v) for v in shape))


# -- manifest -----------------------------------------------------------------------------------
SHARD_FORMATS = (WDS_DIR, WDS_LABELS_DIR, ZARR_DIR)
"""Values of the ``format`` column of ``shards.parquet``: the folder its file lies in."""
STATUS_OK = "ok"
STATUS_FAILED = "failed"
WDS_LABELS_INLINE = "inline"
WDS_LABELS_SIDECAR = "sidecar"
"""`build.json` ``wds_labels``: labels inside the volume shards, or in ``wds-labels/`` sidecars."""

_SAMPLES = (
    ("row", "int64"),
    ("scan_id", "string"),
    ("subject_id", "int64"),
    ("split", "string"),
    ("status", "string"),
    ("reason", "string"),
    ("wds_shard", "int32"),
    ("wds_index", "int32"),
    ("volume_bytes", "int64"),
    ("volume_crc32c", "int64"),
    ("volume_sha256", "string"),
    ("labels_sha256", "string"),
    ("shape", "list<int32>"),
)
_SHARDS = (
    ("format", "string"),
    ("shard", "int32"),
    ("path", "string"),
    ("split", "string"),
    ("samples", "int64"),
    ("bytes", "int64"),
    ("sha256", "string"),
)
SAMPLE_COLUMNS: tuple[str, ...] = tuple(name for name, _ in _SAMPLES)
"""Columns of ``manifest/samples.parquet``, in order."""
SHARD_COLUMNS: tuple[str, ...] = tuple(name for name, _ in _SHARDS)
"""Columns of ``manifest/shards.parquet``, in order."""


def _schema(columns):
    import pyarrow as pa

    types = {"int64": pa.int64(), "int32": pa.int32(), "string": pa.string(), "list<int32>": pa.list_(pa.int32())}
    return pa.schema([(name, types[t]) for name, t in columns])


def samples_schema():
    """pyarrow schema of ``manifest/samples.parquet``."""
    return _schema(_SAMPLES)


def shards_schema():
    """pyarrow schema of ``manifest/shards.parquet``."""
    return _schema(_SHARDS)
