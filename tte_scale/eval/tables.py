"""`BenchTable`: the benchmark labels of one split, row-aligned with its embeddings.

Arrays follow the batch/shard contract of docs/formats.md: per row a subject id, and per
(row, task) an int8 label at the horizon (-1 = null), a float32 time in days and a bool event.
``include`` (optional) marks (row, task) cells usable for the time-to-event metrics; cells
that the labeller excluded (``prior_event``) must be False there. Without it every row with a
finite, non-negative time is used (a null *label* alone, e.g. censored before the horizon,
does not remove a row from the C-index).

Legend: N rows, T tasks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from tte_scale.errors import InputError

__all__ = ["BenchTable", "align_to_scans", "bench_tables_from_long", "outcome_groups"]


def _rows(mask) -> str:
    idx = np.flatnonzero(mask)
    more = f" (and {idx.size - 10} more)" if idx.size > 10 else ""
    return f"{idx[:10].tolist()}{more}"


@dataclass(frozen=True)
class BenchTable:
    """Benchmark labels of one split. ``tasks`` names the T columns."""

    subject_id: np.ndarray  # int64 [N]
    label: np.ndarray  # int8 [N, T], -1 = null
    time: np.ndarray  # float32 [N, T] days
    event: np.ndarray  # bool [N, T]
    tasks: tuple[str, ...]
    include: np.ndarray | None = None  # bool [N, T]
    scan_id: np.ndarray | None = None  # str [N], to align rows with embeddings
    source: str = "<memory>"  # named in error messages

    def __post_init__(self) -> None:
        n = self.subject_id.shape[0]
        t = len(self.tasks)
        if self.subject_id.ndim != 1:
            raise InputError(f"{self.source}: subject_id must be 1-D, got shape {self.subject_id.shape}")
        for name in ("label", "time", "event") + (("include",) if self.include is not None else ()):
            arr = getattr(self, name)
            if arr.shape != (n, t):
                raise InputError(f"{self.source}: {name} has shape {arr.shape}, expected ({n}, {t}) (rows, tasks)")
        bad = ~np.isin(self.label, (-1, 0, 1))
        if bad.any():
            raise InputError(f"{self.source}: label must be -1, 0 or 1; bad values at rows {_rows(bad.any(1))}")
        neg = np.asarray(self.time) < 0
        if neg.any():
            raise InputError(f"{self.source}: negative times at rows {_rows(neg.any(1))}")

    def column(self, task: str) -> int:
        if task not in self.tasks:
            raise InputError(f"{self.source}: unknown task {task!r}; known: {list(self.tasks)}")
        return self.tasks.index(task)

    def survival_rows(self, task: str) -> np.ndarray:
        """Rows usable for the time-to-event metrics of a task."""
        k = self.column(task)
        ok = np.isfinite(self.time[:, k])
        if self.include is not None:
            ok &= self.include[:, k]
        return np.flatnonzero(ok)

    def label_rows(self, task: str) -> np.ndarray:
        """Rows with a non-null binary label."""
        return np.flatnonzero(self.label[:, self.column(task)] >= 0)

    def take(self, rows: np.ndarray) -> BenchTable:
        """The table of the given rows, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        pick = {f: getattr(self, f)[rows] for f in ("subject_id", "label", "time", "event")}
        for f in ("include", "scan_id"):
            if getattr(self, f) is not None:
                pick[f] = getattr(self, f)[rows]
        return dataclasses.replace(self, **pick)


