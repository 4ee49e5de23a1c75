"""Precomputed benchmark labels: a label file that `tte-scale labels` takes instead of the codes.

Why: a released cohort may ship its benchmark labels computed on the full record, while its
public EHR has the outcome codes scrubbed (INSPECT: exact death and readmission codes removed),
so labels recomputed from codes come out all negative without any error. `tte-scale convert
inspect` writes the release's labels in this format and ``labels --bench-labels FILE`` uses them.

The file (docs/formats.md, "Precomputed benchmark labels"): one row per (scan, task), columns
``scan_id`` string, ``task`` string (a task of the bench task YAML), ``label`` bool (null =
censored: the release does not know), ``time`` float32 days and ``event`` bool (both null when the
release gives no time-to-event: then the task keeps its code-derived time and event). Schema
metadata ``tte_scale.precomputed_bench_version = "1"``.

For a task in the file, every labelled scan must have a row (else an error naming the scan);
``label`` replaces the computed label (null -> ``excluded = censored_before_horizon``) and a
non-null ``time``/``event`` replaces the computed ones. Tasks absent from the file are computed
from codes as usual. Rows of scans that are not labelled (excluded, or not in the scans table)
are counted, not used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tte_scale.errors import InputError

__all__ = ["PRECOMPUTED_SCHEMA", "PRECOMPUTED_VERSION", "PrecomputedBench", "write_precomputed"]

PRECOMPUTED_VERSION = "1"
PRECOMPUTED_SCHEMA = pa.schema(
    [
        ("scan_id", pa.string()),
        ("task", pa.string()),
        ("label", pa.bool_()),
        ("time", pa.float32()),
        ("event", pa.bool_()),
    ],
    metadata={"tte_scale.precomputed_bench_version": PRECOMPUTED_VERSION},
)


def write_precomputed(path: Path, table: pa.Table) -> None:
    """Write a precomputed label table (cast to the schema, version in the metadata)."""
    pq.write_table(table.select(PRECOMPUTED_SCHEMA.names).cast(PRECOMPUTED_SCHEMA), path)


class PrecomputedBench:
    """A precomputed label file, read and checked against the bench task names."""

    def __init__(self, path: str | Path, task_names: list[str]):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"--bench-labels {self.path}: file not found")
        try:
            tab = pq.read_table(self.path)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{self.path}: cannot read: {exc}") from None
        ver = (tab.schema.metadata or {}).get(b"tte_scale.precomputed_bench_version", b"").decode()
        if ver != PRECOMPUTED_VERSION:
            raise InputError(
                f"{self.path}: not a precomputed benchmark label file (tte_scale.precomputed_bench_version "
                f"{ver!r} != {PRECOMPUTED_VERSION!r}; written by `tte-scale convert inspect`)"
            )
        missing = [c for c in PRECOMPUTED_SCHEMA.names if c not in tab.column_names]
        if missing:
            raise InputError(f"{self.path}: missing column(s) {missing}")
        tab = tab.select(PRECOMPUTED_SCHEMA.names).cast(PRECOMPUTED_SCHEMA)
        for name in ("scan_id", "task"):
            if tab.column(name).null_count:
                row = int(np.flatnonzero(pc.is_null(tab.column(name)).to_numpy(zero_copy_only=False))[0])
                raise InputError(f"{self.path}: row {row}: null {name!r}")
        self.tasks = sorted(set(tab.column("task").to_pylist()))
        unknown = [t for t in self.tasks if t not in task_names]
        if unknown:
            raise InputError(
                f"{self.path}: task(s) {unknown} are not benchmark tasks of the bench task file ({task_names})"
            )
        key = pc.binary_join_element_wise(tab.column("scan_id"), tab.column("task"), "\x1f")
        if pc.count_distinct(key).as_py() != tab.num_rows:
            keys = key.to_pylist()
            seen, dup = set(), None
            for k in keys:
                if k in seen:
                    dup = k
                    break
                seen.add(k)
            scan, task = dup.split("\x1f")
            raise InputError(f"{self.path}: scan {scan!r}, task {task!r} has more than one row")
        self.key = key.combine_chunks() if isinstance(key, pa.ChunkedArray) else key
        self.table = tab
        self.used = np.zeros(tab.num_rows, bool)
        self.replaced_time = 0

    def apply(self, bench: pa.Table) -> pa.Table:
        """A shard's computed bench rows (``store.BENCH_SCHEMA``) with the precomputed values put in."""
        is_pre = pc.is_in(bench.column("task"), value_set=pa.array(self.tasks, pa.string()))
        if not pc.any(is_pre).as_py():
            return bench
        key = pc.binary_join_element_wise(bench.column("scan_id"), bench.column("task"), "\x1f")
        idx = pc.index_in(key, value_set=self.key)
        lost = pc.and_(is_pre, pc.is_null(idx)).to_numpy(zero_copy_only=False)
        if lost.any():
            r = int(np.flatnonzero(lost)[0])
            raise InputError(
                f"{self.path}: no row for scan {bench.column('scan_id')[r].as_py()!r}, task "
                f"{bench.column('task')[r].as_py()!r} (every labelled scan needs one for each task in the file)"
            )
        pre = is_pre.to_numpy(zero_copy_only=False)
        rows = np.asarray(pc.fill_null(idx, 0).to_numpy(zero_copy_only=False), np.int64)
        self.used[rows[pre]] = True
        src = self.table.take(pa.array(rows))
        label = pc.if_else(is_pre, src.column("label"), bench.column("label"))
        censored = pc.and_(is_pre, pc.is_null(src.column("label")))
        excluded = pc.if_else(
            is_pre,
            pc.if_else(censored, "censored_before_horizon", pa.scalar(None, pa.string())),
            bench.column("excluded"),
        )
        has_time = pc.and_(is_pre, pc.and_(pc.is_valid(src.column("time")), pc.is_valid(src.column("event"))))
        self.replaced_time += int(pc.sum(has_time).as_py() or 0)
        time = pc.if_else(has_time, src.column("time"), bench.column("time"))
        event = pc.if_else(has_time, src.column("event"), bench.column("event"))
        cols = {"label": label, "excluded": excluded, "time": time, "event": event}
        for name, col in cols.items():
            bench = bench.set_column(bench.schema.get_field_index(name), bench.schema.field(name), col)
        return bench

    def report(self) -> dict:
        """Counts for the run summary."""
        return {
            "file": str(self.path),
            "tasks": self.tasks,
            "rows": int(self.table.num_rows),
            "rows_used": int(self.used.sum()),
            "rows_of_unlabelled_scans": int((~self.used).sum()),
            "time_event_from_file": self.replaced_time,
        }
