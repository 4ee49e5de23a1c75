"""Read a labels folder (docs/formats.md "Labels folder") into dense row-aligned arrays.

Only the documented files are read (pyarrow + zarr), so this does not depend on how
``tte_scale.ehr`` builds them. Legend: N rows (scans), K tasks, T benchmark tasks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tte_scale.errors import InputError
from tte_scale.formats.shards import BENCH_LABEL_NULL, LABEL_KEYS, label_member_bytes
from tte_scale.provenance import fingerprint_hasher


@dataclass(slots=True)
class LabelSet:
    scan_id: list[str]
    subject_id: np.ndarray  # int64 [N]
    split: list[str]
    time_NK: np.ndarray  # float32
    event_NK: np.ndarray  # bool
    bench_tasks: list[str]
    bench_label_NT: np.ndarray  # int8, BENCH_LABEL_NULL = null
    bench_time_NT: np.ndarray  # float32
    bench_event_NT: np.ndarray  # bool
    fingerprint: str  # sha256 over the label files: changes when any label changes

    @property
    def num_rows(self) -> int:
        return len(self.scan_id)

    def array(self, key: str) -> np.ndarray:
        """The [N, K] or [N, T] array of a label key of :data:`tte_scale.formats.shards.LABEL_KEYS`."""
        return getattr(self, _ARRAY_OF[key])

    def members(self, row: int) -> dict[str, bytes]:
        """The label members of one WebDataset sample (suffix -> bytes), in member order."""
        return label_member_bytes({key: self.array(key)[row] for key in LABEL_KEYS})


# label key (docs/formats.md) -> LabelSet field
_ARRAY_OF = {
    "tte_time": "time_NK",
    "tte_event": "event_NK",
    "bench_label": "bench_label_NT",
    "bench_time": "bench_time_NT",
    "bench_event": "bench_event_NT",
}


def read_labels(folder: str | Path) -> LabelSet:
    import pyarrow.parquet as pq
    import zarr

    folder = Path(folder)
    for name in ("rows.parquet", "tte.zarr", "bench.parquet", "bins.json"):
        if not (folder / name).exists():
            raise InputError(f"labels folder {folder}: {name} is missing (run `tte-scale labels` first)")
    rows = pq.read_table(folder / "rows.parquet").to_pydict()
    for col in ("scan_id", "subject_id", "split"):
        if col not in rows:
            raise InputError(f"{folder / 'rows.parquet'}: column {col!r} is missing")
    n = len(rows["scan_id"])
    bins = json.loads((folder / "bins.json").read_text())
    bench_tasks = [str(t) for t in bins.get("bench_tasks", [])]

    group = zarr.open_group(str(folder / "tte.zarr"), mode="r")
    time_NK = np.asarray(group["time"][...], dtype=np.float32)
    event_NK = np.asarray(group["event"][...], dtype=bool)
    if time_NK.shape[0] != n or event_NK.shape != time_NK.shape:
        raise InputError(
            f"{folder / 'tte.zarr'}: arrays {time_NK.shape}/{event_NK.shape} do not match {n} rows of rows.parquet"
        )

    t = len(bench_tasks)
    label_NT = np.full((n, t), BENCH_LABEL_NULL, dtype=np.int8)
    btime_NT = np.full((n, t), np.nan, dtype=np.float32)
    bevent_NT = np.zeros((n, t), dtype=bool)
    bench = pq.read_table(folder / "bench.parquet").to_pydict()
    row_of = {s: i for i, s in enumerate(rows["scan_id"])}
    col_of = {name: j for j, name in enumerate(bench_tasks)}
    for k, (sid, task) in enumerate(zip(bench.get("scan_id", []), bench.get("task", []))):
        if sid not in row_of or task not in col_of:
            raise InputError(f"{folder / 'bench.parquet'}: row {k}: scan {sid!r} / task {task!r} not in rows/bins.json")
        i, j = row_of[sid], col_of[task]
        lab = bench["label"][k]
        label_NT[i, j] = BENCH_LABEL_NULL if lab is None else int(bool(lab))
        btime_NT[i, j] = np.nan if bench["time"][k] is None else bench["time"][k]
        bevent_NT[i, j] = bool(bench["event"][k])

    h = fingerprint_hasher(folder)  # the one recipe, shared with the trainer's check of data.labels_dir
    h.update(time_NK.tobytes())
    h.update(event_NK.tobytes())
    return LabelSet(
        scan_id=[str(s) for s in rows["scan_id"]],
        subject_id=np.asarray(rows["subject_id"], dtype=np.int64),
        split=[str(s) for s in rows["split"]],
        time_NK=time_NK,
        event_NK=event_NK,
        bench_tasks=bench_tasks,
        bench_label_NT=label_NT,
        bench_time_NT=btime_NT,
        bench_event_NT=bevent_NT,
        fingerprint=h.hexdigest(),
    )
