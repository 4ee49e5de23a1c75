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
    "VOCAB_VERSION",
    "FORMAT_VERSION",
    "Labels",
    "load_labels",
    "ROWS_SCHEMA",
    "EXCLUDED_SCHEMA",
    "BENCH_SCHEMA",
    "write_vocab",
    "open_tte_arrays",
    "TteWriter",
]

VOCAB_VERSION = "1"
FORMAT_VERSION = 1
BENCH_EXCLUDED = (None, "censored_before_horizon", "prior_event")

TS = pa.timestamp("us")
ROWS_SCHEMA = pa.schema(
    [
        ("scan_id", pa.string()),
        ("subject_id", pa.int64()),
        ("split", pa.string()),
        ("prediction_time", TS),
        ("end_of_record", TS),
    ]
)
EXCLUDED_SCHEMA = pa.schema(
    [("scan_id", pa.string()), ("subject_id", pa.int64()), ("prediction_time", TS), ("reason", pa.string())]
)
BENCH_SCHEMA = pa.schema(
    [
        ("scan_id", pa.string()),
        ("subject_id", pa.int64()),
        ("split", pa.string()),
        ("task", pa.string()),
        ("label", pa.bool_()),
        ("time", pa.float32()),
        ("event", pa.bool_()),
        ("excluded", pa.string()),
    ]
)


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


#: Codecs of ``tte.zarr`` (chosen by measurement, benchmarks/results/labels.md; both plain Zarr v3
#: codecs that any reader decodes): ``time`` zstd at the fast level -3 (~7x: a row is mostly one
#: censoring time; level 1 gains a third in size for 1.6x the encode CPU; Blosc-lz4 with byte
#: shuffle is no faster and 2x larger), ``event`` Blosc bit-shuffle + lz4 (~13x at 2.7x the speed
#: of plain zstd: only one bit of each bool byte carries information; bit-shuffling gathers them).
TIME_ZSTD_LEVEL = -3
EVENT_BLOSC = dict(cname="lz4", clevel=5)


def open_tte_arrays(path: Path, num_rows: int, num_tasks: int, chunk_rows: int):
    """Create ``tte.zarr`` (Zarr v3) with ``time`` float32 and ``event`` bool [N, K]."""
    import zarr
    from zarr.codecs import BloscCodec, ZstdCodec

    group = zarr.open_group(store=str(path), mode="w", zarr_format=3)
    chunks = (max(1, min(chunk_rows, num_rows)), max(1, num_tasks))
    # Every chunk is written (no fill-value chunks): skips Zarr's all-equal scan of each chunk.
    kw = dict(shape=(num_rows, num_tasks), chunks=chunks, config={"write_empty_chunks": True})
    time = group.create_array(
        "time", dtype="float32", fill_value=float("nan"), compressors=[ZstdCodec(level=TIME_ZSTD_LEVEL)], **kw
    )
    event = group.create_array(
        "event",
        dtype="bool",
        fill_value=False,
        compressors=[BloscCodec(shuffle="bitshuffle", typesize=1, **EVENT_BLOSC)],
        **kw,
    )
    group.attrs.update({"format_version": FORMAT_VERSION, "num_tasks": num_tasks})
    return time, event


class _ChunkFiles:
    """Writes whole chunks of the two arrays as files, encoded with numcodecs directly.

    The same bytes Zarr writes (bytes codec little-endian, then the compressor; the chunk key from
    the array's own metadata; tests/unit/ehr/test_store.py compares them), without Zarr's async
    pipeline per chunk (a thread hop per codec: 0.1-0.3 of ~1.3 CPU s of writing the 20M-event
    benchmark's arrays, benchmarks/results/labels.md). Only for
    little-endian hosts and whole chunks; the caller leaves the rest to Zarr."""

    def __init__(self, root: Path, time, event):
        import sys

        import numcodecs

        self.ok = sys.byteorder == "little"
        self.arrays = [
            (root / "time", time, numcodecs.Zstd(level=TIME_ZSTD_LEVEL, checksum=False)),
            (root / "event", event, numcodecs.Blosc(shuffle=numcodecs.Blosc.BITSHUFFLE, blocksize=0, **EVENT_BLOSC)),
        ]

    def write(self, index: int, *blocks: np.ndarray) -> None:
        for (folder, arr, codec), block in zip(self.arrays, blocks):
            path = folder / arr.metadata.encode_chunk_key((index, 0))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(codec.encode(np.ascontiguousarray(block)))


