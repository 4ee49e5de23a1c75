"""`tte-scale convert inspect`: a released cohort's tables and images -> scans, splits and labels.

Reads the three tables the ``--map`` names (studies, splits, labels; joined on the study id),
checks every value, resolves each study's image and writes, into one new folder:

* ``scans.parquet`` (docs/formats.md): study id -> ``scan_id``, person id -> ``subject_id``,
  procedure time -> ``prediction_time``, the image -> ``image_path`` (absolute: the release stays
  where it was downloaded), ``modality``;
* ``bench_labels.parquet``: the release's benchmark labels in the precomputed format
  ``tte-scale labels --bench-labels`` reads (``tte_scale.ehr.precomputed``);
* ``subject_splits.parquet``: MEDS subject splits from the release's study splits (for
  ``tte-scale convert meds --splits``);
* ``excluded.parquet`` (studies left out, with a reason; only with ``--allow-missing-*``) and
  ``summary.json`` (files read, counts per split and label value, exclusions, checks).

Refused with one line naming file, line and column: a missing column, an empty or unparsable id
or time, a label or split value the map does not list, a study missing from the split or label
table, one study id with two different rows, a subject in two splits, a study whose image does not
exist or whose time is empty (unless allowed: then excluded with a reason and counted), a
time-to-event column that contradicts the labels beyond ``labels.max_inconsistent``.
"""

from __future__ import annotations

import json
import time as _time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tte_scale.config import ConfigError, to_dict
from tte_scale.convert.mapping import CohortMap
from tte_scale.convert.release import Labels, Splits, Studies, TaskValues, read_labels, read_splits, read_studies
from tte_scale.convert.staging import StagedOutput
from tte_scale.convert.tables import find_file, line_of
from tte_scale.errors import InputError

__all__ = ["convert_cohort", "EXCLUDED_SCHEMA", "SCANS_SCHEMA"]

SCANS_SCHEMA = pa.schema(
    [
        ("subject_id", pa.int64()),
        ("scan_id", pa.string()),
        ("prediction_time", pa.timestamp("us")),
        ("image_path", pa.string()),
        ("modality", pa.string()),
    ]
)
EXCLUDED_SCHEMA = pa.schema(
    [("scan_id", pa.string()), ("subject_id", pa.int64()), ("line", pa.int64()), ("reason", pa.string())]
)
TOLERANCE_DAYS = 1.0
"""Slack of the time/label consistency check (label horizons and times are rounded differently)."""


def _horizons(cmap: CohortMap, task_set) -> dict[str, float]:
    horizons = {t.name: t.horizon_days for t in task_set.tasks}
    for name in cmap.labels.tasks:
        if name not in horizons:
            raise ConfigError(
                f"labels.tasks.{name}: not a task of the bench task file (tasks: {list(horizons)}); "
                "the map's task names must be those of --bench-tasks"
            )
    return {n: horizons[n] for n in cmap.labels.tasks}


def _join(st: Studies, sp: Splits, lab: Labels) -> tuple[np.ndarray, np.ndarray]:
    """(split, label-table row) of every study; a study missing from either table is an error."""
    split = np.empty(len(st.scan), dtype=object)
    lrow = np.empty(len(st.scan), np.int64)
    for i, (scan, row) in enumerate(zip(st.scan, st.rows)):
        for table, known in ((sp.table, sp.of), (lab.table, lab.row_of)):
            if scan not in known:
                raise InputError(
                    f"{table.path}: no row for study {scan!r} (studies table {st.table.path.name} line {line_of(row)})"
                )
        split[i] = sp.of[scan][0]
        lrow[i] = lab.row_of[scan]
    return split, lrow


def _check_one_split_per_subject(st: Studies, sp: Splits, split: np.ndarray) -> None:
    """MEDS splits are by subject: a subject on both sides of a split would leak."""
    order = np.lexsort((st.scan.astype(str), st.subject))
    s, p = st.subject[order], split[order]
    clash = np.flatnonzero((s[1:] == s[:-1]) & (p[1:] != p[:-1]))
    if len(clash):
        a, b = order[clash[0]], order[clash[0] + 1]
        raise InputError(
            f"{sp.table.path}: subject {st.subject[a]} is in two splits: study {st.scan[a]!r} in "
            f"{split[a]!r} (line {line_of(sp.of[st.scan[a]][1])}) and study {st.scan[b]!r} in {split[b]!r} "
            f"(line {line_of(sp.of[st.scan[b]][1])})"
        )


