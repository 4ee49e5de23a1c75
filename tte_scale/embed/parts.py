"""Part files of ``tte-scale embed``: the plan that cuts the scans into parts, writing a part,
checking one, and merging them into ``embeddings.parquet``.

Plan: per split (in the order asked), the split's ``ok`` scans in manifest order are cut into
consecutive blocks of ``part_size``; parts are numbered across splits. The plan depends on the
shards and ``part_size`` only, not on the number of ranks, so a run resumed on another number of
ranks keeps the parts already written, and every part's vectors are the same whichever rank
computed them (same scans, same batches).

A part file holds one row per readable scan of its block (manifest order) and, in its Parquet
schema metadata, the run's key (what the vectors depend on), its own extent and the block's
scans that could not be read. :func:`check_part` accepts a file only when all of that equals what
the plan says now and every vector is finite; anything else is a reason string, never a guess.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["Part", "plan_parts", "table_schema", "write_part", "check_part", "read_part", "META_KEY", "part_path"]

META_KEY = b"tte_scale.embed"
"""Parquet schema-metadata key holding the JSON record of a part or of embeddings.parquet."""
PARTS_DIR = "parts"


@dataclass(frozen=True)
class Part:
    """Part ``number``: positions ``start:stop`` of ``split``'s scans in manifest order."""

    number: int
    split: str
    start: int
    stop: int
    scan_ids: tuple[str, ...]

    def extent(self) -> dict:
        digest = hashlib.sha256("\n".join(self.scan_ids).encode()).hexdigest()[:16]
        return {"part": self.number, "split": self.split, "start": self.start, "stop": self.stop, "scans": digest}


def plan_parts(scan_ids_by_split: dict[str, list[str]], part_size: int) -> list[Part]:
    """Consecutive blocks of ``part_size`` scans per split, numbered across splits."""
    parts: list[Part] = []
    for split, ids in scan_ids_by_split.items():
        for start in range(0, len(ids), part_size):
            stop = min(start + part_size, len(ids))
            parts.append(Part(len(parts), split, start, stop, tuple(ids[start:stop])))
    return parts


def part_path(out: Path, number: int) -> Path:
    return Path(out) / PARTS_DIR / f"part-{number:05d}.parquet"


def table_schema(dim: int, record: dict | None = None) -> pa.Schema:
    """scan_id, subject_id, split, vector (fixed-size list of ``dim`` float32)."""
    schema = pa.schema(
        [
            ("scan_id", pa.string()),
            ("subject_id", pa.int64()),
            ("split", pa.string()),
            ("vector", pa.list_(pa.float32(), dim)),
        ]
    )
    return schema.with_metadata({META_KEY: json.dumps(record, sort_keys=True)}) if record is not None else schema


def make_table(scan_ids, subject_ids, split: str | list[str], vectors: np.ndarray, record: dict) -> pa.Table:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    splits = [split] * n if isinstance(split, str) else list(split)
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    cols = [
        pa.array(list(scan_ids), pa.string()),
        pa.array(np.asarray(subject_ids, np.int64)),
        pa.array(splits, pa.string()),
        pa.FixedSizeListArray.from_arrays(flat, dim),
    ]
    return pa.Table.from_arrays(cols, schema=table_schema(dim, record))


def write_atomic(table: pa.Table, path: Path) -> None:
    """Write under a temporary name, then rename: a killed run never leaves a half file under ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def write_part(out: Path, part: Part, key: dict, subject_ids, vectors: np.ndarray, excluded: list[dict]) -> Path:
    """Write the part file of ``part``: the readable scans' rows and, in the metadata, the rest."""
    bad = {e["scan_id"] for e in excluded}
    ids = [s for s in part.scan_ids if s not in bad]
    record = {"key": key, "extent": part.extent(), "excluded": excluded}
    path = part_path(out, part.number)
    write_atomic(make_table(ids, subject_ids, part.split, vectors, record), path)
    return path


def read_part(path: Path) -> tuple[pa.Table, dict]:
    table = pq.read_table(path)
    return table, json.loads((table.schema.metadata or {})[META_KEY])


def check_part(path: Path, part: Part, key: dict, dim: int, subjects: dict[str, int]) -> str | None:
    """None when ``path`` holds exactly ``part`` for ``key``; else why not (one phrase)."""
    try:
        table, record = read_part(path)
    except Exception as exc:  # unreadable: truncated, not Parquet, no metadata
        return f"unreadable ({type(exc).__name__}: {exc})"
    if record.get("key") != key:
        return "written for another encoder, input or setting (key differs)"
    if record.get("extent") != part.extent():
        return f"holds another block of scans ({record.get('extent')}, the plan says {part.extent()})"
    if table.schema.remove_metadata() != table_schema(dim):
        return f"schema {table.schema.remove_metadata()} is not the expected one"
    ids = table.column("scan_id").to_pylist()
    excluded = record.get("excluded")
    if not isinstance(excluded, list) or not all(isinstance(e, dict) and "scan_id" in e for e in excluded):
        return "its list of unreadable scans is malformed"
    bad = {e["scan_id"] for e in excluded}
    want = [s for s in part.scan_ids if s not in bad]
    if ids != want or len(bad) + len(ids) != len(part.scan_ids):
        return "its scans are not the block's scans, each once, in manifest order"
    if set(table.column("split").to_pylist()) - {part.split}:
        return f"rows of another split than {part.split!r}"
    if table.column("subject_id").to_pylist() != [subjects[s] for s in ids]:
        return "subject ids differ from the manifest's"
    vec = vectors_of(table)
    if not np.isfinite(vec).all():
        return "non-finite values in its vectors"
    return None


def vectors_of(table: pa.Table) -> np.ndarray:
    """The ``vector`` column as float32 [N, D]."""
    col = table.column("vector").combine_chunks()
    dim = col.type.list_size
    return col.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
