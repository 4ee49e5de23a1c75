"""A released cohort's three tables, read and checked value by value (the reading half of
`convert inspect`; ``cohort`` joins them and writes the outputs).

Each table is read with every field a string (``tables.read_table``); a study id may repeat only
as an identical row (collapsed and counted); every value is checked against what the map allows,
and an error names the file, the line and the column.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tte_scale.convert.mapping import TIME_UNITS, CohortMap
from tte_scale.convert.tables import Table, line_of, parse_int64, parse_timestamps, read_table
from tte_scale.errors import InputError

__all__ = ["Studies", "Splits", "Labels", "TaskValues", "read_studies", "read_splits", "read_labels"]


def _strings(table: Table, name: str, what: str) -> np.ndarray:
    return np.asarray(pc.utf8_trim_whitespace(table.require_values(name, what)).to_pylist(), dtype=object)


def _unique_rows(table: Table, key: np.ndarray, columns: list[str]) -> tuple[dict[str, int], int]:
    """``study id -> row`` of a table; repeated identical rows collapse (counted), differing ones
    are an error naming both lines and the column that differs."""
    first: dict[str, int] = {}
    collapsed = 0
    values = {c: table.table.column(c).to_pylist() for c in columns}
    for row, k in enumerate(key):
        prev = first.setdefault(k, row)
        if prev == row:
            continue
        diff = next((c for c in columns if values[c][prev] != values[c][row]), None)
        if diff is not None:
            raise InputError(
                f"{table.path}: study {k!r} has two different rows: line {line_of(prev)} and line "
                f"{line_of(row)} differ in column {diff!r} ({values[diff][prev]!r} vs {values[diff][row]!r})"
            )
        collapsed += 1
    return first, collapsed


@dataclass
class Studies:
    table: Table
    scan: np.ndarray
    subject: np.ndarray
    time_us: np.ndarray
    time_ok: np.ndarray
    image: np.ndarray
    rows: np.ndarray
    """Row (in the file) of each unique study."""
    collapsed: int


def read_studies(path: Path, cmap: CohortMap) -> Studies:
    m = cmap.studies
    t = read_table(path, m.delimiter)
    scan = _strings(t, m.scan, "study id")
    subject = parse_int64(t, m.subject, "person id")
    time_us, time_ok = parse_timestamps(t, m.time, "procedure date-time")
    image_col = t.column(m.image, "image id")
    image = np.asarray(pc.utf8_trim_whitespace(image_col).to_pylist(), dtype=object)
    first, collapsed = _unique_rows(t, scan, [m.scan, m.subject, m.time, m.image])
    rows = np.fromiter(first.values(), np.int64, count=len(first))
    return Studies(t, scan[rows], subject[rows], time_us[rows], time_ok[rows], image[rows], rows, collapsed)


@dataclass
class Splits:
    table: Table
    of: dict[str, tuple[str, int]]
    """study id -> (train / tuning / held_out, row in the file)."""
    collapsed: int


def read_splits(path: Path, cmap: CohortMap) -> Splits:
    m = cmap.splits
    t = read_table(path, m.delimiter)
    scan = _strings(t, m.scan, "study id")
    raw = _strings(t, m.split, "split name")
    for row, v in enumerate(raw):
        if v not in m.values:
            raise InputError(
                f"{t.path}: line {line_of(row)}, column {m.split!r}: unexpected split {v!r} "
                f"(the map lists {sorted(m.values)}; add it to splits.values)"
            )
    first, collapsed = _unique_rows(t, scan, [m.scan, m.split])
    return Splits(t, {k: (m.values[raw[r]], r) for k, r in first.items()}, collapsed)


@dataclass
class TaskValues:
    label: np.ndarray
    """int8 per label row: 1, 0, -1 = censored."""
    days: np.ndarray | None
    """float64 days (NaN = empty) or None when the map gives no time column."""
    event: np.ndarray | None


@dataclass
class Labels:
    table: Table
    row_of: dict[str, int]
    """study id -> row in the file."""
    collapsed: int
    tasks: dict[str, TaskValues]


def read_labels(path: Path, cmap: CohortMap) -> Labels:
    m = cmap.labels
    t = read_table(path, m.delimiter)
    scan = _strings(t, m.scan, "study id")
    meaning = {**{v: 1 for v in m.true_values}, **{v: 0 for v in m.false_values}}
    meaning.update({v: -1 for v in m.censored_values})
    cols = [m.scan]
    tasks = {}
    for name, tc in m.tasks.items():
        raw = t.column(tc.label, f"label of task {name}").to_pylist()
        lab = np.empty(len(raw), np.int8)
        for row, v in enumerate(raw):
            code = meaning.get(v)
            if code is None:
                raise InputError(
                    f"{t.path}: line {line_of(row)}, column {tc.label!r}: unexpected label value {v!r} "
                    f"(expected one of {sorted(meaning)}: labels.true_values / false_values / censored_values)"
                )
            lab[row] = code
        cols.append(tc.label)
        days = event = None
        if tc.time is not None:
            cols += [tc.time, tc.censored]
            tcol = t.column(tc.time, f"time to event of task {name}")
            try:
                val = pc.cast(pc.utf8_trim_whitespace(tcol), pa.float64()).to_numpy(zero_copy_only=False)
            except pa.ArrowInvalid:
                row = next(i for i, v in enumerate(tcol.to_pylist()) if v is not None and not _is_float(v))
                raise InputError(
                    f"{t.path}: line {line_of(row)}, column {tc.time!r}: {tcol[row].as_py()!r} is not a number"
                ) from None
            days = np.where(np.isnan(val), np.nan, val * TIME_UNITS[m.time_unit])
            if (days < 0).any():
                row = int(np.flatnonzero(days < 0)[0])
                raise InputError(f"{t.path}: line {line_of(row)}, column {tc.time!r}: negative time {val[row]}")
            cens = t.column(tc.censored, f"censoring flag of task {name}").to_pylist()
            event = np.zeros(len(cens), np.int8)
            for row, v in enumerate(cens):
                if v is None:
                    event[row] = -1
                    continue
                b = m.boolean_values.get(v)
                if b is None:
                    raise InputError(
                        f"{t.path}: line {line_of(row)}, column {tc.censored!r}: unexpected value {v!r} "
                        f"(labels.boolean_values lists {sorted(m.boolean_values)})"
                    )
                event[row] = 0 if b else 1
            days = np.where(event < 0, np.nan, days)
        tasks[name] = TaskValues(lab, days, event)
    first, collapsed = _unique_rows(t, scan, list(dict.fromkeys(cols)))
    return Labels(t, first, collapsed, tasks)


def _is_float(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True
