"""Hand-checked label semantics: strictly-after, censoring at end of record, bins, bench labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from meds_fixture import T0, small_config, write_meds, write_scans

from tte_scale.ehr import BenchTask, TaskSet, load_labels
from tte_scale.ehr.build import build_labels


def day(d: float):
    return T0 + np.timedelta64(int(round(d * 86_400_000_000)), "us")


def frame(rows):
    df = pd.DataFrame(rows, columns=["subject_id", "time", "code"])
    df["time"] = df["time"].astype("datetime64[us]")
    return df


@pytest.fixture
def cohort(tmp_path):
    events = frame(
        [
            (1, None, "GENDER/F"),  # static: never future
            (1, day(0), "C/A"),
            (1, day(10), "C/A"),  # exactly at the prediction time: history
            (1, day(10), "C/B"),  # same timestamp, other code: history
            (1, day(15), "C/A"),
            (1, day(16), "C/A"),  # not the first occurrence
            (1, day(20), "PE"),
            (1, day(30), "MEDS_DEATH"),  # ends the record
            (2, day(1), "C/A"),
            (2, day(2), "C/C"),
            (2, day(3), "PE"),
            (3, day(5), "C/A"),
        ]
    )
    scans = pd.DataFrame(
        {
            "subject_id": [1, 1, 2, 3],
            "scan_id": ["a", "b", "c", "late"],
            "prediction_time": [day(10), day(15), day(0.5), day(5)],
        }
    )
    write_meds(tmp_path / "meds", events, {1: "train", 2: "train", 3: "tuning"}, n_files=1)
    write_scans(tmp_path / "scans.parquet", scans)
    tasks = TaskSet(
        tasks=[
            BenchTask(name="pe_6d", codes=["PE"], horizon_days=6, exclude_prior=True),
            BenchTask(name="death_25d", codes=["MEDS_DEATH"], horizon_days=25),
        ]
    )
    cfg = small_config(num_tasks=10, ranking="frequency", ontology=False, num_bins=3)
    summary = build_labels(tmp_path / "meds", tmp_path / "scans.parquet", tmp_path / "out", cfg, tasks, progress=False)
    return load_labels(tmp_path / "out"), summary, tmp_path


def test_strictly_after_and_censoring(cohort):
    labels, summary, _ = cohort
    codes = labels.vocab.column("code").to_pylist()
    assert labels.scan_ids == ["a", "b", "c"]  # "late": prediction time == end of record
    t, e = np.asarray(labels.time[:]), np.asarray(labels.event[:])
    col = {c: i for i, c in enumerate(codes)}
    # scan a (day 10): C/A at day 10 is history -> first later one at day 15.
    assert e[0, col["C/A"]] and t[0, col["C/A"]] == 5.0
    # scan b (day 15): the day-15 C/A is history -> day 16.
    assert e[1, col["C/A"]] and t[1, col["C/A"]] == 1.0
    # C/B only at day 10: never after scan a -> censored at death (day 30) -> 20 days.
    assert "C/B" not in col or (not e[0, col["C/B"]] and t[0, col["C/B"]] == 20.0)
    assert not e[0, col["C/C"]] and t[0, col["C/C"]] == 20.0
    assert e[0, col["MEDS_DEATH"]] and t[0, col["MEDS_DEATH"]] == 20.0
    assert e[2, col["C/C"]] and t[2, col["C/C"]] == 1.5
    assert "GENDER/F" not in col
    assert summary["scans_excluded"] == {"prediction_time_at_or_after_end_of_record": 1}
    assert (summary["subjects"], summary["events_read"], summary["static_events"], summary["scans_labelled"]) == (
        3,
        12,
        1,
        3,
    )
    assert summary["median_follow_up_days"] == 15.0
    assert summary["bench"]["death_25d"] == {
        "positive": 2,
        "negative": 0,
        "censored_before_horizon": 1,
        "prior_event": 0,
    }
    # Train counts: scans after which the code occurs (a, b, c are train).
    counts = dict(zip(codes, labels.vocab.column("train_count").to_pylist()))
    assert counts["C/A"] == 3 and counts["PE"] == 3 and counts["MEDS_DEATH"] == 2 and counts["C/C"] == 1


def test_bench_labels(cohort):
    labels, _, root = cohort
    assert labels.bench_tasks == ["pe_6d", "death_25d"]
    # pe_6d: a -> PE at day 20 = 10 d > 6 -> 0; b -> 5 d -> 1; c -> 2.5 d -> 1.
    np.testing.assert_array_equal(labels.bench_label[:, 0], [0, 1, 1])
    # death_25d: a -> 20 d -> 1; b -> 15 d -> 1; c -> censored at 2.5 d < 25 -> null.
    np.testing.assert_array_equal(labels.bench_label[:, 1], [1, 1, -1])
    np.testing.assert_array_equal(labels.bench_time[:, 1], [20.0, 15.0, 2.5])
    exc = pq.read_table(root / "out" / "bench.parquet").column("excluded").to_pylist()
    assert exc == [None, None, None, None, None, "censored_before_horizon"]


def test_exclude_prior(tmp_path):
    events = frame(
        [
            (1, day(1), "PH"),
            (1, day(5), "X"),
            (1, day(9), "PH"),
            (2, day(1), "X"),
            (2, day(9), "PH"),
            (3, None, "PH"),
            (3, day(9), "X"),
        ]
    )
    scans = pd.DataFrame(
        {"subject_id": [1, 2, 3], "scan_id": ["p", "q", "r"], "prediction_time": [day(5), day(5), day(5)]}
    )
    write_meds(tmp_path / "meds", events, {1: "train", 2: "train", 3: "train"}, n_files=1)
    write_scans(tmp_path / "scans.parquet", scans)
    tasks = TaskSet(tasks=[BenchTask(name="ph", codes=["PH"], horizon_days=30, exclude_prior=True)])
    build_labels(tmp_path / "meds", tmp_path / "scans.parquet", tmp_path / "out", small_config(), tasks, progress=False)
    labels = load_labels(tmp_path / "out")
    np.testing.assert_array_equal(labels.bench_label[:, 0], [-1, 1, -1])  # static PH row counts as prior
    np.testing.assert_array_equal(labels.bench_event[:, 0], [True, True, False])


def test_start_days_skips_the_scans_own_codes(tmp_path):
    """A finding coded hours after the scan (its own report) is not the event of a task with
    start_days 1 (the seed paper's TTE finding tasks); the next occurrence is, timed from the scan."""
    events = frame(
        [
            (1, day(0), "X"),
            (1, day(5.1), "FIND"),  # the scan's own report, 0.1 d after it
            (1, day(40), "FIND"),
            (1, day(90), "X"),
            (2, day(0), "X"),
            (2, day(5.1), "FIND"),  # only the report
            (2, day(400), "X"),
        ]
    )
    scans = pd.DataFrame({"subject_id": [1, 2], "scan_id": ["s1", "s2"], "prediction_time": [day(5), day(5)]})
    write_meds(tmp_path / "meds", events, {1: "train", 2: "train"}, n_files=1)
    write_scans(tmp_path / "scans.parquet", scans)
    tasks = TaskSet(
        tasks=[
            BenchTask(name="find_any", codes=["FIND"], horizon_days=60),
            BenchTask(name="find_later", codes=["FIND"], horizon_days=60, start_days=1),
        ]
    )
    build_labels(tmp_path / "meds", tmp_path / "scans.parquet", tmp_path / "out", small_config(), tasks, progress=False)
    labels = load_labels(tmp_path / "out")
    np.testing.assert_allclose(labels.bench_time[:, 0], [0.1, 0.1], atol=1e-4)
    np.testing.assert_allclose(labels.bench_time[:, 1], [35.0, 395.0], atol=1e-4)
    np.testing.assert_array_equal(labels.bench_event[:, 1], [True, False])
    np.testing.assert_array_equal(labels.bench_label[:, 1], [1, 0])
    with pytest.raises(Exception, match="start_days"):
        BenchTask(name="bad", codes=["FIND"], horizon_days=2, start_days=2)


def test_bins_are_train_quantiles(cohort):
    labels, _, _ = cohort
    b = labels.bin_starts
    assert b[0] == 0.0 and np.all(np.diff(b) > 0) and len(b) == labels.bins["num_bins"] <= 3
    assert labels.bins["config"]["requested_num_bins"] == 3


def test_formats_schema(cohort):
    labels, _, root = cohort
    vocab = pq.read_schema(root / "out" / "vocab.parquet")
    assert [str(vocab.field(n).type) for n in ("task_index", "code", "train_count", "score")] == [
        "int32",
        "string",
        "int64",
        "double",
    ]
    assert vocab.metadata[b"tte_scale.vocab_version"] == b"1"
    rows = pq.read_schema(root / "out" / "rows.parquet")
    assert rows.names == ["scan_id", "subject_id", "split", "prediction_time", "end_of_record"]
    assert str(rows.field("prediction_time").type) == "timestamp[us]"
    assert labels.time.dtype == np.float32 and labels.event.dtype == bool
    assert labels.time.metadata.zarr_format == 3
