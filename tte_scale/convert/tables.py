"""Delimited text tables (a release's CSV/TSV files) read as strings, with errors that name the
file, the line and the column.

Every column is read as a string and converted by the caller, so a value is never guessed into a
type (``TRUE`` into a boolean, an id with leading zeros into an integer). An empty field is null.
Line numbers are those of the file: the header is line 1, the first data row line 2.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tte_scale.errors import InputError

__all__ = [
    "Table",
    "read_table",
    "find_file",
    "line_of",
    "parse_int64",
    "parse_timestamps",
    "TIME_MIN",
    "TIME_MAX",
]

TIME_MIN = np.datetime64("1900-01-01", "us")
TIME_MAX = np.datetime64("2100-01-01", "us")
"""Plausible dates: a prediction time outside [1900, 2100) is refused, not carried along."""


def line_of(row: int) -> int:
    """File line of 0-based data row ``row`` (the header is line 1)."""
    return int(row) + 2


class Table:
    """One text table in memory: its path, its arrow table (all strings) and column checks."""

    def __init__(self, path: Path, table: pa.Table):
        self.path = path
        self.table = table

    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    def column(self, name: str, what: str) -> pa.Array:
        """The column ``name`` (what it should hold is named in the error if it is missing)."""
        if name not in self.table.column_names:
            close = [c for c in self.table.column_names if c.lower() == name.lower()]
            hint = f" (a column {close[0]!r} exists: the names are case-sensitive)" if close else ""
            raise InputError(
                f"{self.path}: no column {name!r} ({what}){hint}; columns: {', '.join(self.table.column_names)}"
            )
        return self.table.column(name).combine_chunks()

    def require_values(self, name: str, what: str) -> pa.Array:
        """``column`` with no empty field allowed."""
        col = self.column(name, what)
        if col.null_count:
            row = int(np.flatnonzero(pc.is_null(col).to_numpy(zero_copy_only=False))[0])
            raise InputError(f"{self.path}: line {line_of(row)}, column {name!r}: empty ({what})")
        return col


def _delimiter(path: Path, delimiter: str | None) -> str:
    if delimiter:
        return delimiter
    name = path.name.lower().removesuffix(".gz")
    return "\t" if name.endswith((".tsv", ".tab", ".txt")) else ","


def read_table(path: Path, delimiter: str | None = None) -> Table:
    """Read a CSV (``,``) or TSV (``\\t``, by extension or ``delimiter``) with every column a string."""
    import pyarrow.csv as pacsv

    if not path.is_file():
        raise InputError(f"{path}: file not found")
    delim = _delimiter(path, delimiter)
    try:
        with pacsv.open_csv(path, parse_options=pacsv.ParseOptions(delimiter=delim)) as reader:
            names = reader.schema.names
        convert = pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names}, strings_can_be_null=True, null_values=[""]
        )
        table = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delim), convert_options=convert)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(
            f"{path}: cannot read as a {'tab' if delim == chr(9) else repr(delim)}-separated table: {exc}"
        ) from None
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"{path}: duplicate column names {dup}")
    return Table(path, table)


def find_file(root: Path, pattern: str, what: str) -> Path:
    """The one file under ``root`` matching the glob ``pattern`` (release files carry a date)."""
    p = Path(pattern)
    if p.is_absolute():
        matches = [p] if p.is_file() else sorted(p.parent.glob(p.name))
    else:
        matches = sorted(x for x in root.glob(pattern) if x.is_file())
    if not matches:
        raise InputError(f"{root}: no file matches {pattern!r} ({what})")
    if len(matches) > 1:
        names = ", ".join(m.name for m in matches[:5])
        raise InputError(f"{root}: {len(matches)} files match {pattern!r} ({what}): {names}; name one in the map")
    return matches[0]


def parse_int64(table: Table, name: str, what: str) -> np.ndarray:
    """An integer id column (no empty field) as int64; a non-integer value names its line."""
    col = table.require_values(name, what)
    try:
        return pc.cast(pc.utf8_trim_whitespace(col), pa.int64()).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        for i, v in enumerate(col.to_pylist()):
            try:
                int(v)
            except ValueError:
                raise InputError(
                    f"{table.path}: line {line_of(i)}, column {name!r}: {v!r} is not an integer ({what})"
                ) from None
        raise


def parse_timestamps(table: Table, name: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """ISO dates/times (``2016-03-04 10:22:00``, ``2016-03-04T10:22:00``, ``2016-03-04``), naive,
    as (datetime64[us] with NaT where empty, valid mask). A value that is not such a time, or lies
    outside [1900, 2100), names its line."""
    col = pc.utf8_trim_whitespace(table.column(name, what))
    try:
        ts = pc.cast(col, pa.timestamp("us"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        for i, v in enumerate(col.to_pylist()):
            if v is None:
                continue
            try:
                parsed = datetime.fromisoformat(v)
            except ValueError:
                raise InputError(
                    f"{table.path}: line {line_of(i)}, column {name!r}: {v!r} is not a date/time ({what}; "
                    "expected YYYY-MM-DD[ HH:MM[:SS]])"
                ) from None
            if parsed.tzinfo is not None:
                raise InputError(
                    f"{table.path}: line {line_of(i)}, column {name!r}: {v!r} has a time zone; "
                    "prediction times are local, timezone-naive times like the EHR's"
                ) from None
        raise
    valid = pc.is_valid(ts).to_numpy(zero_copy_only=False)
    us = ts.to_numpy(zero_copy_only=False).astype("datetime64[us]")
    bad = valid & ((us < TIME_MIN) | (us >= TIME_MAX))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{table.path}: line {line_of(i)}, column {name!r}: {col[i].as_py()!r} is outside 1900-2099 ({what}); "
            "refusing an implausible date"
        )
    return us, valid