def outcome_groups(tables: dict[str, BenchTable] | BenchTable, tasks: list[str]) -> list[list[str]]:
    """Tasks that share one outcome, in task order: the same time, event and include columns in
    every split (e.g. mortality_1m, _6m and _12m: one code set, three horizons). Their survival
    probe is fit once and their horizon-free metrics are reported once, on the group's first task.
    """
    tabs = list(tables.values()) if isinstance(tables, dict) else [tables]

    def key(task):
        cols = []
        for tb in tabs:
            k = tb.column(task)
            inc = tb.include[:, k] if tb.include is not None else np.ones(len(tb.subject_id), bool)
            t = np.where(inc, tb.time[:, k], -2.0)  # rows left out must agree too, whatever their time
            cols.append((np.nan_to_num(t, nan=-1.0).tobytes(), (tb.event[:, k] & inc).tobytes(), inc.tobytes()))
        return tuple(cols)

    groups: dict[tuple, list[str]] = {}
    for task in tasks:
        groups.setdefault(key(task), []).append(task)
    return list(groups.values())


def bench_tables_from_long(
    table, tasks: list[str] | None = None, source: str = "bench.parquet"
) -> dict[str, BenchTable]:
    """Split-wise BenchTables from the long ``bench.parquet`` table (docs/formats.md).

    Rows keep their first-appearance order per split (labels row order, recorded in
    ``scan_id``); ``excluded == 'prior_event'`` cells are left out of the survival metrics
    via ``include``.
    """
    import pyarrow as pa

    if not isinstance(table, pa.Table):
        raise InputError(f"{source}: expected a pyarrow Table")
    need = {"scan_id", "subject_id", "split", "task", "label", "time", "event", "excluded"}
    missing = need - set(table.column_names)
    if missing:
        raise InputError(f"{source}: missing columns {sorted(missing)}")
    d = {c: table.column(c).to_pylist() for c in need}
    all_tasks = list(dict.fromkeys(d["task"]))
    tasks = list(tasks) if tasks is not None else all_tasks
    unknown = [t for t in tasks if t not in all_tasks]
    if unknown:
        raise InputError(f"{source}: tasks {unknown} not in the table (has {all_tasks})")
    col = {t: i for i, t in enumerate(tasks)}
    per_split: dict[str, dict] = {}
    for r, (scan, subj, split, task) in enumerate(zip(d["scan_id"], d["subject_id"], d["split"], d["task"])):
        if task not in col:
            continue
        s = per_split.setdefault(split, {"scans": {}, "cells": []})
        row = s["scans"].setdefault(scan, (len(s["scans"]), subj))[0]
        s["cells"].append((row, col[task], r))
    out = {}
    for split, s in per_split.items():
        n, t = len(s["scans"]), len(tasks)
        label = np.full((n, t), -1, np.int8)
        time = np.full((n, t), np.nan, np.float32)
        event = np.zeros((n, t), bool)
        include = np.zeros((n, t), bool)
        for row, k, r in s["cells"]:
            lab = d["label"][r]
            label[row, k] = -1 if lab is None else int(lab)
            time[row, k] = np.nan if d["time"][r] is None else d["time"][r]
            event[row, k] = bool(d["event"][r])
            include[row, k] = d["excluded"][r] != "prior_event"
        subj = np.array([v[1] for v in s["scans"].values()], np.int64)
        scans = np.array(list(s["scans"]), dtype=object)
        out[split] = BenchTable(
            subj, label, time, event, tuple(tasks), include, scans, source=f"{source} (split {split})"
        )
    return out


def align_to_scans(table: BenchTable, scan_ids: np.ndarray) -> BenchTable:
    """The rows of ``table`` in the order of ``scan_ids`` (embedded scans only)."""
    pos = {s: i for i, s in enumerate(table.scan_id.tolist())}
    missing = [s for s in scan_ids.tolist() if s not in pos]
    if missing:
        raise InputError(f"{table.source}: no benchmark labels for scans {missing[:5]} (labels and shards differ?)")
    idx = np.asarray([pos[s] for s in scan_ids.tolist()], dtype=np.int64)
    pick = {f: getattr(table, f)[idx] for f in ("subject_id", "label", "time", "event", "scan_id")}
    if table.include is not None:
        pick["include"] = table.include[idx]
    return dataclasses.replace(table, **pick)
