"""MEDS input: list and validate the event shards, read one shard at a time, read scans/splits.

Any MEDS-conformant dataset is accepted: ``data/**/*.parquet`` with at least ``subject_id``
(integer), ``time`` (timestamp, null for static facts) and ``code`` (string or dictionary);
rows may be in any order inside a file. A subject must live in exactly one file (MEDS
shards by subject); that is what lets us hold one shard in memory at a time.

Legend: E events of a shard, S subjects of a shard, N scans.
Times are int64 microseconds since the epoch (timezone-naive) everywhere in this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tte_scale.errors import InputError
from tte_scale.formats.meds import SPLITS

__all__ = [
    "MedsDataset",
    "ShardEvents",
    "Scans",
    "open_meds",
    "read_shard",
    "read_splits",
    "read_parents",
    "read_scans",
    "unknown_splits",
    "SPLITS",
]

EVENT_COLUMNS = ("subject_id", "time", "code")


def _rows(mask: np.ndarray, limit: int = 5) -> str:
    idx = np.flatnonzero(mask)
    more = f" (+{len(idx) - limit} more)" if len(idx) > limit else ""
    return f"rows {idx[:limit].tolist()}{more}"


def _check_int(path: Path, name: str, typ: pa.DataType) -> None:
    if not pa.types.is_integer(typ):
        raise InputError(f"{path}: column '{name}' must be an integer type, got {typ}")


def _check_ts(path: Path, name: str, typ: pa.DataType) -> None:
    if not pa.types.is_timestamp(typ):
        raise InputError(f"{path}: column '{name}' must be a timestamp, got {typ}")
    if typ.tz is not None:
        raise InputError(f"{path}: column '{name}' must be timezone-naive, got {typ}")


def _check_str(path: Path, name: str, typ: pa.DataType) -> None:
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
        raise InputError(f"{path}: column '{name}' must be a string, got {typ}")


def _check_columns(path: Path, schema: pa.Schema, required: dict) -> None:
    missing = [c for c in required if c not in schema.names]
    if missing:
        raise InputError(f"{path}: missing required column(s) {missing}; has {schema.names}")
    for name, checker in required.items():
        checker(path, name, schema.field(name).type)


_EVENT_CHECKS = {"subject_id": _check_int, "time": _check_ts, "code": _check_str}


@dataclass(frozen=True)
class MedsDataset:
    root: Path
    data_files: list[Path]
    splits_path: Path
    codes_path: Path | None


def open_meds(root: str | Path) -> MedsDataset:
    """List the event shards (sorted, deterministic order) and check every schema up front."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: MEDS folder not found")
    files = sorted((root / "data").rglob("*.parquet"))
    if not files:
        raise InputError(f"{root / 'data'}: empty cohort: no MEDS event files (data/**/*.parquet)")
    for f in files:
        try:
            schema = pq.read_schema(f)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{f}: not a readable parquet file: {exc}") from None
        _check_columns(f, schema, _EVENT_CHECKS)
    splits = root / "metadata" / "subject_splits.parquet"
    if not splits.is_file():
        raise InputError(f"{splits}: not found; the task vocabulary is chosen on the train split only")
    codes = root / "metadata" / "codes.parquet"
    return MedsDataset(root=root, data_files=files, splits_path=splits, codes_path=codes if codes.is_file() else None)


