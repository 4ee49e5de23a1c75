"""The labels folder on disk (docs/formats.md, "Labels folder"): writers and ``load_labels``.

Legend: N labelled rows (scans), K pretraining tasks, T benchmark tasks, B time bins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tte_scale.errors import InputError

__all__ = [
    "VOCAB_VERSION", "FORMAT_VERSION", "Labels", "load_labels", "ROWS_SCHEMA", "EXCLUDED_SCHEMA",
    "BENCH_SCHEMA", "EXCLUDED_REASONS", "write_vocab", "open_tte_arrays",
]

VOCAB_VERSION = "1"
FORMAT_VERSION = 1
BENCH_EXCLUDED = (None, "censored_before_horizon", "prior_event")
EXCLUDED_REASONS = (
    "unknown_subject",
    "subject_not_in_splits",
    "no_timed_events",
    "prediction_time_at_or_after_end_of_record",
)

TS = pa.timestamp("us")
ROWS_SCHEMA = pa.schema([("scan_id", pa.string()), ("subject_id", pa.int64()), ("split", pa.string()), ("prediction_time", TS), ("end_of_record", TS)])
EXCLUDED_SCHEMA = pa.schema([("scan_id", pa.string()), ("subject_id", pa.int64()), ("prediction_time", TS), ("reason", pa.string())])
BENCH_SCHEMA = pa.schema([
    ("scan_id", pa.string()), ("subject_id", pa.int64()), ("split", pa.string()), ("task", pa.string()),
    ("label", pa.bool_()), ("time", pa.float32()), ("event", pa.bool_()), ("excluded", pa.string()),
])


def write_vocab(path: Path, codes: list[str], counts: np.ndarray, scores: np.ndarray) -> None:
    tab = pa.table(
        {
            "task_index": pa.array(np.arange(len(codes), dtype=np.int32)),
            "code": pa.array(codes, pa.string()),
            "train_count": pa.array(np.asarray(counts, np.int64)),
            "score": pa.array(np.asarray(scores, np.float64)),
        }
    ).replace_schema_metadata({"tte_scale.vocab_version": VOCAB_VERSION})
    pq.write_table(tab, path)


def open_tte_arrays(path: Path, num_rows: int, num_tasks: int, chunk_rows: int, zstd_level: int = 1):
    """Create ``tte.zarr`` (Zarr v3) with ``time`` float32 and ``event`` bool [N, K].

    zstd level 1: the arrays are highly redundant (a row's censored times are one value), so
    it compresses ~8x at a third less CPU than zarr's default level."""
    import zarr
    from zarr.codecs import ZstdCodec

    group = zarr.open_group(store=str(path), mode="w", zarr_format=3)
    chunks = (max(1, min(chunk_rows, num_rows)), max(1, num_tasks))
    time = group.create_array("time", shape=(num_rows, num_tasks), chunks=chunks, dtype="float32", fill_value=float("nan"), compressors=[ZstdCodec(level=zstd_level)])
    event = group.create_array("event", shape=(num_rows, num_tasks), chunks=chunks, dtype="bool", fill_value=False, compressors=[ZstdCodec(level=zstd_level)])
    group.attrs.update({"format_version": FORMAT_VERSION, "num_tasks": num_tasks})
    return time, event


def bench_table(scan_id, subject_id, split, task_names, label_RT, time_RT, event_RT, excluded_RT) -> pa.Table:
    """Long-format bench rows: rows in row order, then task order (formats.md)."""
    R, T = label_RT.shape
    rep = lambda a: np.repeat(np.asarray(a, dtype=object if np.asarray(a).dtype == object else None), T)  # noqa: E731
    lab = label_RT.reshape(-1)
    exc = np.asarray(BENCH_EXCLUDED, dtype=object)[excluded_RT.reshape(-1)]
    return pa.table(
        {
            "scan_id": pa.array(rep(scan_id).tolist(), pa.string()),
            "subject_id": pa.array(rep(subject_id), pa.int64()),
            "split": pa.array(rep(split).tolist(), pa.string()),
            "task": pa.array(np.tile(np.asarray(task_names, dtype=object), R).tolist(), pa.string()),
            "label": pa.array(lab == 1, pa.bool_(), mask=lab < 0),
            "time": pa.array(time_RT.reshape(-1), pa.float32()),
            "event": pa.array(event_RT.reshape(-1), pa.bool_()),
            "excluded": pa.array(exc.tolist(), pa.string()),
        },
        schema=BENCH_SCHEMA,
    )


@dataclass
class Labels:
    """A labels folder opened for reading. ``time``/``event`` are lazy Zarr arrays (slice them,
    or ``np.asarray`` them); the small tables and bench arrays are in memory."""

    root: Path
    rows: pa.Table
    """One row per labelled scan, in array row order (scan_id, subject_id, split, ...)."""
    vocab: pa.Table
    """One row per task (column of ``time``/``event``): task_index, code, train_count, score."""
    bins: dict
    """The whole bins.json (config, software, ...)."""
    bin_starts: np.ndarray
    """float32 [B] bin start times in days (first is 0; the last bin is open-ended)."""
    bench_tasks: list[str]
    """Benchmark task names in column order."""
    time: object
    """zarr float32 [N, K] days to the event or to censoring."""
    event: object
    """zarr bool [N, K]."""
    bench_label: np.ndarray
    """int8 [N, T]: 1/0, -1 = null (censored before the horizon or excluded)."""
    bench_time: np.ndarray
    """float32 [N, T] days."""
    bench_event: np.ndarray
    """bool [N, T]."""

    @property
    def num_rows(self) -> int:
        return self.rows.num_rows

    @property
    def num_tasks(self) -> int:
        return self.vocab.num_rows

    @property
    def scan_ids(self) -> list[str]:
        return self.rows.column("scan_id").to_pylist()


def load_labels(root: str | Path) -> Labels:
    """Open a labels folder written by ``tte-scale labels`` and check its pieces agree."""
    import zarr

    root = Path(root)
    need = ["vocab.parquet", "bins.json", "rows.parquet", "tte.zarr", "bench.parquet"]
    missing = [n for n in need if not (root / n).exists()]
    if missing:
        raise InputError(f"{root}: not a labels folder (missing {missing})")
    bins = json.loads((root / "bins.json").read_text())
    if bins.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{root / 'bins.json'}: format_version {bins.get('format_version')} != {FORMAT_VERSION}")
    vocab = pq.read_table(root / "vocab.parquet")
    ver = (vocab.schema.metadata or {}).get(b"tte_scale.vocab_version", b"").decode()
    if ver != VOCAB_VERSION:
        raise InputError(f"{root / 'vocab.parquet'}: vocab_version {ver!r} != {VOCAB_VERSION!r}")
    rows = pq.read_table(root / "rows.parquet")
    group = zarr.open_group(store=str(root / "tte.zarr"), mode="r")
    time, event = group["time"], group["event"]
    N, K = rows.num_rows, vocab.num_rows
    if tuple(time.shape) != (N, K) or tuple(event.shape) != (N, K):
        raise InputError(f"{root}: tte.zarr shape {time.shape} != (rows {N}, tasks {K})")
    names = list(bins["bench_tasks"])
    T = len(names)
    bench = pq.read_table(root / "bench.parquet")
    if bench.num_rows != N * T:
        raise InputError(f"{root / 'bench.parquet'}: {bench.num_rows} rows != {N} scans x {T} tasks")
    lab = bench.column("label")
    label = np.where(lab.is_null().to_numpy(zero_copy_only=False), -1, lab.fill_null(False).to_numpy(zero_copy_only=False)).astype(np.int8)
    return Labels(
        root=root,
        rows=rows,
        vocab=vocab,
        bins=bins,
        bin_starts=np.asarray(bins["bin_starts_days"], np.float32),
        bench_tasks=names,
        time=time,
        event=event,
        bench_label=label.reshape(N, T),
        bench_time=bench.column("time").to_numpy().astype(np.float32).reshape(N, T),
        bench_event=bench.column("event").to_numpy(zero_copy_only=False).astype(bool).reshape(N, T),
    )
