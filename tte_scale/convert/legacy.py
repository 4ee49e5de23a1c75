"""MEDS generations: which one a file is, and its rows as flat current-MEDS columns (pure functions).

The schema history (github.com/Medical-Event-Data-Standard/meds, ``src/meds/schema.py`` at tags
0.0.1, 0.2.0, 0.3.0, 0.3.3 and the 0.4 package):

| generation | rows | subject | designated birth / death codes |
|---|---|---|---|
| ``0.1`` (meds 0.0.x-0.1.x) | one per patient: ``patient_id``, ``static_measurements`` list<measurement>, ``events`` list<{``time``, ``measurements`` list<measurement>}>; measurement = {``code``, ``text_value``, ``numeric_value``, ``datetime_value``, ``metadata``} | ``patient_id`` | ``SNOMED/184099003`` / ``SNOMED/419620001`` |
| ``0.2`` (meds 0.2.x) | one per patient: ``patient_id``, ``events`` list<{``time`` (null = static), ``code``, ``text_value``, ``numeric_value``, ``datetime_value``, ``properties``}> | ``patient_id`` | same |
| ``0.3`` (meds 0.3.0-0.3.2) | one per event: ``patient_id``, ``time``, ``code``, ``numeric_value``, extra columns | ``patient_id`` | ``MEDS_BIRTH`` / ``MEDS_DEATH`` |
| ``current`` (meds 0.3.3+, 0.4) | one per event: ``subject_id``, ``time``, ``code``, ``numeric_value``, ``text_value``, extra columns | ``subject_id`` | ``MEDS_BIRTH`` / ``MEDS_DEATH`` |

``flatten`` turns any of them into one row per measurement with the current column names; static
measurements get a null ``time``. A struct ``metadata`` / ``properties`` becomes one column per
field, a null-typed one is dropped, any other is kept as an extra column. ``datetime_value`` is
kept as an extra column (current MEDS has no such core column). Types are left to the caller.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from tte_scale.errors import InputError

__all__ = ["GENERATIONS", "LEGACY_CODES", "detect", "flatten", "rename_legacy_codes"]

GENERATIONS = {
    "0.1": "MEDS 0.1 (nested: patient_id, static_measurements, events[time, measurements[...]])",
    "0.2": "MEDS 0.2 (nested: patient_id, events[time, code, text_value, numeric_value, ...])",
    "0.3": "MEDS 0.3.0-0.3.2 (flat rows with patient_id)",
    "current": "MEDS 0.3.3+ / 0.4 (flat rows with subject_id)",
}

LEGACY_CODES = {"SNOMED/184099003": "MEDS_BIRTH", "SNOMED/419620001": "MEDS_DEATH"}
"""The birth and death codes MEDS 0.1/0.2 designated, and the codes MEDS designates now."""

CORE = ("subject_id", "time", "code", "numeric_value", "text_value")


def _list_of_struct(typ: pa.DataType) -> pa.StructType | None:
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        if pa.types.is_struct(typ.value_type):
            return typ.value_type
    return None


def detect(schema: pa.Schema, path: Path) -> str:
    """The generation of a file from its schema; an unknown schema names the file and its columns."""
    names = set(schema.names)
    if "patient_id" in names and "events" in names:
        event = _list_of_struct(schema.field("events").type)
        if event is not None and "measurements" in event.names:
            return "0.1"
        if event is not None and "code" in event.names:
            return "0.2"
    if {"time", "code"} <= names and "events" not in names:
        if "subject_id" in names:
            return "current"
        if "patient_id" in names:
            return "0.3"
    raise InputError(
        f"{path}: unknown MEDS schema (columns {schema.names}); expected one of: " + "; ".join(GENERATIONS.values())
    )


def _field(arr: pa.StructArray, name: str, length: int, typ: pa.DataType) -> pa.Array:
    if arr.type.get_field_index(name) < 0:
        return pa.nulls(length, typ)
    return pc.struct_field(arr, name)


def _measurements(meas: pa.StructArray, path: Path, props: str) -> dict[str, pa.Array]:
    """Columns of a struct array of measurements (code, values and the flattened ``props``)."""
    n = len(meas)
    cols = {
        "code": _field(meas, "code", n, pa.string()),
        "numeric_value": _field(meas, "numeric_value", n, pa.float32()),
        "text_value": _field(meas, "text_value", n, pa.string()),
    }
    if meas.type.get_field_index("datetime_value") >= 0:
        cols["datetime_value"] = pc.struct_field(meas, "datetime_value")
    if meas.type.get_field_index(props) >= 0:
        extra = pc.struct_field(meas, props)
        if pa.types.is_struct(extra.type):
            for f in extra.type:
                if f.name in cols or f.name in CORE:
                    raise InputError(f"{path}: field {props}.{f.name} would overwrite the column {f.name!r}")
                cols[f.name] = pc.struct_field(extra, f.name)
        elif not pa.types.is_null(extra.type):
            cols[props] = extra
    return cols


def _concat(parts: list[dict[str, pa.Array]]) -> pa.Table:
    tables = [pa.table(p) for p in parts]
    return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]


def flatten(table: pa.Table, generation: str, path: Path) -> pa.Table:
    """Rows of any generation -> one row per measurement: ``subject_id``, ``time``, ``code``,
    ``numeric_value``, ``text_value`` and extra columns (static rows first within a file part)."""
    if generation == "current":
        return table
    if generation == "0.3":
        return table.rename_columns(["subject_id" if n == "patient_id" else n for n in table.column_names])
    pid = table.column("patient_id").combine_chunks()
    events = table.column("events").combine_chunks()
    ev = pc.list_flatten(events)
    ev_patient = pc.list_parent_indices(events)
    parts = []
    if generation == "0.1":
        if "static_measurements" in table.column_names:
            static = table.column("static_measurements").combine_chunks()
            sm = pc.list_flatten(static)
            cols = _measurements(sm, path, "metadata")
            parts.append(
                {
                    "subject_id": pid.take(pc.list_parent_indices(static)),
                    "time": pa.nulls(len(sm), pa.timestamp("us")),
                    **cols,
                }
            )
        meas_lists = pc.struct_field(ev, "measurements")
        meas = pc.list_flatten(meas_lists)
        meas_event = pc.list_parent_indices(meas_lists)
        cols = _measurements(meas, path, "metadata")
        parts.append(
            {
                "subject_id": pid.take(ev_patient.take(meas_event)),
                "time": pc.struct_field(ev, "time").take(meas_event),
                **cols,
            }
        )
    else:  # 0.2: each event is one measurement
        parts.append(
            {
                "subject_id": pid.take(ev_patient),
                "time": pc.struct_field(ev, "time"),
                **_measurements(ev, path, "properties"),
            }
        )
    return _concat(parts)


def rename_legacy_codes(code: pa.Array) -> tuple[pa.Array, dict[str, int]]:
    """MEDS 0.1/0.2's designated birth/death codes -> ``MEDS_BIRTH``/``MEDS_DEATH``, with counts."""
    counts = {}
    for old, new in LEGACY_CODES.items():
        hit = pc.equal(code, old)
        n = pc.sum(hit).as_py() or 0
        if n:
            counts[f"{old} -> {new}"] = n
            code = pc.if_else(hit, new, code)
    return code, counts
