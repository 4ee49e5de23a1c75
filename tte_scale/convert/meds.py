"""`tte-scale convert meds`: any MEDS generation -> current MEDS (0.4), one input file at a time.

For each input data file (``data/**/*.parquet``, or ``**/*.parquet`` when the folder has no
``data/``): detect its generation (``legacy.detect``), flatten it to one row per measurement,
give the columns their current types, sort by (``subject_id``, ``time``) with static rows first,
check it with ``meds.DataSchema`` and write it under the same relative path in ``data/``. Memory
is bounded by one input file and its converted copy. Then ``metadata/codes.parquet`` (every code
of the data, with the input's descriptions and parent codes where it had them; checked with
``meds.CodeMetadataSchema``), ``metadata/subject_splits.parquet`` when a split source is given or
found (``meds.SubjectSplitSchema``), ``metadata/dataset.json`` (``meds.DatasetMetadataSchema``) and
``metadata/convert.json`` (what was converted from what, with counts).

Refused with one line naming the file (and row or subject): an unknown schema, files of different
generations, a null subject or code, a time zone or sub-microsecond times, a subject in two files,
a split file with an unknown split name or a subject in two splits.
"""

from __future__ import annotations

import json
import time as _time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tte_scale.convert.legacy import GENERATIONS, detect, flatten, rename_legacy_codes
from tte_scale.convert.staging import StagedOutput
from tte_scale.errors import InputError
from tte_scale.formats.meds import SPLITS

__all__ = ["convert_meds", "read_split_source", "SPLITS", "data_files"]

COMMAND = "convert meds"
"""The split names `tte-scale labels` and `eval` use (MEDS's sentinel names)."""


def _meds():
    try:
        import meds
    except ImportError as exc:  # pragma: no cover - a dependency of tte-scale
        raise InputError(f"the `meds` package is needed to validate MEDS output: {exc}") from None
    return meds


def _schema_error(path: Path, what: str, exc: Exception) -> InputError:
    return InputError(f"{path}: not valid {what} after conversion: {exc}")


def data_files(root: Path, skip: tuple[Path, ...] = ()) -> list[Path]:
    """The data files of a MEDS folder, in sorted (deterministic) order; files under ``skip``
    (this run's own output folders, when they lie inside the input) are not input."""
    base = root / "data" if (root / "data").is_dir() else root
    skip = tuple(p.resolve() for p in skip)
    files = sorted(
        p
        for p in base.rglob("*.parquet")
        if "metadata" not in p.relative_to(root).parts[:1] and not any(s in p.resolve().parents for s in skip)
    )
    if not files:
        raise InputError(f"{base}: no MEDS data files (*.parquet)")
    return files


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _where(path: Path, generation: str, table: pa.Table, row: int) -> str:
    """Name a row: a file row for flat generations, the patient for nested ones."""
    if generation in ("0.1", "0.2"):
        sid = table.column("subject_id")[row].as_py()
        return f"{path}: patient_id {sid}" if sid is not None else f"{path}: a patient with a null patient_id"
    return f"{path}: row {row}"


