"""Tiny MEDS datasets for the labels tests: a writer and a random cohort generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tte_scale.ehr.config import BenchTask, LabelsConfig, TaskSet

DAY_US = 86_400_000_000
T0 = np.datetime64("2015-01-01T00:00:00", "us")

EVENT_SCHEMA = pa.schema(
    [("subject_id", pa.int64()), ("time", pa.timestamp("us")), ("code", pa.string()), ("numeric_value", pa.float32())]
)


def write_meds(
    root: Path, events: pd.DataFrame, splits: dict, parents: dict | None = None, n_files: int = 2, seed: int = 0
) -> Path:
    """Write ``events`` (subject_id, time, code) as MEDS, subjects spread over ``n_files`` files,
    rows shuffled inside each file (MEDS readers must not rely on order)."""
    root = Path(root)
    (root / "data" / "train").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    subj = events["subject_id"].to_numpy()
    for i in range(n_files):
        part = events[subj % n_files == i]
        part = part.iloc[rng.permutation(len(part))]
        tab = pa.table(
            {
                "subject_id": pa.array(part["subject_id"].to_numpy(np.int64)),
                "time": pa.array(part["time"].to_numpy("datetime64[us]"), pa.timestamp("us")),
                "code": pa.array(part["code"].astype(str).tolist(), pa.string()),
                "numeric_value": pa.array(np.full(len(part), np.nan, np.float32)),
            },
            schema=EVENT_SCHEMA,
        )
        pq.write_table(tab, root / "data" / "train" / f"{i}.parquet")
    (root / "metadata" / "dataset.json").write_text(json.dumps({"dataset_name": "fixture", "meds_version": "0.4"}))
    codes = sorted(set(events["code"].astype(str)) | set(parents or {}))
    pq.write_table(
        pa.table(
            {
                "code": codes,
                "description": [""] * len(codes),
                "parent_codes": [list((parents or {}).get(c, [])) for c in codes],
            }
        ),
        root / "metadata" / "codes.parquet",
    )
    pq.write_table(
        pa.table({"subject_id": pa.array(list(splits), pa.int64()), "split": list(splits.values())}),
        root / "metadata" / "subject_splits.parquet",
    )
    return root


def write_scans(path: Path, scans: pd.DataFrame) -> Path:
    tab = pa.table(
        {
            "subject_id": pa.array(scans["subject_id"].to_numpy(np.int64)),
            "scan_id": pa.array(scans["scan_id"].astype(str).tolist()),
            "prediction_time": pa.array(scans["prediction_time"].to_numpy("datetime64[us]"), pa.timestamp("us")),
            "image_path": pa.array([f"img/{s}.nii.gz" for s in scans["scan_id"]]),
            "modality": pa.array(["CT"] * len(scans)),
        }
    )
    pq.write_table(tab, path)
    return Path(path)


def random_cohort(seed: int, n_subjects: int = 12, n_codes: int = 8, max_events: int = 30, max_scans: int = 3):
    """Events on a coarse day grid (so ties, events at the prediction time and same-day scans
    happen), static rows, deaths, subjects without scans; returns (events, scans, splits, parents)."""
    rng = np.random.default_rng(seed)
    codes = [f"C/{i}" for i in range(n_codes)] + ["MEDS_DEATH"]
    ev, sc = [], []
    for s in range(1, n_subjects + 1):
        n = int(rng.integers(0, max_events + 1))
        days = rng.integers(0, 40, n)
        for d, c in zip(days, rng.integers(0, n_codes, n)):
            ev.append((s, T0 + np.timedelta64(int(d) * DAY_US // 2, "us"), codes[c]))
        if rng.random() < 0.5:
            ev.append((s, np.datetime64("NaT", "us"), "GENDER/F"))
        if n and rng.random() < 0.3:
            ev.append((s, T0 + np.timedelta64(int(days.max() + 1) * DAY_US // 2, "us"), "MEDS_DEATH"))
        for j in range(int(rng.integers(0, max_scans + 1))):
            p = T0 + np.timedelta64(int(rng.integers(0, 42)) * DAY_US // 2, "us")
            sc.append((s, f"s{s}_{j}", p))
    events = pd.DataFrame(ev, columns=["subject_id", "time", "code"])
    if events.empty:
        events = pd.DataFrame({"subject_id": [1], "time": [T0], "code": ["C/0"]})
    events["time"] = events["time"].astype("datetime64[us]")
    scans = pd.DataFrame(sc, columns=["subject_id", "scan_id", "prediction_time"])
    scans["prediction_time"] = scans["prediction_time"].astype("datetime64[us]")
    names = ["train", "train", "tuning", "held_out"]
    splits = {s: names[int(rng.integers(0, 4))] for s in range(1, n_subjects + 1) if rng.random() < 0.95}
    parents = {"C/0": ["GROUP/A"], "C/1": ["GROUP/A"], "C/2": ["GROUP/B"], "GROUP/A": ["ROOT"], "GROUP/B": ["ROOT"]}
    return events, scans, splits, parents


def small_tasks() -> TaskSet:
    return TaskSet(
        tasks=[
            BenchTask(name="c0_5d", codes=["C/0", "C/1"], horizon_days=5, exclude_prior=True),
            BenchTask(name="death_3d", codes=["MEDS_DEATH"], horizon_days=3),
            BenchTask(name="c2_1d", codes=["C/2"], horizon_days=1),
        ]
    )


def small_config(**kw) -> LabelsConfig:
    base = dict(num_tasks=6, num_bins=4, chunk_rows=4)
    base.update(kw)
    return LabelsConfig(**base)
