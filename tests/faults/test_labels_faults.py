"""`tte-scale labels` on bad inputs and dangerous flags (issue 16): nothing lost, nothing silently wrong.

Each case runs the real CLI entry point in-process (`tte_scale.cli.main`): exit status 2 with one
line naming the file (and field), or a reported exclusion with its reason and count in
summary.json and excluded.parquet; a flag accepts the case knowingly where that makes sense.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tte_scale.cli import main
from tte_scale.ehr import load_labels
from tte_scale.outputs import MARKER

DAY = np.timedelta64(1, "D")
T0 = np.datetime64("2015-01-01", "us")
SPLITS = ["train"] * 8 + ["tuning"] * 3 + ["held_out"] * 3


def write_cohort(root: Path, *, splits=None, events=None, parents=True) -> Path:
    """14 subjects (born 1950-1963), a few codes over 2015-2016, one scan each in early 2015."""
    splits = splits or SPLITS
    (root / "data").mkdir(parents=True)
    (root / "metadata").mkdir()
    rows = events if events is not None else cohort_events(len(splits))
    pq.write_table(
        pa.table(
            {
                "subject_id": pa.array([r[0] for r in rows], pa.int64()),
                "time": pa.array([r[1] for r in rows], pa.timestamp("us")),
                "code": pa.array([r[2] for r in rows], pa.string()),
                "numeric_value": pa.array([None] * len(rows), pa.float32()),
            }
        ),
        root / "data" / "0.parquet",
    )
    pq.write_table(
        pa.table({"subject_id": pa.array(range(len(splits)), pa.int64()), "split": splits}),
        root / "metadata" / "subject_splits.parquet",
    )
    codes = sorted({r[2] for r in rows} | {"GROUP/A"})
    if parents:
        table = {"code": codes, "parent_codes": [["GROUP/A"] if c.startswith("C/") else [] for c in codes]}
        pq.write_table(pa.table(table), root / "metadata" / "codes.parquet")
    scans = pa.table(
        {
            "subject_id": pa.array(range(len(splits)), pa.int64()),
            "scan_id": [f"scan{s}" for s in range(len(splits))],
            "prediction_time": pa.array([T0 + (10 + s) * DAY for s in range(len(splits))], pa.timestamp("us")),
            "image_path": [f"img/scan{s}.nii.gz" for s in range(len(splits))],
            "modality": ["CT"] * len(splits),
        }
    )
    pq.write_table(scans, root / "scans.parquet")
    return root


def cohort_events(n: int) -> list[tuple]:
    rng = np.random.default_rng(0)
    rows = []
    for s in range(n):
        rows.append((s, np.datetime64(f"{1950 + s}-06-01", "us"), "MEDS_BIRTH"))
        for d in rng.integers(0, 500, 12):
            rows.append((s, T0 + int(d) * DAY, f"C/{int(rng.integers(0, 4))}"))
        rows.append((s, T0 + 600 * DAY, "VISIT"))  # end of record after every scan
    return rows


def labels(tmp: Path, *extra, out="labels", meds="cohort"):
    argv = ["labels", "--meds", tmp / meds, "--scans", tmp / meds / "scans.parquet", "--out", tmp / out]
    argv += ["--tasks", "8", "--bins", "4", "--no-progress", *extra]
    return main([str(a) for a in argv])


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def tmp(tmp_path):
    write_cohort(tmp_path / "cohort")
    return tmp_path


# -- 1. --overwrite deletes only what `labels` wrote ------------------------------------------


def test_overwrite_refuses_an_unrelated_folder(tmp, capsys):
    (tmp / "labels").mkdir()
    (tmp / "labels" / "thesis.docx").write_text("years of work")
    assert labels(tmp, "--overwrite") == 2
    assert "not written by `tte-scale labels`" in error_line(capsys)
    assert (tmp / "labels" / "thesis.docx").read_text() == "years of work"


def test_overwrite_refuses_out_equal_to_meds(tmp, capsys):
    before = tree(tmp / "cohort")
    assert labels(tmp, "--overwrite", out="cohort") == 2
    assert "holds the input" in error_line(capsys)
    assert tree(tmp / "cohort") == before


def test_overwrite_refuses_out_holding_the_meds_folder(tmp, capsys):
    (tmp / "outer").mkdir()
    (tmp / "cohort").rename(tmp / "outer" / "cohort")
    mark_as_labels(tmp / "outer")  # even a folder that looks like ours must not hold an input
    assert labels(tmp, "--overwrite", out="outer", meds="outer/cohort") == 2
    assert "holds the input" in error_line(capsys)
    assert (tmp / "outer" / "cohort" / "scans.parquet").is_file()


def mark_as_labels(path: Path) -> None:
    from tte_scale.outputs import mark

    mark(path, "labels")


def test_overwrite_replaces_own_labels_and_marks_them(tmp, capsys):
    assert labels(tmp) == 0
    assert json.loads((tmp / "labels" / MARKER).read_text())["command"] == "labels"
    assert labels(tmp, "--overwrite") == 0
    assert load_labels(tmp / "labels").num_rows == 14
    assert not (tmp / ".labels.partial").exists() and not (tmp / ".labels.old").exists()


def test_labels_inside_the_cohort_folder_are_allowed(tmp):
    assert labels(tmp, out="cohort/labels") == 0
    assert labels(tmp, "--overwrite", out="cohort/labels") == 0
    assert (tmp / "cohort" / "scans.parquet").is_file()


def test_a_foreign_partial_folder_is_kept(tmp, capsys):
    (tmp / ".labels.partial").mkdir()
    (tmp / ".labels.partial" / "notes.txt").write_text("mine")
    assert labels(tmp) == 2
    assert ".labels.partial: not empty and not written by `tte-scale labels`" in error_line(capsys)
    assert (tmp / ".labels.partial" / "notes.txt").read_text() == "mine"
    assert not (tmp / "labels").exists()


def test_a_foreign_old_folder_is_kept(tmp, capsys):
    assert labels(tmp) == 0
    (tmp / ".labels.old").mkdir()
    (tmp / ".labels.old" / "notes.txt").write_text("mine")
    assert labels(tmp, "--overwrite") == 2
    assert ".labels.old: not empty" in error_line(capsys)
    assert (tmp / ".labels.old" / "notes.txt").read_text() == "mine"


# -- 8. values that cannot be trusted: refused, or excluded and counted ------------------------


def excluded(tmp: Path, out="labels") -> dict[str, str]:
    t = pq.read_table(tmp / out / "excluded.parquet").to_pydict()
    return dict(zip(t["scan_id"], t["reason"]))


def summary(tmp: Path, out="labels") -> dict:
    return json.loads((tmp / out / "summary.json").read_text())


def set_prediction_time(tmp: Path, scan: str, when: str) -> None:
    path = tmp / "cohort" / "scans.parquet"
    t = pq.read_table(path)
    times = [
        np.datetime64(when, "us") if s == scan else v
        for s, v in zip(t["scan_id"].to_pylist(), t["prediction_time"].to_numpy())
    ]
    pq.write_table(t.set_column(2, "prediction_time", pa.array(times, pa.timestamp("us"))), path)


def test_prediction_time_before_birth_is_excluded_and_counted(tmp, capsys):
    assert labels(tmp, out="ref") == 0  # the cohort as it should be
    set_prediction_time(tmp, "scan3", "1900-01-01")  # subject 3 was born in 1953
    assert labels(tmp) == 0
    assert excluded(tmp) == {"scan3": "prediction_time_before_birth"}
    assert summary(tmp)["scans_excluded"] == {"prediction_time_before_birth": 1}
    assert "prediction_time_before_birth" in capsys.readouterr().out
    # Its ~115-year label times do not reach the bins (they moved the last edge before).
    ref = json.loads((tmp / "ref" / "bins.json").read_text())["bin_starts_days"]
    got = json.loads((tmp / "labels" / "bins.json").read_text())["bin_starts_days"]
    assert got[-1] <= ref[-1] + 1
    # Knowingly accepted: the check off labels it as before.
    assert labels(tmp, "--birth-code", "", out="accepted") == 0
    assert "scan3" not in excluded(tmp, "accepted")


@pytest.mark.parametrize("bad", ["Train", "test"])
def test_split_names_other_than_the_three_are_refused(tmp_path, capsys, bad):
    write_cohort(tmp_path / "cohort", splits=SPLITS[:-2] + [bad, bad])
    assert labels(tmp_path) == 2
    line = error_line(capsys)
    assert "subject_splits.parquet: field 'split'" in line and f"'{bad}' (2 subjects)" in line
    assert not (tmp_path / "labels").exists()
    assert labels(tmp_path, "--unknown-splits", "exclude") == 0
    assert excluded(tmp_path) == {"scan12": "unknown_split", "scan13": "unknown_split"}
    assert summary(tmp_path)["scans_excluded"] == {"unknown_split": 2}
    assert summary(tmp_path)["checks"]["unknown_splits"] == {bad: 2}


def test_missing_codes_parquet_is_refused_unless_ontology_is_off(tmp_path, capsys):
    write_cohort(tmp_path / "cohort", parents=False)
    assert labels(tmp_path) == 2
    line = error_line(capsys)
    assert "metadata/codes.parquet: not found" in line and "--no-ontology" in line
    assert labels(tmp_path, "--no-ontology") == 0
    assert summary(tmp_path)["checks"]["ontology"] is False


def test_codes_parquet_without_parent_codes_is_refused(tmp, capsys):
    path = tmp / "cohort" / "metadata" / "codes.parquet"
    pq.write_table(pq.read_table(path).drop(["parent_codes"]), path)
    assert labels(tmp) == 2
    line = error_line(capsys)
    assert "codes.parquet: missing column(s) ['parent_codes']" in line and "--no-ontology" in line


def test_an_event_dated_in_2200_excludes_its_subjects_scans(tmp, capsys):
    events = cohort_events(len(SPLITS)) + [(4, np.datetime64("2200-01-01", "us"), "VISIT")]
    (tmp / "cohort").rename(tmp / "old")
    write_cohort(tmp / "cohort", events=events)
    assert labels(tmp) == 0
    assert excluded(tmp) == {"scan4": "event_after_max_time"}
    assert summary(tmp)["scans_excluded"] == {"event_after_max_time": 1}
    rows = pq.read_table(tmp / "labels" / "rows.parquet").to_pydict()
    assert max(rows["end_of_record"]).year < 2100
    assert labels(tmp, "--max-event-time", "2201-01-01", out="accepted") == 0  # knowingly
    assert "scan4" not in excluded(tmp, "accepted")


# -- 10. unreadable metadata: one line naming the file, exit 2 ----------------------------------


def test_zero_byte_subject_splits_is_one_clear_line(tmp, capsys):
    (tmp / "cohort" / "metadata" / "subject_splits.parquet").write_bytes(b"")
    assert labels(tmp) == 2
    assert "subject_splits.parquet: not a readable parquet file" in error_line(capsys)


def test_garbage_codes_parquet_is_one_clear_line(tmp, capsys):
    (tmp / "cohort" / "metadata" / "codes.parquet").write_bytes(b"PAR1 not really parquet PAR1")
    assert labels(tmp) == 2
    assert "codes.parquet: not a readable parquet file" in error_line(capsys)


def test_codes_parquet_with_parent_codes_of_another_type_is_one_clear_line(tmp, capsys):
    path = tmp / "cohort" / "metadata" / "codes.parquet"
    t = pq.read_table(path)
    pq.write_table(t.set_column(1, "parent_codes", pa.array([str(v) for v in t["parent_codes"].to_pylist()])), path)
    assert labels(tmp) == 2
    assert "column 'parent_codes' must be a list of strings, got string" in error_line(capsys)
