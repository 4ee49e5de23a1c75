"""Reads a shards folder's manifest (docs/formats.md, "Shards folder") into a split index.

(The manifest's format is :mod:`tte_scale.formats.shards`; :mod:`tte_scale.sharding.manifest`
writes it.)

The split index is the canonical partition every rank and worker agrees on: the split's `ok`
samples sorted by (WebDataset shard, position in shard), one canonical stream per shard.
When the build wrote no WebDataset shards (`wds_shard` null), streams are blocks of
`ZARR_STREAM_ROWS` consecutive rows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from tte_scale.data.storage import exists, join, read_bytes
from tte_scale.errors import InputError
from tte_scale.formats.shards import (
    MANIFEST_DIR,
    STATUS_OK,
    WDS_DIR,
    WDS_LABELS_DIR,
    WDS_LABELS_SIDECAR,
)

__all__ = ["SplitIndex", "read_split_index", "ZARR_STREAM_ROWS"]

ZARR_STREAM_ROWS = 64


@dataclass(slots=True)
class SplitIndex:
    """The split's samples in canonical order (index k = split-local sample id)."""

    root: str
    split: str
    rows: np.ndarray  # int64 [N] Zarr row = labels row
    scan_ids: list[str]  # [N]
    stream: np.ndarray  # int64 [N] canonical stream (= WebDataset shard number)
    shard_index: np.ndarray  # int64 [N] position inside the WebDataset shard
    volume_crc32c: np.ndarray  # int64 [N] CRC-32C of the encoded `volume.bin` bytes; -1 = not in the manifest
    volume_sha256: list[str]  # [N] sha256 of the decoded int16 C-order bytes
    labels_sha256: list[str]  # [N] sha256 of the label members' bytes, in formats.md order
    stream_sizes: np.ndarray  # int64 [S] samples per canonical stream
    stream_ids: np.ndarray  # int64 [S] stream number (shard number) of each stream
    shape: tuple[int, int, int]  # canonical volume shape [D, H, W]
    wds_paths: dict[int, str]  # shard number -> path of its tar
    wds_counts: dict[int, int]  # shard number -> samples the manifest says it holds
    label_paths: dict[int, str] | None  # sidecar label tars when build.json says so
    fingerprint: str  # identifies the canonical partition (guards resume)
    shard_files: dict[str, tuple[int, str]] | None = None  # tar path -> (bytes, sha256) of shards.parquet

    @property
    def num_samples(self) -> int:
        return len(self.rows)


