"""Test utility: a tiny scans table + labels folder exactly per docs/formats.md.

Scans are NIfTI phantoms (fast) plus, optionally, DICOM series full of fake PHI; labels are
random but fixed by the seed. Not library code: `tte-scale labels` writes the real thing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from support.phantoms import axial_geometry, write_nifti, write_series

BENCH_TASKS = ["pe", "mortality_1m", "readmission_1m"]
SHARD_SET = [
    "imaging.spacing_mm=[12.0, 12.0, 12.0]",
    "imaging.shape=[12, 24, 24]",
    "imaging.min_slices=8",
    "wds_shard_bytes=12000",
    "zarr_volumes_per_shard=4",
]


def write_labels(folder: Path, scan_ids, subject_ids, splits, K=6, seed=0) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = len(scan_ids)
    t0 = np.datetime64("2020-01-01T00:00:00", "us")
    pq.write_table(
        pa.table(
            {
                "scan_id": pa.array(scan_ids, pa.string()),
                "subject_id": pa.array(subject_ids, pa.int64()),
                "split": pa.array(splits, pa.string()),
                "prediction_time": pa.array([t0] * n, pa.timestamp("us")),
                "end_of_record": pa.array([t0 + np.timedelta64(1000, "D")] * n, pa.timestamp("us")),
            }
        ),
        folder / "rows.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "task_index": pa.array(range(K), pa.int32()),
                "code": [f"C/{k}" for k in range(K)],
                "train_count": pa.array([5] * K, pa.int64()),
                "score": [1.0] * K,
            }
        ),
        folder / "vocab.parquet",
    )
    (folder / "bins.json").write_text(
        json.dumps(
            {
                "format_version": 1,
                "bin_starts_days": [0.0, 30.0],
                "num_bins": 2,
                "config": {},
                "bench_tasks": BENCH_TASKS,
                "software": {},
            }
        )
    )
    import zarr

    g = zarr.open_group(str(folder / "tte.zarr"), mode="w", zarr_format=3)
    g.create_array("time", data=rng.uniform(1, 900, (n, K)).astype(np.float32))
    g.create_array("event", data=rng.random((n, K)) < 0.3)
    rows = {
        "scan_id": [],
        "subject_id": [],
        "split": [],
        "task": [],
        "label": [],
        "time": [],
        "event": [],
        "excluded": [],
    }
    for i in range(n):
        for task in BENCH_TASKS:
            lab = [None, True, False][int(rng.integers(3))]
            for k, v in (
                ("scan_id", scan_ids[i]),
                ("subject_id", subject_ids[i]),
                ("split", splits[i]),
                ("task", task),
                ("label", lab),
                ("time", float(rng.uniform(1, 400))),
                ("event", bool(rng.random() < 0.4)),
                ("excluded", "censored_before_horizon" if lab is None else None),
            ):
                rows[k].append(v)
    pq.write_table(
        pa.table(
            {
                **rows,
                "subject_id": pa.array(rows["subject_id"], pa.int64()),
                "time": pa.array(rows["time"], pa.float32()),
            }
        ),
        folder / "bench.parquet",
    )
    return folder


def make_cohort(root: Path, n_subjects=8, dicom_phi=False, broken=True, corrupt=False, seed=0):
    """Return (scans.parquet path, labels dir). Scan ids contain '.', '/' and '%' on purpose.

    ``broken`` adds a scan whose file does not exist, ``corrupt`` one whose file is not NIfTI.
    """
    root = Path(root)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    splits_cycle = ["train", "train", "tuning", "held_out"]
    scans = {"subject_id": [], "scan_id": [], "prediction_time": [], "image_path": [], "modality": []}
    for s in range(n_subjects):
        for j in range(1 + (s % 3 == 0)):
            sid = f"s{s:02d}.scan{j}/a%"
            shift = rng.uniform(-20, 20, 3)
            aff = np.array(
                [[12.0, 0, 0, -138 + shift[0]], [0, 12, 0, -138 + shift[1]], [0, 0, 12, -90 + shift[2]], [0, 0, 0, 1]]
            )
            path = write_nifti(root / "img" / f"{s}_{j}.nii.gz", aff, (24, 24, 16))
            for k, v in (
                ("subject_id", 100 + s),
                ("scan_id", sid),
                ("image_path", f"img/{path.name}"),
                ("modality", "CT"),
            ):
                scans[k].append(v)
            scans["prediction_time"].append(np.datetime64("2020-01-01", "us"))
    if dicom_phi:
        iop, ipps, ps = axial_geometry(n=20, step=10.0, size=32, ps=10.0)
        write_series(root / "img" / "dicom_phi", iop, ipps, ps, size=32)
        for k, v in (
            ("subject_id", 100),
            ("scan_id", "dicom-phi"),
            ("image_path", "img/dicom_phi"),
            ("modality", "CT"),
        ):
            scans[k].append(v)
        scans["prediction_time"].append(np.datetime64("2020-02-01", "us"))
    if broken:
        for k, v in (
            ("subject_id", 101),
            ("scan_id", "missing-file"),
            ("image_path", "img/nope.nii.gz"),
            ("modality", "CT"),
        ):
            scans[k].append(v)
        scans["prediction_time"].append(np.datetime64("2020-03-01", "us"))
    if corrupt:
        (root / "img" / "corrupt.nii.gz").write_bytes(b"not a NIfTI file, not even gzip" * 8)
        for k, v in (
            ("subject_id", 100 + n_subjects - 1),
            ("scan_id", "corrupt"),
            ("image_path", "img/corrupt.nii.gz"),
            ("modality", "CT"),
        ):
            scans[k].append(v)
        scans["prediction_time"].append(np.datetime64("2020-03-02", "us"))
    # one scan in the table that the labeller excluded: it must not be sharded
    for k, v in (
        ("subject_id", 102),
        ("scan_id", "not-labelled"),
        ("image_path", scans["image_path"][0]),
        ("modality", "CT"),
    ):
        scans[k].append(v)
    scans["prediction_time"].append(np.datetime64("2020-04-01", "us"))
    pq.write_table(
        pa.table(
            {
                **scans,
                "subject_id": pa.array(scans["subject_id"], pa.int64()),
                "prediction_time": pa.array(scans["prediction_time"], pa.timestamp("us")),
            }
        ),
        root / "scans.parquet",
    )
    labelled = [i for i, s in enumerate(scans["scan_id"]) if s != "not-labelled"]
    # rows in subject-interleaved order, splits per subject
    split_of = {100 + s: splits_cycle[s % 4] for s in range(n_subjects)}
    labels = write_labels(
        root / "labels",
        [scans["scan_id"][i] for i in labelled],
        [scans["subject_id"][i] for i in labelled],
        [split_of[scans["subject_id"][i]] for i in labelled],
    )
    return root / "scans.parquet", labels


def scans_cohort(root: Path, image_paths: dict[str, str], table_dir: Path | None = None):
    """A cohort of the given images: ``{scan_id: image_path as written in the table}``, one subject
    per scan, all in the train split. Returns (scans.parquet path, labels dir); the table is
    written into ``table_dir`` (default ``root``), the labels into ``root/labels``."""
    root = Path(root)
    table = Path(table_dir or root) / "scans.parquet"
    table.parent.mkdir(parents=True, exist_ok=True)
    ids = list(image_paths)
    subjects = [200 + i for i in range(len(ids))]
    pq.write_table(
        pa.table(
            {
                "subject_id": pa.array(subjects, pa.int64()),
                "scan_id": ids,
                "prediction_time": pa.array([np.datetime64("2020-01-01", "us")] * len(ids), pa.timestamp("us")),
                "image_path": [image_paths[s] for s in ids],
                "modality": ["CT"] * len(ids),
            }
        ),
        table,
    )
    return table, write_labels(root / "labels", ids, subjects, ["train"] * len(ids))


def phantom_nifti(path: Path, shape=(24, 24, 16), spacing=12.0) -> Path:
    """A NIfTI phantom centred on the origin (the scans of :func:`make_cohort`, without shift)."""
    half = (np.asarray(shape, dtype=float) - 1) / 2 * spacing
    aff = np.diag([spacing, spacing, spacing, 1.0])
    aff[:3, 3] = -half
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_nifti(path, aff, shape)
