"""A small writer of the shards folder exactly as docs/formats.md ("Shards folder") specifies.

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

LABEL_KEYS = ("tte_time", "tte_event", "bench_label", "bench_time", "bench_event")


def encode_key(scan_id: str) -> str:
    return scan_id.replace("%", "%25").replace(".", "%2E").replace("/", "%2F")


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


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


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


def write_shards(out: str | Path, *, n: int = 12, shape=(8, 12, 10), splits=None, K: int = 6, T: int = 3,
                 samples_per_shard: int = 4, zarr_shard_rows: int = 4, codec=None, failed_rows=(),
                 volumes=None, scan_ids=None, seed: int = 0, crc32c: bool = True) -> dict:
    """Write wds/, zarr/ and manifest/ for `n` scans; returns {"scan_ids", "splits", "volumes", "labels"}.

    `crc32c=False` leaves out the manifest's `volume_crc32c` column, as manifests written before it had.
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
    (out / "wds").mkdir(parents=True, exist_ok=True)
    g = zarr.open_group(str(out / "zarr"), mode="w")
    g.attrs.update({"format_version": 1, "bench_tasks": [f"task{t}" for t in range(T)], "num_tasks": K})
    vols = g.create_array("volumes", shape=(n, *shape), chunks=(1, *shape), shards=(zarr_shard_rows, *shape),
                          dtype="int16", compressors=[ZstdCodec(level=3), Crc32cCodec()], fill_value=0)
    label_arrays = {}
    for key, path in zip(LABEL_KEYS, ("tte/time", "tte/event", "bench/label", "bench/time", "bench/event")):
        width = K if key.startswith("tte") else T
        label_arrays[key] = g.create_array(path, shape=(n, width), chunks=(5, width), dtype=labels[0][key].dtype,
                                           compressors=[ZstdCodec(level=1), Crc32cCodec()])
    for r in range(n):
        if r in failed:
            continue
        vols[r] = volumes[r]
        for key in LABEL_KEYS:
            label_arrays[key][r] = labels[r][key]

    # WebDataset: each shard holds one split's samples in row order.
    samples = {c: [] for c in ("row", "scan_id", "subject_id", "split", "status", "reason", "wds_shard", "wds_index",
                               "volume_bytes", "volume_crc32c", "volume_sha256", "labels_sha256", "shape")}
    shard_rows = {c: [] for c in ("format", "shard", "path", "split", "samples", "bytes", "sha256")}
    shard_no = 0
    for split in dict.fromkeys(splits):
        rows = [r for r in range(n) if splits[r] == split and r not in failed]
        for c0 in range(0, len(rows), samples_per_shard):
            rel = f"wds/shard-{shard_no:06d}.tar"
            chunk = rows[c0:c0 + samples_per_shard]
            with tarfile.open(out / rel, "w", format=tarfile.USTAR_FORMAT) as tar:
                for i, r in enumerate(chunk):
                    key = encode_key(scan_ids[r])
                    enc = codec.encode(np.ascontiguousarray(volumes[r]))
                    header = {"scan_id": scan_ids[r], "subject_id": r, "split": split, "row": r, "shape": list(shape),
                              "spacing_mm": [1.5, 1.0, 1.0], "orientation": "SAR", "dtype": "int16",
                              "codec": codec.get_config(), "scanner": {}}
                    lab = [npy_bytes(labels[r][k]) for k in LABEL_KEYS]
                    _add(tar, f"{key}.header.json", json.dumps(header).encode())
                    _add(tar, f"{key}.volume.bin", bytes(enc))
                    for k, b in zip(LABEL_KEYS, lab):
                        _add(tar, f"{key}.{k}.npy", b)
                    samples["row"].append(r); samples["scan_id"].append(scan_ids[r])
                    samples["subject_id"].append(r); samples["split"].append(split)
                    samples["status"].append("ok"); samples["reason"].append(None)
                    samples["wds_shard"].append(shard_no); samples["wds_index"].append(i)
                    samples["volume_bytes"].append(len(enc))
                    samples["volume_crc32c"].append(google_crc32c.value(bytes(enc)))
                    samples["volume_sha256"].append(hashlib.sha256(np.ascontiguousarray(volumes[r]).tobytes()).hexdigest())
                    samples["labels_sha256"].append(hashlib.sha256(b"".join(lab)).hexdigest())
                    samples["shape"].append(list(shape))
            data = (out / rel).read_bytes()
            for c, v in zip(shard_rows, ("wds", shard_no, rel, split, len(chunk), len(data),
                                         hashlib.sha256(data).hexdigest())):
                shard_rows[c].append(v)
            shard_no += 1
    for r in sorted(failed):
        for c, v in zip(samples, (r, scan_ids[r], r, splits[r], "failed", "unreadable_dicom", None, None, 0, None,
                                  None, None, None)):
            samples[c].append(v)

    (out / "manifest").mkdir(exist_ok=True)
    schema = pa.schema([("row", pa.int64()), ("scan_id", pa.string()), ("subject_id", pa.int64()),
                        ("split", pa.string()), ("status", pa.string()), ("reason", pa.string()),
                        ("wds_shard", pa.int32()), ("wds_index", pa.int32()), ("volume_bytes", pa.int64()),
                        ("volume_crc32c", pa.int64()), ("volume_sha256", pa.string()), ("labels_sha256", pa.string()),
                        ("shape", pa.list_(pa.int32()))])
    if not crc32c:
        schema = schema.remove(schema.get_field_index("volume_crc32c"))
        del samples["volume_crc32c"]
    pq.write_table(pa.table(samples, schema=schema), out / "manifest" / "samples.parquet")
    shard_rows["format"].append("zarr"); shard_rows["shard"].append(0); shard_rows["path"].append("zarr")
    shard_rows["split"].append("all"); shard_rows["samples"].append(n - len(failed))
    shard_rows["bytes"].append(0); shard_rows["sha256"].append("")
    pq.write_table(pa.table(shard_rows, schema=pa.schema([
        ("format", pa.string()), ("shard", pa.int32()), ("path", pa.string()), ("split", pa.string()),
        ("samples", pa.int64()), ("bytes", pa.int64()), ("sha256", pa.string())])),
        out / "manifest" / "shards.parquet")
    (out / "manifest" / "build.json").write_text(json.dumps({"wds_labels": "inline", "counts": {"ok": n - len(failed)}}))
    return {"scan_ids": scan_ids, "splits": splits, "volumes": volumes, "labels": labels}