def read_manifest_table(path: str, columns: list[str] | None = None):
    """A manifest table (local or remote), read whole into memory on one thread."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not exists(path):
        raise InputError(f"{path}: manifest table not found (is this a `tte-scale shard` output folder?)")
    # One thread: with arrow's thread pool, a pool thread can drop the last reference to the
    # Python-owned bytes after the call returned, and a process that exits right then (a refused
    # run) aborts in the interpreter's finalization ("terminate called without an active
    # exception", pyarrow 26: 2 of 10 refused runs). The manifest tables are small.
    return pq.read_table(pa.BufferReader(read_bytes(path)), columns=columns, use_threads=False)


def read_split_index(root: str, split: str, fmt: str) -> SplitIndex:
    """Index of `split` in the shards folder `root` (local path or fsspec URL)."""
    samples_path = join(root, MANIFEST_DIR, "samples.parquet")
    samples = read_manifest_table(samples_path).to_pydict()
    shards = read_manifest_table(join(root, MANIFEST_DIR, "shards.parquet")).to_pydict()
    build_path = join(root, MANIFEST_DIR, "build.json")
    build = json.loads(read_bytes(build_path)) if exists(build_path) else {}

    need = ["row", "scan_id", "split", "status", "wds_shard", "wds_index", "volume_sha256", "labels_sha256", "shape"]
    missing = [c for c in need if c not in samples]
    if missing:
        raise InputError(f"{samples_path}: missing columns {missing}")
    keep = [i for i, (sp, st) in enumerate(zip(samples["split"], samples["status"])) if sp == split and st == STATUS_OK]
    if not keep:
        splits = sorted({s for s, st in zip(samples["split"], samples["status"]) if st == STATUS_OK})
        raise InputError(f"{samples_path}: no `ok` samples in split {split!r} (splits present: {splits})")

    rows = np.array([samples["row"][i] for i in keep], dtype=np.int64)
    shard_col = [samples["wds_shard"][i] for i in keep]
    if all(s is None for s in shard_col):
        if fmt == "wds":
            raise InputError(
                f"{samples_path}: split {split!r} has no WebDataset shards (wds_shard is null); use format zarr"
            )
        stream = rows // ZARR_STREAM_ROWS
        pos = rows % ZARR_STREAM_ROWS
    else:
        bad = [samples["row"][i] for i, s in zip(keep, shard_col) if s is None]
        if bad:
            raise InputError(f"{samples_path}: rows {bad[:10]} are `ok` but have no wds_shard")
        stream = np.array(shard_col, dtype=np.int64)
        pos = np.array([samples["wds_index"][i] for i in keep], dtype=np.int64)
    order = np.lexsort((pos, stream))
    keep = [keep[i] for i in order]
    rows, stream, pos = rows[order], stream[order], pos[order]

    shapes = {tuple(samples["shape"][i]) for i in keep}
    if len(shapes) != 1:
        by_shape: dict[tuple, list] = {}
        for i in keep:
            by_shape.setdefault(tuple(samples["shape"][i]), []).append(samples["row"][i])
        detail = "; ".join(f"{list(s)}: rows {r[:5]}" for s, r in by_shape.items())
        raise InputError(
            f"{samples_path}: split {split!r} mixes volume shapes ({detail}); batches need one canonical shape"
        )
    shape = tuple(int(x) for x in shapes.pop())
    if len(shape) != 3:
        raise InputError(f"{samples_path}: shape must be [D, H, W], got {list(shape)}")

    stream_ids, stream_sizes = np.unique(stream, return_counts=True)
    wds_paths, wds_counts, label_paths, shard_files = {}, {}, {}, {}
    sizes, digests = (
        shards.get("bytes") or [None] * len(shards["path"]),
        shards.get("sha256") or [None] * len(shards["path"]),
    )
    for f, sh, p, n, size, digest in zip(
        shards["format"], shards["shard"], shards["path"], shards["samples"], sizes, digests
    ):
        if f == WDS_DIR:
            wds_paths[int(sh)] = join(root, p)
            wds_counts[int(sh)] = int(n)
        elif f == WDS_LABELS_DIR:
            label_paths[int(sh)] = join(root, p)
        if f in (WDS_DIR, WDS_LABELS_DIR) and size is not None and digest:
            # a remote shard is checked against these when it is downloaded into the cache
            shard_files[join(root, p)] = (int(size), str(digest))
    if fmt == "wds":
        lost = sorted(set(int(s) for s in stream_ids) - set(wds_paths))
        if lost:
            raise InputError(f"{join(root, MANIFEST_DIR, 'shards.parquet')}: no `wds` entry for shards {lost[:10]}")
    sidecar = build.get("wds_labels") == WDS_LABELS_SIDECAR

    # Manifests written before the column existed (or rows without it) fall back to the sha256 check.
    crc_col = samples.get("volume_crc32c") or [None] * len(samples["row"])
    crc32c = np.array([-1 if crc_col[i] is None else crc_col[i] for i in keep], dtype=np.int64)

    digest = hashlib.sha256()
    digest.update(split.encode())
    digest.update(rows.tobytes())
    digest.update(stream.tobytes())
    return SplitIndex(
        root=root,
        split=split,
        rows=rows,
        scan_ids=[samples["scan_id"][i] for i in keep],
        stream=stream,
        shard_index=pos,
        volume_crc32c=crc32c,
        volume_sha256=[samples["volume_sha256"][i] for i in keep],
        labels_sha256=[samples["labels_sha256"][i] for i in keep],
        stream_sizes=stream_sizes.astype(np.int64),
        stream_ids=stream_ids.astype(np.int64),
        shape=shape,
        wds_paths=wds_paths,
        wds_counts=wds_counts,
        label_paths=label_paths if sidecar else None,
        fingerprint=digest.hexdigest()[:16],
        shard_files=shard_files,
    )