def _exclusions(
    st: Studies,
    cmap: CohortMap,
    image_root: Path,
    allow_missing_images: bool,
    allow_missing_times: bool,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """(reason or None, absolute image path) of every study. A missing time or image is an error
    unless the user allowed leaving such studies out."""
    from tqdm import tqdm

    n = len(st.scan)
    reason = np.full(n, None, dtype=object)
    no_time = ~st.time_ok
    if no_time.any():
        if not allow_missing_times:
            i = int(np.flatnonzero(no_time)[0])
            raise InputError(
                f"{st.table.path}: line {line_of(st.rows[i])}, column {cmap.studies.time!r}: empty procedure time "
                f"for study {st.scan[i]!r} ({int(no_time.sum())} studies; --allow-missing-times excludes them)"
            )
        reason[no_time] = "no_prediction_time"
    paths = np.empty(n, dtype=object)
    pattern = cmap.images.path
    for i in tqdm(range(n), desc="convert: images", unit="study", disable=not progress, dynamic_ncols=True):
        if st.image[i] is not None or "{image}" not in pattern:
            rel = pattern.format(image=st.image[i], scan=st.scan[i], subject=st.subject[i])
            paths[i] = str((image_root / rel).absolute())
            if Path(paths[i]).exists():
                continue
        if not allow_missing_images:
            hint = ""
            if st.image[i] and st.image[i].endswith((".nii.gz", ".nii")) and ".nii" in pattern:
                hint = " (the image id already ends in .nii/.nii.gz: set images.path to '{image}')"
            what = f"image {paths[i]} not found" if paths[i] else f"empty column {cmap.studies.image!r}"
            raise InputError(
                f"{st.table.path}: line {line_of(st.rows[i])}: study {st.scan[i]!r}: {what}{hint} "
                "(--allow-missing-images excludes such studies)"
            )
        if reason[i] is None:
            reason[i] = "image_not_found"
    return reason, paths


def _consistency(tv: TaskValues, rows: np.ndarray, horizon: float) -> tuple[int, int | None]:
    """Studies whose time/event contradict the label at the horizon, and the first such row."""
    lab = tv.label[rows]
    days, event = tv.days[rows], tv.event[rows]
    known = ~np.isnan(days)
    within = (event == 1) & (days <= horizon + TOLERANCE_DAYS)
    clearly_within = (event == 1) & (days <= horizon - TOLERANCE_DAYS)
    bad = known & (
        ((lab == 1) & ~within)
        | ((lab == 0) & clearly_within)
        | ((lab == -1) & ((event == 1) | (days > horizon + TOLERANCE_DAYS)))
    )
    idx = np.flatnonzero(bad)
    return len(idx), (int(rows[idx[0]]) if len(idx) else None)


def _check_times(cmap: CohortMap, lab: Labels, rows: np.ndarray, horizons: dict[str, float]) -> dict:
    """Time-to-event columns must agree with the labels (a wrong unit or column would not)."""
    checks = {}
    for name, tv in lab.tasks.items():
        if tv.days is None:
            continue
        bad, first = _consistency(tv, rows, horizons[name])
        checks[name] = {"inconsistent": bad, "of": int(len(rows))}
        if bad > cmap.labels.max_inconsistent * len(rows):
            tc, col = cmap.labels.tasks[name], lab.table.table.column
            raise InputError(
                f"{lab.table.path}: line {line_of(first)}: task {name}: {tc.time!r} = {col(tc.time)[first].as_py()} "
                f"{cmap.labels.time_unit}, {tc.censored!r} = {col(tc.censored)[first].as_py()} contradicts "
                f"{tc.label!r} = {col(tc.label)[first].as_py()} at the {horizons[name]:g}-day horizon; {bad} of "
                f"{len(rows)} studies disagree (> labels.max_inconsistent {cmap.labels.max_inconsistent}): "
                "check labels.time_unit and the columns"
            )
    return checks


def _bench_table(st: Studies, lab: Labels, order: np.ndarray, lrow: np.ndarray) -> pa.Table:
    """The precomputed benchmark labels of the kept studies (rows in ``order``, then task order)."""
    names = list(lab.tasks)
    rows = lrow[order]

    def per_task(get, fill):
        return np.stack([get(lab.tasks[t]) if get(lab.tasks[t]) is not None else fill for t in names], 1).reshape(-1)

    label = per_task(lambda tv: tv.label[rows], None)
    days = per_task(lambda tv: None if tv.days is None else tv.days[rows], np.full(len(rows), np.nan))
    event = per_task(lambda tv: None if tv.event is None else tv.event[rows], np.full(len(rows), -1))
    return pa.table(
        {
            "scan_id": pa.array(st.scan[np.repeat(order, len(names))].tolist(), pa.string()),
            "task": pa.array(names * len(order), pa.string()),
            "label": pa.array(label == 1, pa.bool_(), mask=label < 0),
            "time": pa.array(days.astype(np.float32), pa.float32(), mask=np.isnan(days)),
            "event": pa.array(event == 1, pa.bool_(), mask=np.isnan(days)),
        }
    )


def convert_cohort(
    release: str | Path,
    out: str | Path,
    *,
    cmap: CohortMap,
    task_set,
    images: str | Path | None = None,
    allow_missing_images: bool = False,
    allow_missing_times: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    command: str = "convert inspect",
) -> dict:
    """Convert the release folder ``release`` with the map ``cmap`` into ``out``; returns the summary."""
    from tte_scale.convert.meds import SPLITS, _meds, _validate
    from tte_scale.ehr.precomputed import write_precomputed

    release = Path(release)
    if not release.is_dir():
        raise InputError(f"--release {release}: folder not found")
    horizons = _horizons(cmap, task_set)
    image_root = Path(images) if images is not None else Path(cmap.images.folder)
    image_root = image_root if image_root.is_absolute() else release / image_root
    if not image_root.is_dir():
        raise InputError(f"{image_root}: image folder not found (map images.folder, or --images)")
    files = {
        "studies": find_file(release, cmap.studies.file, "studies table, map studies.file"),
        "splits": find_file(release, cmap.splits.file, "split table, map splits.file"),
        "labels": find_file(release, cmap.labels.file, "label table, map labels.file"),
    }
    stage = StagedOutput(out, command, inputs=[release, image_root], overwrite=overwrite)
    t0 = _time.perf_counter()
    st = read_studies(files["studies"], cmap)
    sp = read_splits(files["splits"], cmap)
    lab = read_labels(files["labels"], cmap)
    if len(st.scan) == 0:
        raise InputError(f"{files['studies']}: no studies")
    split, lrow = _join(st, sp, lab)
    _check_one_split_per_subject(st, sp, split)
    reason, paths = _exclusions(st, cmap, image_root, allow_missing_images, allow_missing_times, progress)
    keep = np.flatnonzero(reason == None)  # noqa: E711
    if len(keep) == 0:
        raise InputError(f"{release}: no study left to convert (all excluded)")
    checks = _check_times(cmap, lab, lrow[keep], horizons)
    order = keep[np.lexsort((st.scan[keep].astype(str), st.time_us[keep], st.subject[keep]))]
    first_of = np.unique(st.subject, return_index=True)[1]  # each subject's split (excluded studies' too)
    exc = np.flatnonzero(reason != None)  # noqa: E711

    with stage as tmp:
        scans = {
            "subject_id": pa.array(st.subject[order], pa.int64()),
            "scan_id": pa.array(st.scan[order].tolist(), pa.string()),
            "prediction_time": pa.array(st.time_us[order], pa.timestamp("us")),
            "image_path": pa.array(paths[order].tolist(), pa.string()),
            "modality": pa.array([cmap.modality] * len(order), pa.string()),
        }
        pq.write_table(pa.table(scans, schema=SCANS_SCHEMA), tmp / "scans.parquet")
        write_precomputed(tmp / "bench_labels.parquet", _bench_table(st, lab, order, lrow))
        splits = pa.table(
            {
                "subject_id": pa.array(st.subject[first_of], pa.int64()),
                "split": pa.array(split[first_of].tolist(), pa.string()),
            }
        )
        _validate(_meds().SubjectSplitSchema, splits, tmp / "subject_splits.parquet", "MEDS subject splits")
        pq.write_table(splits, tmp / "subject_splits.parquet")
        excluded = {
            "scan_id": pa.array(st.scan[exc].tolist(), pa.string()),
            "subject_id": pa.array(st.subject[exc], pa.int64()),
            "line": pa.array([line_of(r) for r in st.rows[exc]], pa.int64()),
            "reason": pa.array(reason[exc].tolist(), pa.string()),
        }
        pq.write_table(pa.table(excluded, schema=EXCLUDED_SCHEMA), tmp / "excluded.parquet")
        summary = {
            "cohort": cmap.name,
            "release": str(release.absolute()),
            "images": str(image_root.absolute()),
            "files": {k: {"name": p.name, "bytes": p.stat().st_size} for k, p in files.items()},
            "studies": len(st.scan),
            "scans": int(len(order)),
            "subjects": int(len(np.unique(st.subject[order]))),
            "scans_per_split": {s: int((split[order] == s).sum()) for s in SPLITS},
            "subjects_per_split": {s: int((split[first_of] == s).sum()) for s in SPLITS},
            "excluded": {r: int((reason == r).sum()) for r in sorted({x for x in reason if x is not None})},
            "repeated_identical_rows": {"studies": st.collapsed, "splits": sp.collapsed, "labels": lab.collapsed},
            "labels": {
                t: {
                    "true": int((tv.label[lrow[order]] == 1).sum()),
                    "false": int((tv.label[lrow[order]] == 0).sum()),
                    "censored": int((tv.label[lrow[order]] == -1).sum()),
                    "time_from_label_file": tv.days is not None,
                }
                for t, tv in lab.tasks.items()
            },
            "time_label_checks": checks,
            "map": to_dict(cmap),
            "seconds": round(_time.perf_counter() - t0, 2),
        }
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        stage.publish(release=str(release.absolute()), cohort=cmap.name)
    return summary