class TteWriter:
    """Row blocks in, whole Zarr chunks out: ``time`` float32 and ``event`` bool [N, K].

    The caller fills the views that ``reserve(n)`` hands out, in row order, and ``commit(n)``s
    them; rows are staged until chunks are complete and every chunk is encoded and written once
    (a write that covers part of a chunk makes Zarr read, decode, merge and re-encode it).
    Complete chunks are written by a background thread while the caller computes the next
    blocks in the rest of the buffer, so encoding overlaps compute when a second core is free;
    when a buffer is full, the unwritten tail (less than a chunk) moves to the other buffer.
    ``close()`` waits for the writes and re-raises their errors; ``abort()`` just waits."""

    def __init__(
        self, path: Path, num_rows: int, num_tasks: int, chunk_rows: int, block_rows: int, background: bool = True
    ):
        from concurrent.futures import ThreadPoolExecutor

        self.time, self.event = open_tte_arrays(path, num_rows, num_tasks, chunk_rows)
        self.files = _ChunkFiles(Path(path), self.time, self.event)
        self.num_rows, self.num_tasks = num_rows, num_tasks
        self.chunk_rows = int(self.time.chunks[0])
        self.capacity = self.chunk_rows + block_rows
        self.bufs: list = [None, None]  # allocated when first needed
        self.pending: list[list] = [[], []]
        self.cur = 0
        self.base = 0  # rows [0, base) of the current buffer are handed to the writer
        self.fill = 0  # rows [base, fill) are committed, waiting for a complete chunk
        self.written = 0  # array rows handed to the writer
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="tte_writer") if background else None

    def _alloc(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        return np.empty((rows, self.num_tasks), np.float32), np.empty((rows, self.num_tasks), bool)

    def _wait(self, i: int) -> None:
        futs, self.pending[i] = self.pending[i], []
        for f in futs:
            f.result()

    def reserve(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Views (float32 [n, K], bool [n, K]) for the next ``n`` rows; contents undefined."""
        if self.written + (self.fill - self.base) + n > self.num_rows:
            raise ValueError(f"TteWriter: {self.written + self.fill - self.base + n} rows > {self.num_rows}")
        if self.bufs[self.cur] is None:
            self.bufs[self.cur] = self._alloc(self.capacity)
        if self.fill + n > len(self.bufs[self.cur][0]):
            self._switch(n)
        time_BK, event_BK = self.bufs[self.cur]
        return time_BK[self.fill : self.fill + n], event_BK[self.fill : self.fill + n]

    def _switch(self, n: int) -> None:
        """Continue in the other buffer, its writes done, with this one's unwritten tail."""
        other, rest = 1 - self.cur, self.fill - self.base
        self._wait(other)
        need = rest + n
        if self.bufs[other] is None or len(self.bufs[other][0]) < need:
            self.capacity = max(self.capacity, need + self.chunk_rows)  # a block larger than planned
            self.bufs[other] = self._alloc(self.capacity)
        (t_old, e_old), (t_new, e_new) = self.bufs[self.cur], self.bufs[other]
        t_new[:rest], e_new[:rest] = t_old[self.base : self.fill], e_old[self.base : self.fill]
        self.cur, self.base, self.fill = other, 0, rest

    def commit(self, n: int) -> None:
        self.fill += n
        whole = (self.fill - self.base) // self.chunk_rows * self.chunk_rows
        if whole:
            self._hand_over(whole)

    def _hand_over(self, n: int) -> None:
        time_BK, event_BK = self.bufs[self.cur]
        args = (time_BK[self.base : self.base + n], event_BK[self.base : self.base + n], self.written)
        if self.pool is None:
            self._write(*args)
        else:
            self.pending[self.cur].append(self.pool.submit(self._write, *args))
        self.base += n
        self.written += n

    def _write(self, time_BK: np.ndarray, event_BK: np.ndarray, start: int) -> None:
        # Whole chunks (``start`` is always at a chunk boundary) go straight to files; the
        # array's last, short chunk through Zarr, which pads it to the chunk shape. One Zarr
        # call per chunk: a call spanning several makes it copy each into a fresh array first.
        for a in range(0, len(time_BK), self.chunk_rows):
            b = min(len(time_BK), a + self.chunk_rows)
            if b - a == self.chunk_rows and self.files.ok:
                self.files.write((start + a) // self.chunk_rows, time_BK[a:b], event_BK[a:b])
            else:
                self.time[start + a : start + b] = time_BK[a:b]
                self.event[start + a : start + b] = event_BK[a:b]

    def close(self) -> None:
        """Write the last (short) chunk and wait for all writes; every row must be committed."""
        if self.fill > self.base:
            self._hand_over(self.fill - self.base)
        self.abort()
        if self.written != self.num_rows:
            raise RuntimeError(f"TteWriter: wrote {self.written} of {self.num_rows} rows")

    def abort(self) -> None:
        """Wait for the writes in flight (raising the first error) and stop the thread."""
        try:
            self._wait(self.cur)
            self._wait(1 - self.cur)
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True)


def bench_table(scan_id, subject_id, split, task_names, label_RT, time_RT, event_RT, excluded_RT) -> pa.Table:
    """Long-format bench rows: rows in row order, then task order (formats.md). String columns
    are gathers (``take``) from the R row values and T task names, not Python lists of R * T."""
    R, T = label_RT.shape
    per_row = np.repeat(np.arange(R), T)
    lab = label_RT.reshape(-1)
    return pa.table(
        {
            "scan_id": pa.array(list(scan_id), pa.string()).take(per_row),
            "subject_id": pa.array(np.repeat(np.asarray(subject_id, np.int64), T), pa.int64()),
            "split": pa.array(list(split), pa.string()).take(per_row),
            "task": pa.array(list(task_names), pa.string()).take(np.tile(np.arange(T), R)),
            "label": pa.array(lab == 1, pa.bool_(), mask=lab < 0),
            "time": pa.array(time_RT.reshape(-1), pa.float32()),
            "event": pa.array(event_RT.reshape(-1), pa.bool_()),
            "excluded": pa.array(list(BENCH_EXCLUDED), pa.string()).take(excluded_RT.reshape(-1).astype(np.int64)),
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
    label = np.where(
        lab.is_null().to_numpy(zero_copy_only=False), -1, lab.fill_null(False).to_numpy(zero_copy_only=False)
    ).astype(np.int8)
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