def _to_current(table: pa.Table, path: Path, generation: str) -> pa.Table:
    """Current MEDS column types, nulls checked, sorted by subject then time (static rows first)."""
    for name in ("subject_id", "code"):
        col = table.column(name)
        if col.null_count:
            row = _first(pc.is_null(col).to_numpy(zero_copy_only=False))
            raise InputError(f"{_where(path, generation, table, row)}: null {name!r}")
    sid = table.column("subject_id")
    if not pa.types.is_integer(sid.type):
        raise InputError(f"{path}: column 'subject_id'/'patient_id' must be an integer type, got {sid.type}")
    try:
        sid = pc.cast(sid, pa.int64())
    except pa.ArrowInvalid as exc:
        raise InputError(f"{path}: a subject id does not fit int64: {exc}") from None
    time = table.column("time")
    if pa.types.is_timestamp(time.type) and time.type.tz is not None:
        raise InputError(
            f"{path}: column 'time' has time zone {time.type.tz!r}; MEDS times are timezone-naive local times "
            "(convert them before, so no event moves across a day boundary unnoticed)"
        )
    if not (pa.types.is_timestamp(time.type) or pa.types.is_date(time.type) or pa.types.is_null(time.type)):
        raise InputError(f"{path}: column 'time' must be a timestamp or date, got {time.type}")
    try:
        time = pc.cast(time, pa.timestamp("us"))
    except pa.ArrowInvalid as exc:
        raise InputError(f"{path}: column 'time' has sub-microsecond digits MEDS cannot hold: {exc}") from None
    code = table.column("code")
    if pa.types.is_dictionary(code.type):
        code = pc.cast(code, code.type.value_type)
    if not (pa.types.is_string(code.type) or pa.types.is_large_string(code.type)):
        raise InputError(f"{path}: column 'code' must be a string, got {code.type}")
    code = pc.cast(code, pa.string())
    numeric = table.column("numeric_value") if "numeric_value" in table.column_names else None
    if numeric is None or pa.types.is_null(numeric.type):
        numeric = pa.nulls(table.num_rows, pa.float32())
    elif not (pa.types.is_floating(numeric.type) or pa.types.is_integer(numeric.type)):
        raise InputError(f"{path}: column 'numeric_value' must be numeric, got {numeric.type}")
    text = table.column("text_value") if "text_value" in table.column_names else None
    if text is None or pa.types.is_null(text.type):
        text = pa.nulls(table.num_rows, pa.large_string())
    elif not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
        raise InputError(f"{path}: column 'text_value' must be a string, got {text.type}")
    core = {
        "subject_id": sid,
        "time": time,
        "code": code,
        "numeric_value": pc.cast(numeric, pa.float32()),
        "text_value": pc.cast(text, pa.large_string()),
    }
    extras = {n: table.column(n) for n in table.column_names if n not in core and n != "patient_id"}
    out = pa.table({**core, **extras})
    # Static rows (null time) first within a subject; a stable sort keeps the input order of ties.
    t_us = pc.fill_null(pc.cast(out.column("time"), pa.int64()), np.iinfo(np.int64).min)
    keys = pa.table({"s": out.column("subject_id"), "t": t_us})
    order = pc.sort_indices(keys, sort_keys=[("s", "ascending"), ("t", "ascending")])
    return out.take(order)


def _validate(schema_cls, table: pa.Table, path: Path, what: str) -> None:
    try:
        schema_cls.validate(table)
    except Exception as exc:  # flexible_schema's SchemaValidationError / TableValidationError
        raise _schema_error(path, what, exc) from None


def read_split_source(path: Path) -> pa.Table:
    """A split file (``subject_id`` or ``patient_id``, ``split``) as a checked MEDS
    ``SubjectSplitSchema`` table: known split names only, one split per subject (identical
    repeated rows are collapsed), sorted by subject."""
    try:
        tab = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: cannot read the split file: {exc}") from None
    key = "subject_id" if "subject_id" in tab.column_names else "patient_id"
    for name in (key, "split"):
        if name not in tab.column_names:
            raise InputError(
                f"{path}: no column {name!r} (split files hold subject_id and split); has {tab.column_names}"
            )
        if tab.column(name).null_count:
            row = _first(pc.is_null(tab.column(name)).to_numpy(zero_copy_only=False))
            raise InputError(f"{path}: row {row}, column {name!r}: empty")
    if not pa.types.is_integer(tab.column(key).type):
        raise InputError(f"{path}: column {key!r} must be an integer type, got {tab.column(key).type}")
    sid = pc.cast(tab.column(key), pa.int64()).to_numpy()
    split = np.asarray(tab.column("split").cast(pa.string()).to_pylist(), dtype=object)
    bad = ~np.isin(split, SPLITS)
    if bad.any():
        row = _first(bad)
        raise InputError(
            f"{path}: row {row}, column 'split': {split[row]!r} is not a split name (expected one of {list(SPLITS)})"
        )
    order = np.lexsort((np.arange(len(sid)), sid))
    sid, split, rows = sid[order], split[order], order
    same = sid[1:] == sid[:-1]
    clash = same & (split[1:] != split[:-1])
    if clash.any():
        i = _first(clash)
        raise InputError(
            f"{path}: subject {sid[i]} is in two splits: {split[i]!r} (row {rows[i]}) and "
            f"{split[i + 1]!r} (row {rows[i + 1]})"
        )
    keep = np.concatenate([[True], ~same]) if len(sid) else np.zeros(0, bool)
    out = pa.table(
        {"subject_id": pa.array(sid[keep], pa.int64()), "split": pa.array(split[keep].tolist(), pa.string())}
    )
    _validate(_meds().SubjectSplitSchema, out, path, "MEDS subject splits")
    return out


def _find_split_source(src: Path, splits: str | Path | None) -> Path | None:
    if splits is not None:
        p = Path(splits)
        if not p.is_file():
            raise InputError(f"--splits {p}: file not found")
        return p
    for name in ("subject_splits.parquet", "patient_splits.parquet"):
        p = src / "metadata" / name
        if p.is_file():
            return p
    return None