def _timestamps_us(path: Path, name: str, col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(int64 microseconds with nulls as 0, valid mask); refuses to drop sub-microsecond digits."""
    try:
        col = pc.cast(col, pa.timestamp("us"))
    except pa.ArrowInvalid as exc:
        raise InputError(f"{path}: column '{name}' cannot be represented in microseconds: {exc}") from None
    valid = pc.is_valid(col).to_numpy(zero_copy_only=False)
    us = pc.cast(col, pa.int64())
    us = (pc.fill_null(us, 0) if us.null_count else us).to_numpy(zero_copy_only=False)
    return us.astype(np.int64, copy=False), valid


@dataclass
class ShardEvents:
    """One MEDS file in memory, codes as indices into the shard's own code dictionary."""

    path: Path
    subject_ids: np.ndarray
    """int64 [S], sorted unique subjects of the file."""
    subj_E: np.ndarray
    """int32 [E], index into ``subject_ids``."""
    time_E: np.ndarray
    """int64 [E], microseconds; meaningless where ``timed_E`` is False."""
    timed_E: np.ndarray
    """bool [E], False for static rows (null time)."""
    code_E: np.ndarray
    """int32 [E], index into ``codes``."""
    codes: list[str]
    """The file's distinct codes."""

    @property
    def num_events(self) -> int:
        return len(self.subj_E)


def _subject_index(sid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique subject ids, int32 [E] index into them)."""
    if len(sid) and (sid[1:] >= sid[:-1]).all():
        # MEDS shards are usually sorted by subject: runs, no hashing.
        starts = np.flatnonzero(sid[1:] != sid[:-1]) + 1
        uniq = sid[np.concatenate([[0], starts])]
        lengths = np.diff(np.concatenate([[0], starts, [len(sid)]]))
        return uniq, np.repeat(np.arange(len(uniq), dtype=np.int32), lengths)
    lo, hi = (int(sid.min()), int(sid.max())) if len(sid) else (0, -1)
    if hi - lo <= 4 * len(sid) + 1024:
        # Dense integer ids (the usual case): a lookup table instead of hashing.
        from tte_scale.ehr.kernels import dense_subject_index

        sid = sid.view()
        sid.flags.writeable = False  # one argument type for the compiled kernel (see ``_frozen``)
        return dense_subject_index(sid, lo, hi)
    enc = pc.dictionary_encode(pa.array(sid))
    uniq = enc.dictionary.to_numpy()
    order = np.argsort(uniq, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return uniq[order], rank[enc.indices.to_numpy(zero_copy_only=False)].astype(np.int32)


def read_shard(path: Path) -> ShardEvents:
    """Read one event file (three columns only; ``code`` kept dictionary-encoded)."""
    try:
        # One thread: the columns are few and a shard is small; Arrow's thread pool costs more
        # CPU than it saves here (and the caller may run one process per core). Large batches:
        # one code dictionary per row group, not one per 64k rows (each must be unified).
        pf = pq.ParquetFile(path, read_dictionary=["code"])
        cols = [c for c in EVENT_COLUMNS if c in pf.schema_arrow.names]  # a missing one: error below
        schema = pa.schema([pf.schema_arrow.field(c) for c in cols])
        tab = pa.Table.from_batches(
            list(pf.iter_batches(batch_size=1 << 24, columns=cols, use_threads=False)), schema=schema
        )
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: cannot read events: {exc}") from None
    _check_columns(path, tab.schema, _EVENT_CHECKS)
    for name in ("subject_id", "code"):
        if tab.column(name).null_count:
            mask = pc.is_null(tab.column(name)).to_numpy(zero_copy_only=False)
            raise InputError(f"{path}: null '{name}' in {_rows(mask)}")
    sid = tab.column("subject_id").combine_chunks()
    if sid.type != pa.int64():
        try:
            sid = pc.cast(sid, pa.int64())
        except pa.ArrowInvalid as exc:
            raise InputError(f"{path}: 'subject_id' does not fit int64: {exc}") from None
    uniq, subj_E = _subject_index(sid.to_numpy(zero_copy_only=False))
    time_E, timed_E = _timestamps_us(path, "time", tab.column("time"))
    code_col = tab.column("code")
    if len(code_col) == 0:
        return _frozen(ShardEvents(path, uniq.astype(np.int64), subj_E, time_E, timed_E, np.zeros(0, np.int32), []))
    if not pa.types.is_dictionary(code_col.type):
        code_col = pc.dictionary_encode(code_col)
    code_col = pa.chunked_array(code_col.chunks if isinstance(code_col, pa.ChunkedArray) else [code_col])
    if code_col.num_chunks > 1:
        code_col = pa.table({"c": code_col}).unify_dictionaries().column("c")
    codes = code_col.chunk(0).dictionary.cast(pa.string()).to_pylist()
    code_E = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in code_col.chunks]).astype(
        np.int32, copy=False
    )
    return _frozen(ShardEvents(path, uniq.astype(np.int64), subj_E, time_E, timed_E, code_E, codes))


def _frozen(ev: ShardEvents) -> ShardEvents:
    """Read-only views of the event arrays. Arrow hands out read-only or writable arrays
    depending on the file (chunks, nulls); the compiled kernels are specialised (and cached)
    per argument type, writability included, so one fixed type avoids a surprise compile."""
    for name in ("subj_E", "time_E", "timed_E", "code_E"):
        view = getattr(ev, name).view()
        view.flags.writeable = False
        setattr(ev, name, view)
    return ev


"""The split names the pipeline uses (MEDS's own): tasks and bins are chosen on ``train``."""


def _read_parquet(path: Path, what: str) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: not a readable parquet file ({what}): {exc}") from None


def read_splits(ds: MedsDataset) -> dict[int, str]:
    """``subject_id -> split`` from ``metadata/subject_splits.parquet``."""
    path = ds.splits_path
    tab = _read_parquet(path, "subject splits")
    _check_columns(path, tab.schema, {"subject_id": _check_int, "split": _check_str})
    sid = tab.column("subject_id").to_numpy(zero_copy_only=False)
    split = tab.column("split").cast(pa.string()).to_pylist()
    if tab.column("subject_id").null_count or any(s is None for s in split):
        bad = pc.or_(pc.is_null(tab.column("subject_id")), pc.is_null(tab.column("split")))
        raise InputError(f"{path}: null 'subject_id' or 'split' in {_rows(bad.to_numpy(zero_copy_only=False))}")
    uniq, counts = np.unique(sid, return_counts=True)
    if (counts > 1).any():
        raise InputError(f"{path}: subjects listed more than once: {uniq[counts > 1][:5].tolist()}")
    return dict(zip(sid.astype(np.int64).tolist(), split))


def unknown_splits(splits: dict[int, str]) -> dict[str, int]:
    """Split names other than :data:`SPLITS` -> number of subjects (empty when all are known)."""
    out: dict[str, int] = {}
    for name in splits.values():
        if name not in SPLITS:
            out[name] = out.get(name, 0) + 1
    return out


def read_parents(ds: MedsDataset) -> dict[str, list[str]]:
    """``code -> parent codes`` from ``metadata/codes.parquet``.

    Only called when the ontology is used: a missing file or column, or one of another type,
    is an error (without it the vocabulary would silently change)."""
    path = ds.root / "metadata" / "codes.parquet"
    hint = "ontology expansion needs it; pass --no-ontology (ontology: false) to build without"
    if ds.codes_path is None:
        raise InputError(f"{path}: not found; {hint}")
    tab = _read_parquet(path, "codes metadata")
    missing = [c for c in ("code", "parent_codes") if c not in tab.column_names]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; has {tab.column_names}; {hint}")
    if tab.num_rows == 0:
        return {}
    _check_str(path, "code", tab.schema.field("code").type)
    typ = tab.schema.field("parent_codes").type
    vt = getattr(typ, "value_type", None)  # list<null>: every list empty (no code has a parent)
    if not (pa.types.is_list(typ) or pa.types.is_large_list(typ)) or not (
        pa.types.is_string(vt) or pa.types.is_large_string(vt) or pa.types.is_null(vt)
    ):
        raise InputError(f"{path}: column 'parent_codes' must be a list of strings, got {typ}")
    out: dict[str, list[str]] = {}
    for code, parents in zip(tab.column("code").to_pylist(), tab.column("parent_codes").to_pylist()):
        if code is not None and parents:
            out.setdefault(code, []).extend(p for p in parents if p and p != code)
    return out


@dataclass
class Scans:
    """The scans table sorted by (subject_id, prediction_time, scan_id)."""

    path: Path
    subject_id: np.ndarray
    """int64 [N]."""
    scan_id: np.ndarray
    """object [N] of str."""
    pred_us: np.ndarray
    """int64 [N] prediction time, microseconds."""

    def __len__(self) -> int:
        return len(self.scan_id)


def read_scans(path: str | Path) -> Scans:
    """Read and validate ``scans.parquet``; errors name the offending rows."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: scans table not found")
    try:
        tab = pq.read_table(path, columns=None)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: cannot read scans: {exc}") from None
    _check_columns(path, tab.schema, {"subject_id": _check_int, "scan_id": _check_str, "prediction_time": _check_ts})
    if tab.num_rows == 0:
        raise InputError(f"{path}: empty scans table")
    for name in ("subject_id", "scan_id", "prediction_time"):
        if tab.column(name).null_count:
            mask = pc.is_null(tab.column(name)).to_numpy(zero_copy_only=False)
            raise InputError(f"{path}: null '{name}' in {_rows(mask)}")
    sid = pc.cast(tab.column("subject_id"), pa.int64()).to_numpy()
    scan_id = np.array(tab.column("scan_id").cast(pa.string()).to_pylist(), dtype=object)
    pred, _ = _timestamps_us(path, "prediction_time", tab.column("prediction_time"))
    uniq, inv, counts = np.unique(scan_id.astype(str), return_inverse=True, return_counts=True)
    if (counts > 1).any():
        dup = counts[inv] > 1
        raise InputError(f"{path}: duplicate scan_id {uniq[counts > 1][:5].tolist()} in {_rows(dup)}")
    order = np.lexsort((scan_id.astype(str), pred, sid))
    return Scans(path, sid[order], scan_id[order], pred[order])
