"""Bad input: a clear InputError naming the file and rows, or a documented, reported exclusion."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from meds_fixture import T0, random_cohort, small_config, small_tasks, write_meds, write_scans

from tte_scale.ehr import load_labels
from tte_scale.ehr.build import build_labels
from tte_scale.errors import InputError
from tte_scale.outputs import mark


@pytest.fixture
def good(tmp_path):
    events, scans, splits, parents = random_cohort(21, n_subjects=20)
    write_meds(tmp_path / "meds", events, splits, parents, n_files=2)
    write_scans(tmp_path / "scans.parquet", scans)
    return tmp_path, events, scans, splits


def run(tmp, out="out", scans="scans.parquet", **kw):
    return build_labels(tmp / "meds", tmp / scans, tmp / out, small_config(), small_tasks(), progress=False, **kw)


def rewrite_file(path, fn):
    pq.write_table(fn(pq.read_table(path)), path)


def test_missing_meds_column(good):
    tmp = good[0]
    f = tmp / "meds" / "data" / "train" / "1.parquet"
    rewrite_file(f, lambda t: t.drop(["code"]))
    with pytest.raises(InputError, match=r"1\.parquet: missing required column\(s\) \['code'\]"):
        run(tmp)
    assert not (tmp / "out").exists()


def test_wrong_time_type(good):
    tmp = good[0]
    f = tmp / "meds" / "data" / "train" / "0.parquet"
    rewrite_file(f, lambda t: t.set_column(1, "time", pc_cast_str(t.column("time"))))
    with pytest.raises(InputError, match=r"0\.parquet: column 'time' must be a timestamp, got string"):
        run(tmp)


def pc_cast_str(col):
    return pa.array([None if v is None else str(v) for v in col.to_pylist()], pa.string())


def test_timezone_aware_time(good):
    tmp = good[0]
    f = tmp / "meds" / "data" / "train" / "0.parquet"
    rewrite_file(f, lambda t: t.set_column(1, "time", t.column("time").cast(pa.timestamp("us", tz="UTC"))))
    with pytest.raises(InputError, match="timezone-naive"):
        run(tmp)


def test_null_code_names_rows(good):
    tmp = good[0]
    f = tmp / "meds" / "data" / "train" / "0.parquet"
    rewrite_file(f, lambda t: t.set_column(2, "code", pa.array([None] + t.column("code").to_pylist()[1:], pa.string())))
    with pytest.raises(InputError, match=r"0\.parquet: null 'code' in rows \[0\]"):
        run(tmp)


def test_unknown_subjects_are_excluded_and_reported(good):
    tmp, _, scans, _ = good
    extra = pd.DataFrame({"subject_id": [999, 998], "scan_id": ["ghost1", "ghost2"], "prediction_time": [T0, T0]})
    write_scans(tmp / "scans2.parquet", pd.concat([scans, extra], ignore_index=True))
    summary = run(tmp, scans="scans2.parquet")
    assert summary["scans_excluded"]["unknown_subject"] == 2
    exc = pq.read_table(tmp / "out" / "excluded.parquet").to_pydict()
    assert {s: r for s, r in zip(exc["scan_id"], exc["reason"]) if s.startswith("ghost")} == {
        "ghost1": "unknown_subject",
        "ghost2": "unknown_subject",
    }
    assert "ghost1" not in load_labels(tmp / "out").scan_ids


def test_all_scans_unknown_is_an_error(good):
    tmp = good[0]
    write_scans(tmp / "scans2.parquet", pd.DataFrame({"subject_id": [999], "scan_id": ["g"], "prediction_time": [T0]}))
    with pytest.raises(InputError, match=r"scans2\.parquet: no scan could be labelled.*unknown_subject"):
        run(tmp, scans="scans2.parquet")


def test_duplicate_scan_ids(good):
    tmp, _, scans, _ = good
    dup = pd.concat([scans, scans.iloc[:1]], ignore_index=True)
    write_scans(tmp / "scans2.parquet", dup)
    with pytest.raises(
        InputError,
        match=rf"scans2\.parquet: duplicate scan_id \['{scans.scan_id.iloc[0]}'\] in rows \[0, {len(scans)}\]",
    ):
        run(tmp, scans="scans2.parquet")


def test_null_prediction_time(good):
    tmp, _, scans, _ = good
    tab = pq.read_table(tmp / "scans.parquet")
    pt = tab.column("prediction_time").to_pylist()
    pt[2] = None
    pq.write_table(tab.set_column(2, "prediction_time", pa.array(pt, pa.timestamp("us"))), tmp / "scans2.parquet")
    with pytest.raises(InputError, match=r"null 'prediction_time' in rows \[2\]"):
        run(tmp, scans="scans2.parquet")


def test_scans_missing_column(good):
    tmp = good[0]
    rewrite_file(tmp / "scans.parquet", lambda t: t.drop(["prediction_time"]))
    with pytest.raises(InputError, match=r"scans\.parquet: missing required column\(s\) \['prediction_time'\]"):
        run(tmp)


def test_prediction_times_outside_record(good):
    tmp, events, scans, _ = good
    late = scans.copy()
    late.loc[0, "prediction_time"] = events["time"].max() + np.timedelta64(1, "D")
    write_scans(tmp / "scans2.parquet", late)
    summary = run(tmp, scans="scans2.parquet")
    assert summary["scans_excluded"]["prediction_time_at_or_after_end_of_record"] >= 1
    exc = pq.read_table(tmp / "out" / "excluded.parquet").to_pydict()
    assert exc["reason"][exc["scan_id"].index(late.scan_id[0])] == "prediction_time_at_or_after_end_of_record"


def test_empty_cohort_no_files(tmp_path):
    (tmp_path / "meds" / "data").mkdir(parents=True)
    write_scans(
        tmp_path / "scans.parquet", pd.DataFrame({"subject_id": [1], "scan_id": ["a"], "prediction_time": [T0]})
    )
    with pytest.raises(InputError, match="empty cohort"):
        run(tmp_path)


def test_empty_cohort_zero_rows(good):
    tmp, events, scans, splits = good
    empty = events.iloc[:0]
    write_meds(tmp / "meds", empty, splits, n_files=1)
    for f in (tmp / "meds" / "data" / "train").glob("*.parquet"):
        if f.name != "0.parquet":
            f.unlink()
    with pytest.raises(InputError, match="empty cohort"):
        run(tmp)


def test_subject_in_two_files(good):
    tmp = good[0]
    a = pq.read_table(tmp / "meds" / "data" / "train" / "0.parquet")
    pq.write_table(a.slice(0, 3), tmp / "meds" / "data" / "train" / "9.parquet")
    with pytest.raises(InputError, match=r"9\.parquet: subjects .* also appear in .*0\.parquet"):
        run(tmp)


def test_missing_splits_file(good):
    tmp = good[0]
    (tmp / "meds" / "metadata" / "subject_splits.parquet").unlink()
    with pytest.raises(InputError, match="subject_splits.parquet: not found"):
        run(tmp)


def test_subject_absent_from_splits_is_excluded(good):
    tmp, _, scans, splits = good
    s = int(scans.subject_id.iloc[0])
    pq.write_table(
        pa.table(
            {
                "subject_id": pa.array([k for k in splits if k != s], pa.int64()),
                "split": [v for k, v in splits.items() if k != s],
            }
        ),
        tmp / "meds" / "metadata" / "subject_splits.parquet",
    )
    summary = run(tmp)
    assert summary["scans_excluded"]["subject_not_in_splits"] >= (scans.subject_id == s).sum()
    assert not set(scans[scans.subject_id == s].scan_id) & set(load_labels(tmp / "out").scan_ids)


def test_refuses_overwrite_and_replaces_atomically(good):
    tmp = good[0]
    run(tmp)
    with pytest.raises(InputError, match="exists; pass --overwrite"):
        run(tmp)
    (tmp / ".out.partial").mkdir()  # debris of a killed run: marked when it was created
    mark(tmp / ".out.partial", "labels")
    (tmp / ".out.partial" / "junk").write_text("x")
    run(tmp, overwrite=True)
    assert not (tmp / ".out.partial").exists() and not (tmp / ".out.old").exists()
    assert load_labels(tmp / "out").num_rows > 0


def test_load_labels_refuses_incomplete_folder(good):
    tmp = good[0]
    run(tmp)
    (tmp / "out" / "bins.json").unlink()
    with pytest.raises(InputError, match=r"not a labels folder \(missing \['bins.json'\]\)"):
        load_labels(tmp / "out")