def read_code_metadata(path: Path) -> pa.Table:
    """A MEDS ``metadata/codes.parquet`` as it is; one line naming the file if it cannot be read or
    has no ``code`` column (the MEDS converter and the ontology converter both read it)."""
    try:
        tab = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: cannot read the code metadata: {exc}") from None
    if "code" not in tab.column_names:
        raise InputError(f"{path}: no column 'code'; has {tab.column_names}")
    return tab


def _input_codes(src: Path) -> tuple[pa.Table | None, int]:
    """The input's code metadata (``code``, ``description``, ``parent_codes``), one row per code,
    and how many codes had several rows (MEDS 0.3 tools wrote one per code modifier): they are
    merged, first description and the union of the parents, and the count is reported."""
    p = src / "metadata" / "codes.parquet"
    if not p.is_file():
        return None, 0
    tab = read_code_metadata(p)
    n = tab.num_rows
    codes = pc.cast(tab.column("code"), pa.string()).to_pylist()
    desc = (
        pc.cast(tab.column("description"), pa.string()).to_pylist() if "description" in tab.column_names else [None] * n
    )
    try:
        par = (
            pc.cast(tab.column("parent_codes"), pa.list_(pa.string())).to_pylist()
            if "parent_codes" in tab.column_names
            else [None] * n
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"{p}: column 'parent_codes' must be a list of strings: {exc}") from None
    merged: dict[str, list] = {}
    repeated = set()
    for c, d, ps in zip(codes, desc, par):
        if c is None:
            continue
        if c in merged:
            repeated.add(c)
            m = merged[c]
            m[0] = m[0] if m[0] is not None else d
            m[1] = sorted(set(m[1] or []) | set(ps or [])) or None
        else:
            merged[c] = [d, ps]
    keys = sorted(merged)
    table = pa.table(
        {
            "code": pa.array(keys, pa.string()),
            "description": pa.array([merged[k][0] for k in keys], pa.string()),
            "parent_codes": pa.array([merged[k][1] for k in keys], pa.list_(pa.string())),
        }
    )
    return table, len(repeated)


def codes_table(codes: list[str], known: pa.Table | None) -> pa.Table:
    """``metadata/codes.parquet``: every code of the data and every code the input's code
    metadata lists (ancestors the data never uses keep the ontology connected), sorted, with the
    known description and parents."""
    codes = sorted(set(codes) | (set(known.column("code").to_pylist()) if known is not None else set()))
    desc = pa.nulls(len(codes), pa.string())
    parents = pa.nulls(len(codes), pa.list_(pa.string()))
    if known is not None and len(codes):
        idx = pc.index_in(pa.array(codes, pa.string()), value_set=known.column("code"))
        if "description" in known.column_names:
            desc = known.column("description").take(idx)
        if "parent_codes" in known.column_names:
            parents = known.column("parent_codes").take(idx)
    return pa.table(
        {"code": pa.array(codes, pa.string()), "description": desc, "parent_codes": parents},
        schema=pa.schema(
            [("code", pa.string()), ("description", pa.string()), ("parent_codes", pa.list_(pa.string()))]
        ),
    )


