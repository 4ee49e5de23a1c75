"""`tte-scale labels --bench-labels`: the release's benchmark labels replace the ones computed
from codes (the trap: INSPECT's public EHR has the death/readmission codes scrubbed, so the
computed mortality labels come out all negative, without any error)."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from convert_fixtures import default_studies, write_meds, write_release

from tte_scale.convert import convert_cohort, convert_meds, load_map
from tte_scale.ehr import LabelsConfig, build_labels, load_labels, load_task_set
from tte_scale.ehr.precomputed import PRECOMPUTED_SCHEMA, write_precomputed
from tte_scale.errors import InputError

TASKS = load_task_set("configs/tasks/inspect.yaml")
MEANING = {"TRUE": True, "FALSE": False, "Censored": None}


def _ehr_rows():
    """Every subject has a record from 2015 to mid-2021; no death or admission codes (scrubbed)."""
    rows = []
    for sid in (1, 2, 3, 4):
        rows += [
            (sid, datetime(2015, 1, 1), "LOINC/2160-0", 1.0, None, None),
            (sid, datetime(2018, 6, 1), "ICD10CM/R07.9", None, None, None),
            (sid, datetime(2021, 6, 1), "LOINC/2160-0", 1.1, None, None),
        ]
    return rows


@pytest.fixture
def cohort(tmp_path):
    release = write_release(tmp_path / "release")
    convert_cohort(release, tmp_path / "cohort", cmap=load_map(), task_set=TASKS, progress=False)
    src = write_meds(tmp_path / "ehr", "0.3", rows=_ehr_rows(), files={"0": [1, 2], "1": [3, 4]})
    convert_meds(src, tmp_path / "meds", splits=tmp_path / "cohort" / "subject_splits.parquet", progress=False)
    return tmp_path


def _labels(root, name, **cfg):
    cfg = LabelsConfig(num_tasks=4, num_bins=2, **cfg)
    summary = build_labels(root / "meds", root / "cohort" / "scans.parquet", root / name, cfg, TASKS, progress=False)
    bench = pq.read_table(root / name / "bench.parquet").to_pylist()
    return summary, {(r["scan_id"], r["task"]): r for r in bench}


def test_release_labels_replace_the_scrubbed_ones(cohort):
    _, computed = _labels(cohort, "computed")
    # The trap: without the release's labels, every mortality label is negative or censored.
    assert not any(r["label"] for (s, t), r in computed.items() if t.startswith("mortality"))
    summary, used = _labels(cohort, "labels", bench_labels=str(cohort / "cohort" / "bench_labels.parquet"))
    release = {s.scan: s for s in default_studies()}
    column = {t.name: c for t, c in zip(TASKS.tasks, load_map().labels.tasks.values(), strict=True)}
    for (scan, task), r in used.items():
        want = MEANING[release[scan].labels[column[task].label]]
        assert r["label"] is want, (scan, task)
        assert r["excluded"] == (None if want is not None else "censored_before_horizon")
        # No time-to-event in the default map: time and event stay code-derived.
        assert (r["time"], r["event"]) == (computed[(scan, task)]["time"], computed[(scan, task)]["event"])
    assert used[("1002", "mortality_12m")]["label"] is True
    assert summary["bench_precomputed"]["rows_used"] == 6 * 8
    assert summary["bench_precomputed"]["rows_of_unlabelled_scans"] == 0
    labels = load_labels(cohort / "labels")
    assert labels.bench_label.shape == (6, 8)


def test_time_and_event_from_the_file(cohort):
    pre = pq.read_table(cohort / "cohort" / "bench_labels.parquet")
    is_mort = pc.equal(pre.column("task"), "mortality_12m")
    time = pc.if_else(is_mort, pa.scalar(123.0, pa.float32()), pre.column("time"))
    event = pc.if_else(is_mort, True, pre.column("event"))
    pre = pre.set_column(3, "time", time).set_column(4, "event", event)
    write_precomputed(cohort / "pre.parquet", pre)
    summary, used = _labels(cohort, "labels", bench_labels=str(cohort / "pre.parquet"))
    assert all((r["time"], r["event"]) == (123.0, True) for (s, t), r in used.items() if t == "mortality_12m")
    assert summary["bench_precomputed"]["time_event_from_file"] == 6


def test_scans_outside_the_labels_are_counted(cohort):
    scans = pq.read_table(cohort / "cohort" / "scans.parquet")
    pq.write_table(scans.filter(pc.not_equal(scans.column("scan_id"), "1006")), cohort / "cohort" / "scans.parquet")
    summary, _ = _labels(cohort, "labels", bench_labels=str(cohort / "cohort" / "bench_labels.parquet"))
    assert summary["bench_precomputed"]["rows_of_unlabelled_scans"] == 8


def test_bad_label_files(cohort):
    pre = pq.read_table(cohort / "cohort" / "bench_labels.parquet")
    cases = {
        "missing.parquet": (
            pre.filter(pc.invert(pc.and_(pc.equal(pre.column("scan_id"), "1003"), pc.equal(pre.column("task"), "pe")))),
            r"missing.parquet: no row for scan '1003', task 'pe'",
        ),
        "unknown.parquet": (
            pre.set_column(1, "task", pc.if_else(pc.equal(pre.column("task"), "pe"), "pe_acute", pre.column("task"))),
            r"unknown.parquet: task\(s\) \['pe_acute'\] are not benchmark tasks",
        ),
        "dup.parquet": (
            pa.concat_tables([pre, pre.slice(0, 1)]),
            r"dup.parquet: scan '1001', task 'pe' has more than one row",
        ),
    }
    for name, (table, match) in cases.items():
        write_precomputed(cohort / name, table)
        with pytest.raises(InputError, match=match):
            _labels(cohort, "labels", bench_labels=str(cohort / name))
        assert not (cohort / "labels").exists()
    pq.write_table(pre.replace_schema_metadata(None), cohort / "plain.parquet")
    with pytest.raises(InputError, match="not a precomputed benchmark label file"):
        _labels(cohort, "labels", bench_labels=str(cohort / "plain.parquet"))
    assert PRECOMPUTED_SCHEMA.names == pre.column_names
