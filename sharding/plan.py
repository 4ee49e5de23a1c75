"""The deterministic plan: which Zarr row and which WebDataset shard each scan goes to.

Everything is decided before any scan is read, from the scans table, the labels rows and the
config alone, so every output shard has exactly one writer task and the result does not depend
on the number of workers. Zarr row r = labels row r; Zarr shard z holds rows
``[z*S, (z+1)*S)``. WebDataset shards hold one split each (train, tuning, held_out, then any
other split name sorted), rows in labels order, ``samples_per_wds_shard`` planned per shard.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tte_scale.errors import InputError
from tte_scale.formats.meds import SPLITS
from tte_scale.imaging import resolve_image_path

SCAN_COLUMNS = ("subject_id", "scan_id", "image_path")


@dataclass(frozen=True, slots=True)
class PlanItem:
    row: int
    scan_id: str
    subject_id: int
    split: str
    image_path: str
    """As written in the scans table (relative to it, or the user's absolute path): this is what
    the build fingerprint hashes and failure records name, so moving a cohort changes neither."""
    modality: str | None
    wds_shard: int
    zarr_shard: int
    scans_table: str
    """Absolute path of the scans table, used only to open the file (:attr:`image_file`)."""

    @property
    def image_file(self) -> Path | str:
        """The local file or folder to open, or the image's URL (a string, untouched)."""
        return resolve_image_path(self.image_path, self.scans_table)


@dataclass(slots=True)
class Plan:
    items: list[PlanItem]  # in row order
    wds_shards: list[list[int]]  # shard -> rows in sample order
    wds_split: list[str]  # shard -> split
    zarr_shards: list[list[int]]  # shard -> rows
    not_labelled: list[str]  # scan ids in scans.parquet but not in rows.parquet


def read_scans(path: str | Path) -> dict[str, list]:
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise InputError(f"scans table {path}: not found")
    try:
        table = pq.read_table(path).to_pydict()
    except Exception as exc:
        raise InputError(f"scans table {path}: cannot read as Parquet: {exc}") from None
    missing = [c for c in SCAN_COLUMNS if c not in table]
    if missing:
        raise InputError(f"scans table {path}: missing column(s) {missing}")
    seen: dict[str, int] = {}
    for i, sid in enumerate(table["scan_id"]):
        if sid in seen:
            raise InputError(f"scans table {path}: scan_id {sid!r} repeated at rows {seen[sid]} and {i}")
        seen[sid] = i
    for i, p in enumerate(table["image_path"]):
        if not p:
            raise InputError(f"scans table {path}: row {i} (scan_id {table['scan_id'][i]!r}) has no image_path")
    # paths stay as written; each scan resolves its own when it is opened (PlanItem.image_file)
    table["scans_table"] = [str(path.resolve())] * len(table["scan_id"])
    table.setdefault("modality", [None] * len(table["scan_id"]))
    return table


def make_plan(scans: dict[str, list], labels, samples_per_wds_shard: int, zarr_rows_per_shard: int) -> Plan:
    by_scan = {sid: i for i, sid in enumerate(scans["scan_id"])}
    subject_split: dict[int, str] = {}
    items = []
    for row, (sid, subj, split) in enumerate(zip(labels.scan_id, labels.subject_id.tolist(), labels.split)):
        if sid not in by_scan:
            raise InputError(f"labels rows.parquet row {row}: scan_id {sid!r} is not in the scans table")
        i = by_scan[sid]
        if int(scans["subject_id"][i]) != subj:
            raise InputError(
                f"labels rows.parquet row {row}: scan {sid!r} has subject {subj}, scans table says {scans['subject_id'][i]}"
            )
        # splits are per subject: a subject in two splits would leak between train and test
        if subject_split.setdefault(subj, split) != split:
            raise InputError(
                f"labels rows.parquet row {row}: subject {subj} is in splits {subject_split[subj]!r} and {split!r}"
            )
        items.append((row, sid, subj, split, scans["image_path"][i], scans["modality"][i], scans["scans_table"][i]))

    rows_by_split = defaultdict(list)
    for row, _, _, split, *_ in items:
        rows_by_split[split].append(row)
    splits = [s for s in SPLITS if s in rows_by_split] + sorted(set(rows_by_split) - set(SPLITS))
    wds_shards, wds_split, wds_of = [], [], {}
    for split in splits:
        rows = rows_by_split[split]
        for start in range(0, len(rows), samples_per_wds_shard):
            chunk = rows[start : start + samples_per_wds_shard]
            for r in chunk:
                wds_of[r] = len(wds_shards)
            wds_shards.append(chunk)
            wds_split.append(split)
    n = len(items)
    zarr_shards = [list(range(s, min(n, s + zarr_rows_per_shard))) for s in range(0, n, zarr_rows_per_shard)]
    plan_items = [
        PlanItem(
            row=row,
            scan_id=sid,
            subject_id=subj,
            split=split,
            image_path=path,
            modality=mod,
            wds_shard=wds_of[row],
            zarr_shard=row // zarr_rows_per_shard,
            scans_table=table,
        )
        for row, sid, subj, split, path, mod, table in items
    ]
    labelled = set(labels.scan_id)
    not_labelled = [sid for sid in scans["scan_id"] if sid not in labelled]
    return Plan(plan_items, wds_shards, wds_split, zarr_shards, not_labelled)