def _dataset_json(src: Path, name: str | None, generation: str, extras: list[str]) -> dict:
    from tte_scale import __version__

    old = {}
    p = src / "metadata" / "dataset.json"
    if p.is_file():
        try:
            old = json.loads(p.read_text())
        except ValueError as exc:
            raise InputError(f"{p}: not valid JSON: {exc}") from None
    meta = {
        "dataset_name": name or old.get("dataset_name") or src.resolve().name,
        "etl_name": "tte-scale convert meds",
        "etl_version": __version__,
        "meds_version": _meds().__version__,
        "created_at": datetime.now(timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds"),
    }
    for key in ("dataset_version", "license", "location_uri", "description_uri"):
        if isinstance(old.get(key), str):
            meta[key] = old[key]
    if extras:
        meta["other_extension_columns"] = extras
    try:
        _meds().DatasetMetadataSchema.validate(meta)
    except Exception as exc:
        raise _schema_error(Path("metadata/dataset.json"), "MEDS dataset metadata", exc) from None
    return meta


def convert_meds(
    src: str | Path,
    out: str | Path,
    *,
    splits: str | Path | None = None,
    name: str | None = None,
    keep_legacy_codes: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Convert the MEDS folder ``src`` into a current MEDS folder ``out``; returns the summary."""
    from tqdm import tqdm

    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise InputError(f"{src}: MEDS folder not found")
    split_path = _find_split_source(src, splits)
    stage = StagedOutput(out, COMMAND, inputs=[src, split_path], overwrite=overwrite)
    files = data_files(src, skip=(stage.out, stage.tmp, stage.out.parent / f".{stage.out.name}.old"))
    gens = {}
    for f in files:
        try:
            gens[f] = detect(pq.read_schema(f), f)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{f}: not a readable parquet file: {exc}") from None
    first = files[0]
    other = next((f for f in files if gens[f] != gens[first]), None)
    if other is not None:
        raise InputError(
            f"{other}: {GENERATIONS[gens[other]]}, but {first} is {GENERATIONS[gens[first]]}; one dataset, one generation"
        )
    generation = gens[first]
    split_table = read_split_source(split_path) if split_path else None
    known_codes, repeated_codes = _input_codes(src)
    t0 = _time.perf_counter()
    codes: set[str] = set()
    subjects: list[np.ndarray] = []
    renamed: dict[str, int] = {}
    extras: dict[str, None] = {}
    rows = 0
    base = src / "data" if (src / "data").is_dir() else src
    with stage as tmp:
        bar = tqdm(files, desc="convert meds", unit="file", disable=not progress, dynamic_ncols=True)
        for f in bar:
            try:
                table = pq.read_table(f)
            except (pa.ArrowException, OSError) as exc:
                raise InputError(f"{f}: cannot read: {exc}") from None
            flat = flatten(table, generation, f)
            del table
            flat = _to_current(flat, f, generation)
            if generation in ("0.1", "0.2") and not keep_legacy_codes:
                code, counts = rename_legacy_codes(flat.column("code"))
                flat = flat.set_column(flat.schema.get_field_index("code"), "code", code)
                for k, v in counts.items():
                    renamed[k] = renamed.get(k, 0) + v
            _validate(_meds().DataSchema, flat, f, "MEDS data")
            dest = tmp / "data" / f.relative_to(base)
            dest.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(flat, dest)
            codes.update(pc.unique(flat.column("code")).to_pylist())
            subjects.append(np.unique(flat.column("subject_id").to_numpy()))
            extras.update(dict.fromkeys(n for n in flat.column_names[5:]))
            rows += flat.num_rows
            bar.set_postfix(rows=rows)
        _check_one_file_per_subject(files, subjects)
        all_subjects = np.unique(np.concatenate(subjects)) if subjects else np.zeros(0, np.int64)
        meta = tmp / "metadata"
        meta.mkdir()
        codes_tab = codes_table(list(codes), known_codes)
        _validate(_meds().CodeMetadataSchema, codes_tab, meta / "codes.parquet", "MEDS code metadata")
        pq.write_table(codes_tab, meta / "codes.parquet")
        split_report = None
        if split_table is not None:
            pq.write_table(split_table, meta / "subject_splits.parquet")
            split_report = _split_report(split_table, all_subjects, split_path)
        dataset = _dataset_json(src, name, generation, list(extras))
        (meta / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n")
        summary = {
            "input": str(src),
            "generation": generation,
            "generation_description": GENERATIONS[generation],
            "files": len(files),
            "rows": rows,
            "subjects": int(len(all_subjects)),
            "codes": len(codes),
            "metadata_codes_not_in_data": int(codes_tab.num_rows - len(codes)),
            "metadata_codes_with_several_rows_merged": repeated_codes,
            "legacy_codes_renamed": renamed,
            "extra_columns": list(extras),
            "splits": split_report,
            "seconds": round(_time.perf_counter() - t0, 2),
        }
        (meta / "convert.json").write_text(json.dumps(summary, indent=2) + "\n")
        stage.publish(generation=generation, input=str(src))
    return summary


def _check_one_file_per_subject(files: list[Path], subjects: list[np.ndarray]) -> None:
    if not subjects:
        return
    ids = np.concatenate(subjects)
    owner = np.repeat(np.arange(len(subjects)), [len(s) for s in subjects])
    order = np.argsort(ids, kind="stable")
    ids, owner = ids[order], owner[order]
    dup = np.flatnonzero(ids[1:] == ids[:-1])
    if len(dup):
        i = dup[0]
        raise InputError(
            f"{files[owner[i + 1]]}: subject {ids[i]} also appears in {files[owner[i]]}; "
            "a MEDS subject must live in one file"
        )


def _split_report(split_table: pa.Table, subjects: np.ndarray, path: Path) -> dict:
    sid = split_table.column("subject_id").to_numpy()
    split = np.asarray(split_table.column("split").to_pylist(), dtype=object)
    in_data = np.isin(sid, subjects)
    return {
        "source": str(path),
        "subjects": {s: int(((split == s) & in_data).sum()) for s in SPLITS},
        "split_subjects_without_data": int((~in_data).sum()),
        "data_subjects_without_split": int((~np.isin(subjects, sid)).sum()),
    }
