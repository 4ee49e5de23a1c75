"""A small writer of the shards folder exactly as docs/formats.md ("Shards folder") specifies.

Every name, member order, dtype and table schema comes from :mod:`tte_scale.formats.shards`,
the module `sharding/` writes with and the loader reads with; what this writer does on its own
is the content (phantoms, random labels) and the shard layout it is asked for.

Used by the loader tests, the trainer's multi-process tests and benchmarks/bench_loader.py so
they do not depend on the sharding stage (tests/unit/data/test_loader_real_shards.py covers
the loader on what `sharding/` itself writes). Volumes are synthetic int16 HU phantoms (air outside an ellipsoid body, noisy tissue,
darker lungs) so that they compress like CT rather than like constants or pure noise.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import google_crc32c
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tte_scale.formats.shards import (
    FORMAT_VERSION,
    HEADER_MEMBER,
    LABEL_KEYS,
    MANIFEST_DIR,
    SAMPLE_COLUMNS,
    SHARD_COLUMNS,
    STATUS_FAILED,
    STATUS_OK,
    VOLUME_FILL,
    VOLUME_MEMBER,
    WDS_DIR,
    WDS_LABELS_INLINE,
    ZARR_DIR,
    ZARR_LABEL_ARRAYS,
    ZARR_VOLUMES,
    header_bytes,
    label_member_bytes,
    labels_sha256,
    sample_key,
    samples_schema,
    shards_schema,
    volume_chunks,
    wds_shard_name,
)


def phantom(shape, rng: np.random.Generator) -> np.ndarray:
    """int16 [D, H, W] CT-like phantom."""
    D, H, W = shape
    z, y, x = np.meshgrid(np.linspace(-1, 1, D), np.linspace(-1, 1, H), np.linspace(-1, 1, W), indexing="ij")
    a, b = rng.uniform(0.7, 0.9, size=2)
    body = (y / a) ** 2 + (x / b) ** 2 < 1
    lungs = (((x - 0.35) / 0.25) ** 2 + (y / 0.45) ** 2 < 1) | (((x + 0.35) / 0.25) ** 2 + (y / 0.45) ** 2 < 1)
    vol = np.full(shape, -1000.0, dtype=np.float32)
    vol[body] = 40.0
    vol[body & lungs & (np.abs(z) < 0.8)] = -850.0
    vol += rng.normal(0, 20, size=shape).astype(np.float32) * body
    return np.round(vol).astype(np.int16)


def make_labels(rng: np.random.Generator, K: int, T: int) -> dict[str, np.ndarray]:
    return {
        "tte_time": rng.uniform(1, 3000, K).astype(np.float32),
        "tte_event": rng.random(K) < 0.3,
        "bench_label": rng.integers(-1, 2, T).astype(np.int8),
        "bench_time": rng.uniform(1, 400, T).astype(np.float32),
        "bench_event": rng.random(T) < 0.5,
    }


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def write_shards(
    out: str | Path,
    *,
    n: int = 12,
    shape=(8, 12, 10),
    splits=None,
    K: int = 6,
    T: int = 3,
    samples_per_shard: int = 4,
    zarr_shard_rows: int = 4,
    codec=None,
    failed_rows=(),
    volumes=None,
    scan_ids=None,
    seed: int = 0,
    crc32c: bool = True,
    zarr_compressors=None,
    label_chunk_rows: int = 5,
) -> dict:
    """Write wds/, zarr/ and manifest/ for `n` scans; returns {"scan_ids", "splits", "volumes", "labels"}.

    `crc32c=False` leaves out the manifest's `volume_crc32c` column, as manifests written before it had.
    `zarr_compressors`: the Zarr volume codecs after `bytes` (default zstd-3 + crc32c, whatever `codec`).
    `label_chunk_rows`: rows per chunk of the Zarr label arrays (the sharding job writes 1024).
    """
    import numcodecs
    import zarr
    from zarr.codecs import Crc32cCodec, ZstdCodec

    out = Path(out)
    rng = np.random.default_rng(seed)
    codec = codec or numcodecs.Zstd(level=3)
    splits = list(splits or ["train"] * n)
    scan_ids = list(scan_ids or [f"scan{i:04d}" for i in range(n)])
    volumes = volumes if volumes is not None else [phantom(shape, rng) for _ in range(n)]
    labels = [make_labels(rng, K, T) for _ in range(n)]
    failed = set(failed_rows)

    # Zarr group: volumes in a sharding codec with a crc32c per chunk; failed rows stay holes.
    (out / WDS_DIR).mkdir(parents=True, exist_ok=True)
    g = zarr.open_group(str(out / ZARR_DIR), mode="w")
    g.attrs.update({"format_version": FORMAT_VERSION, "bench_tasks": [f"task{t}" for t in range(T)], "num_tasks": K})
    vols = g.create_array(
        ZARR_VOLUMES,
        shape=(n, *shape),
        chunks=volume_chunks(shape),
        shards=(zarr_shard_rows, *shape),
        dtype="int16",
        compressors=zarr_compressors or [ZstdCodec(level=3), Crc32cCodec()],
        fill_value=VOLUME_FILL,
    )
    label_arrays = {}
    for key, path in ZARR_LABEL_ARRAYS.items():
        width = K if key.startswith("tte") else T
        label_arrays[key] = g.create_array(
            path,
            shape=(n, width),
            chunks=(label_chunk_rows, width),
            dtype=labels[0][key].dtype,
            compressors=[ZstdCodec(level=1), Crc32cCodec()],
        )
    for r in range(n):
        if r in failed:
            continue
        vols[r] = volumes[r]
        for key in LABEL_KEYS:
            label_arrays[key][r] = labels[r][key]

    # WebDataset: each shard holds one split's samples in row order.
    samples = {c: [] for c in SAMPLE_COLUMNS}
    shard_rows = {c: [] for c in SHARD_COLUMNS}
    shard_no = 0
    for split in dict.fromkeys(splits):
        rows = [r for r in range(n) if splits[r] == split and r not in failed]
        for c0 in range(0, len(rows), samples_per_shard):
            rel = f"{WDS_DIR}/{wds_shard_name(shard_no)}"
            chunk = rows[c0 : c0 + samples_per_shard]
            with tarfile.open(out / rel, "w", format=tarfile.USTAR_FORMAT) as tar:
                for i, r in enumerate(chunk):
                    key = sample_key(scan_ids[r])
                    enc = codec.encode(np.ascontiguousarray(volumes[r]))
                    header = header_bytes(
                        scan_id=scan_ids[r],
                        subject_id=r,
                        split=split,
                        row=r,
                        shape=shape,
                        spacing_mm=[1.5, 1.0, 1.0],
                        orientation="SAR",
                        codec=codec.get_config(),
                        scanner={},
                    )
                    lab = label_member_bytes(labels[r])
                    _add(tar, f"{key}.{HEADER_MEMBER}", header)
                    _add(tar, f"{key}.{VOLUME_MEMBER}", bytes(enc))
                    for member, b in lab.items():
                        _add(tar, f"{key}.{member}", b)
                    row = {
                        "row": r,
                        "scan_id": scan_ids[r],
                        "subject_id": r,
                        "split": split,
                        "status": STATUS_OK,
                        "reason": None,
                        "wds_shard": shard_no,
                        "wds_index": i,
                        "volume_bytes": len(enc),
                        "volume_crc32c": google_crc32c.value(bytes(enc)),
                        "volume_sha256": hashlib.sha256(np.ascontiguousarray(volumes[r]).tobytes()).hexdigest(),
                        "labels_sha256": labels_sha256(lab.values()),
                        "shape": list(shape),
                    }
                    for c in SAMPLE_COLUMNS:
                        samples[c].append(row[c])
            data = (out / rel).read_bytes()
            for c, v in zip(
                SHARD_COLUMNS, (WDS_DIR, shard_no, rel, split, len(chunk), len(data), hashlib.sha256(data).hexdigest())
            ):
                shard_rows[c].append(v)
            shard_no += 1
    for r in sorted(failed):
        failed_row = {"row": r, "scan_id": scan_ids[r], "subject_id": r, "split": splits[r]}
        failed_row.update(status=STATUS_FAILED, reason="unreadable_file")
        for c in SAMPLE_COLUMNS:
            samples[c].append(failed_row.get(c))

    (out / MANIFEST_DIR).mkdir(exist_ok=True)
    schema = samples_schema()
    if not crc32c:
        schema = schema.remove(schema.get_field_index("volume_crc32c"))
        del samples["volume_crc32c"]
    pq.write_table(pa.table(samples, schema=schema), out / MANIFEST_DIR / "samples.parquet")
    for c, v in zip(SHARD_COLUMNS, (ZARR_DIR, 0, ZARR_DIR, "all", n - len(failed), 0, "")):
        shard_rows[c].append(v)
    pq.write_table(pa.table(shard_rows, schema=shards_schema()), out / MANIFEST_DIR / "shards.parquet")
    (out / MANIFEST_DIR / "build.json").write_text(
        json.dumps({"wds_labels": WDS_LABELS_INLINE, "counts": {"ok": n - len(failed)}})
    )
    return {"scan_ids": scan_ids, "splits": splits, "volumes": volumes, "labels": labels}
