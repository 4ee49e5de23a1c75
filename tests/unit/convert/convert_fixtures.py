"""Small files in each input format the converters read, written by the tests themselves.

* ``write_meds(root, generation, rows, files)``: one MEDS dataset of generation ``0.1`` / ``0.2``
  (nested rows), ``0.3`` (flat, ``patient_id``) or ``current`` (flat, ``subject_id``) from the
  same canonical rows (``ROWS``), so every generation must convert to the same table.
* ``write_athena(root, concepts, ancestors, relationships)``: an Athena download (tab-separated,
  no quoting, Athena's column names).
* ``write_release(root, studies)``: an INSPECT-shaped release: ``study_mapping_20250611.tsv``,
  ``splits_20250611.tsv``, ``labels_20250611.tsv`` and ``CTPA/<image_id>.nii.gz``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

T = datetime(2020, 1, 1)

# subject, time (None = static), code, numeric_value, text_value, unit (an extra column)
ROWS = [
    (1, None, "Gender/F", None, None, None),
    (1, datetime(1960, 5, 1), "SNOMED/184099003", None, None, None),
    (1, datetime(2019, 3, 1, 8), "ICD10CM/I26.99", None, None, None),
    (1, datetime(2019, 3, 1, 8), "LOINC/2160-0", 1.25, None, "mg/dL"),
    (1, datetime(2019, 6, 1), "NOTE/x", None, "free text", None),
    (1, datetime(2020, 2, 1), "SNOMED/419620001", None, None, None),
    (2, None, "Gender/M", None, None, None),
    (2, datetime(2018, 1, 2), "ICD10CM/I27.20", None, None, None),
    (2, datetime(2018, 1, 3, 12, 30), "LOINC/2160-0", 0.9, None, "mg/dL"),
    (3, datetime(2017, 7, 7), "CUSTOM/7", 3.0, None, None),
]


# The release's label column of each task in configs/tasks/inspect.yaml (its README's table).
COLUMN_OF = {
    "pe": "pe_positive_nlp",
    "ph_12m": "12_month_PH",
    "mortality_1m": "1_month_mortality",
    "mortality_6m": "6_month_mortality",
    "mortality_12m": "12_month_mortality",
    "readmission_1m": "1_month_readmission",
    "readmission_6m": "6_month_readmission",
    "readmission_12m": "12_month_readmission",
}


def rows_by_subject(rows=ROWS) -> dict[int, list[tuple]]:
    out: dict[int, list[tuple]] = {}
    for r in rows:
        out.setdefault(r[0], []).append(r)
    return out


_UNIT = pa.struct([("unit", pa.string())])
_MEAS = pa.struct(
    [
        ("code", pa.string()),
        ("text_value", pa.string()),
        ("numeric_value", pa.float32()),
        ("datetime_value", pa.timestamp("us")),
        ("metadata", _UNIT),
    ]
)
SCHEMA_01 = pa.schema(
    [
        ("patient_id", pa.int64()),
        ("static_measurements", pa.list_(_MEAS)),
        ("events", pa.list_(pa.struct([("time", pa.timestamp("us")), ("measurements", pa.list_(_MEAS))]))),
    ]
)
_EVENT_02 = pa.struct(
    [
        ("time", pa.timestamp("us")),
        ("code", pa.string()),
        ("text_value", pa.string()),
        ("numeric_value", pa.float32()),
        ("datetime_value", pa.timestamp("us")),
        ("properties", _UNIT),
    ]
)
SCHEMA_02 = pa.schema([("patient_id", pa.int64()), ("events", pa.list_(_EVENT_02))])


def _meas(r):
    return {"code": r[2], "text_value": r[4], "numeric_value": r[3], "datetime_value": None, "metadata": {"unit": r[5]}}


def _table(generation: str, rows: list[tuple]) -> pa.Table:
    if generation == "0.1":
        recs = []
        for sid, rs in rows_by_subject(rows).items():
            events: dict = {}
            for r in rs:
                if r[1] is not None:
                    events.setdefault(r[1], []).append(_meas(r))
            recs.append(
                {
                    "patient_id": sid,
                    "static_measurements": [_meas(r) for r in rs if r[1] is None],
                    "events": [{"time": t, "measurements": m} for t, m in events.items()],
                }
            )
        return pa.Table.from_pylist(recs, schema=SCHEMA_01)
    if generation == "0.2":
        recs = []
        for sid, rs in rows_by_subject(rows).items():
            ev = [
                {
                    "time": r[1],
                    "code": r[2],
                    "text_value": r[4],
                    "numeric_value": r[3],
                    "datetime_value": None,
                    "properties": {"unit": r[5]},
                }
                for r in rs
            ]
            recs.append({"patient_id": sid, "events": ev})
        return pa.Table.from_pylist(recs, schema=SCHEMA_02)
    key = "patient_id" if generation == "0.3" else "subject_id"
    cols = {
        key: pa.array([r[0] for r in rows], pa.int64()),
        "time": pa.array([r[1] for r in rows], pa.timestamp("us")),
        "code": pa.array([r[2] for r in rows], pa.string()),
        "numeric_value": pa.array([r[3] for r in rows], pa.float32()),
        "unit": pa.array([r[5] for r in rows], pa.string()),
    }
    if generation == "current":
        cols["text_value"] = pa.array([r[4] for r in rows], pa.large_string())
    else:  # MEDS 0.3 had no text_value: it lived in custom columns
        cols["text_value"] = pa.array([r[4] for r in rows], pa.string())
    return pa.table(cols)


def write_meds(root: Path, generation: str, rows=ROWS, files: dict[str, list[int]] | None = None) -> Path:
    """A MEDS folder of ``generation``: ``data/<file>.parquet`` holding the listed subjects."""
    files = files or {"train/0": [1, 2], "held_out/0": [3]}
    for name, subjects in files.items():
        path = root / "data" / f"{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_table(generation, [r for r in rows if r[0] in subjects]), path)
    return root


def write_tsv(path: Path, header: list[str], rows: list[list], delimiter: str = "\t") -> Path:
    """A delimited file as Athena and the release write it: no quoting at all (empty = missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [delimiter.join(header)] + [delimiter.join("" if v is None else str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_athena(root: Path, concepts, ancestors=None, relationships=None) -> Path:
    """``concepts``: (id, name, vocabulary_id, concept_code, standard_concept or None);
    ``ancestors``: (ancestor, descendant, min_levels); ``relationships``: (id_1, id_2, relationship_id)."""
    write_tsv(
        root / "CONCEPT.csv",
        [
            "concept_id",
            "concept_name",
            "domain_id",
            "vocabulary_id",
            "concept_class_id",
            "standard_concept",
            "concept_code",
            "valid_start_date",
            "valid_end_date",
            "invalid_reason",
        ],
        [[i, n, "Condition", v, "Clinical Finding", s, c, "19700101", "20991231", None] for i, n, v, c, s in concepts],
    )
    if ancestors is not None:
        write_tsv(
            root / "CONCEPT_ANCESTOR.csv",
            ["ancestor_concept_id", "descendant_concept_id", "min_levels_of_separation", "max_levels_of_separation"],
            [[a, d, m, m] for a, d, m in ancestors],
        )
    if relationships is not None:
        write_tsv(
            root / "CONCEPT_RELATIONSHIP.csv",
            ["concept_id_1", "concept_id_2", "relationship_id", "valid_start_date", "valid_end_date", "invalid_reason"],
            [[a, b, r, "19700101", "20991231", None] for a, b, r in relationships],
        )
    return root


# An OMOP-like hierarchy: ICD10CM/I26.99 (non-standard) maps to SNOMED PE, which is a lung
# disorder, which is a clinical finding; ICD10CM/I27.20 maps to SNOMED PH (a heart disease).
CONCEPTS = [
    (1, "Clinical finding", "SNOMED", "404684003", "S"),
    (2, "Disorder of lung", "SNOMED", "19829001", "S"),
    (3, "Pulmonary embolism", "SNOMED", "59282003", "S"),
    (4, "Heart disease", "SNOMED", "56265001", "S"),
    (5, "Pulmonary hypertension", "SNOMED", "70995007", "S"),
    (10, "Other pulmonary embolism without acute cor pulmonale", "ICD10CM", "I26.99", None),
    (11, "Pulmonary hypertension, unspecified", "ICD10CM", "I27.20", None),
    (20, "Creatinine", "LOINC", "2160-0", "S"),
    (30, "Female", "Gender", "F", "S"),
    (31, "Male", "Gender", "M", "S"),
]
ANCESTORS = [  # CONCEPT_ANCESTOR holds every (ancestor, descendant) pair, not only direct ones
    (1, 2, 1),
    (1, 3, 2),
    (2, 3, 1),
    (1, 4, 1),
    (4, 5, 1),
    (1, 5, 2),
    (3, 3, 0),
]
RELATIONSHIPS = [
    (10, 3, "Maps to"),
    (11, 5, "Maps to"),
    (3, 3, "Maps to"),
    (20, 20, "Maps to"),
    (3, 2, "Is a"),
    (2, 1, "Is a"),
    (5, 4, "Is a"),
    (4, 1, "Is a"),
    (2, 3, "Subsumes"),
]


@dataclass
class Study:
    """One study of an INSPECT-shaped release."""

    scan: str
    subject: int
    time: str | None
    split: str = "train"
    image: str | None = None
    labels: dict = field(default_factory=dict)
    write_image: bool = True


LABEL_COLUMNS = [
    "pe_positive_nlp",
    "12_month_PH",
    "1_month_mortality",
    "6_month_mortality",
    "12_month_mortality",
    "1_month_readmission",
    "6_month_readmission",
    "12_month_readmission",
]


def default_studies() -> list[Study]:
    """Six studies of four subjects over the three splits, every label value represented."""
    lab = dict.fromkeys(LABEL_COLUMNS, "FALSE")
    return [
        Study("1001", 1, "2019-03-01 10:00:00", "train", labels={**lab, "pe_positive_nlp": "TRUE"}),
        Study("1002", 1, "2019-09-01 11:30:00", "train", labels={**lab, "12_month_mortality": "TRUE"}),
        Study("1003", 2, "2018-01-02T09:15:00", "train", labels={**lab, "12_month_PH": "Censored"}),
        Study("1004", 3, "2017-07-07 08:00:00", "valid", labels={**lab, "1_month_readmission": "TRUE"}),
        Study("1005", 4, "2016-05-05", "test", labels={**lab, "6_month_mortality": "Censored"}),
        Study("1006", 4, "2016-08-05 07:00:00", "test", labels=dict(lab)),
    ]


def image_id(study: Study) -> str:
    return study.image if study.image is not None else f"PE{int(study.scan):08x}"


def write_release(root: Path, studies: list[Study] | None = None, extra_label_columns: dict | None = None) -> Path:
    """An INSPECT-shaped release folder (tables dated 20250611, images under CTPA/)."""
    studies = default_studies() if studies is None else studies
    write_tsv(
        root / "study_mapping_20250611.tsv",
        ["impression_id", "person_id", "procedure_DATETIME", "note_DATETIME", "image_id"],
        [[s.scan, s.subject, s.time, s.time, image_id(s)] for s in studies],
    )
    write_tsv(root / "splits_20250611.tsv", ["impression_id", "split"], [[s.scan, s.split] for s in studies])
    extra = extra_label_columns or {}
    write_tsv(
        root / "labels_20250611.tsv",
        ["impression_id", *LABEL_COLUMNS, *extra],
        [
            [s.scan, *[s.labels.get(c) for c in LABEL_COLUMNS], *[extra[c][i] for c in extra]]
            for i, s in enumerate(studies)
        ],
    )
    (root / "CTPA").mkdir(parents=True, exist_ok=True)
    for s in studies:
        if s.write_image:
            (root / "CTPA" / f"{image_id(s)}.nii.gz").write_bytes(b"")
    return root
