"""`tte-scale shard --relabel`: attach new labels to an existing volume set, volumes untouched.

Zarr: new label arrays are written into a staging group and swapped in (old `tte/`, `bench/`
renamed away, new renamed in). WebDataset: sidecar shards `wds-labels/shard-NNNNNN.tar` with
the label members of each volume shard, same keys, same order; build.json then says
`"wds_labels": "sidecar"`. The new labels must have the same rows (scan ids, subjects, splits,
in order) as the build, since a row is a Zarr row and a sample's place in its shard.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tte_scale.config import from_dict
from tte_scale.errors import InputError
from tte_scale.formats.shards import (
    STATUS_OK,
    WDS_LABELS_DIR,
    WDS_LABELS_INLINE,
    WDS_LABELS_SIDECAR,
    ZARR_DIR,
    sample_key,
    wds_shard_name,
)
from tte_scale.sharding import manifest
from tte_scale.sharding.config import ShardConfig
from tte_scale.sharding.labels import read_labels
from tte_scale.sharding.plan import Plan, PlanItem
from tte_scale.sharding.resume import ZARR_META, zarr_meta_files
from tte_scale.sharding.state import read_record, record_path, write_json_atomic
from tte_scale.sharding.store import set_label_attrs, swap_label_arrays, write_label_arrays
from tte_scale.sharding.writers import write_tar


def relabel(out, labels_dir, progress: bool = True) -> dict:
    import pyarrow.parquet as pq
    import zarr
    from tqdm import tqdm

    out = Path(out)
    build_file = out / "manifest" / "build.json"
    if not build_file.is_file():
        raise InputError(f"{out}: no manifest/build.json; build the shards before --relabel")
    build = json.loads(build_file.read_text())
    cfg = from_dict(ShardConfig, build["config"])
    samples = pq.read_table(out / "manifest" / "samples.parquet").to_pydict()
    shards = pq.read_table(out / "manifest" / "shards.parquet").to_pylist()
    labels = read_labels(labels_dir)
    old = list(zip(samples["scan_id"], samples["subject_id"], samples["split"]))
    new = list(zip(labels.scan_id, labels.subject_id.tolist(), labels.split))
    if old != new:
        bad = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
        raise InputError(
            f"{labels_dir}/rows.parquet: rows differ from the build at row {bad} ({len(new)} vs {len(old)} rows); "
            "relabel needs the same scans in the same order, re-shard with --overwrite otherwise"
        )

    if cfg.format in ("zarr", "both"):
        zarr_dir = out / ZARR_DIR
        staging = zarr_dir / ".relabel-staging"
        shutil.rmtree(staging, ignore_errors=True)
        write_label_arrays(staging, labels, cfg.label_chunk_rows)
        swap_label_arrays(zarr_dir, staging)
        set_label_attrs(zarr.open_group(str(zarr_dir), mode="r+"), labels)
        if read_record(out, ZARR_META, 0) is not None:  # the store's files as they are now (resume check)
            write_json_atomic(record_path(out, ZARR_META, 0), {"path": None, "files": zarr_meta_files(out)})

    extra = []
    if cfg.format in ("wds", "both"):
        by_shard: dict[int, list[tuple[int, int]]] = {}
        for row, shard, idx, status in zip(
            samples["row"], samples["wds_shard"], samples["wds_index"], samples["status"]
        ):
            if status == STATUS_OK and shard is not None:
                by_shard.setdefault(shard, []).append((idx, row))
        for rec in tqdm([s for s in shards if s["format"] == "wds"], desc="relabel", disable=not progress):
            rows = [row for _, row in sorted(by_shard.get(rec["shard"], []))]
            res = write_tar(
                out / WDS_LABELS_DIR / wds_shard_name(rec["shard"]),
                [(sample_key(samples["scan_id"][r]), list(labels.members(r).items())) for r in rows],
            )
            extra.append(
                {
                    "format": WDS_LABELS_DIR,
                    "shard": rec["shard"],
                    "path": str(Path(res["path"]).relative_to(out)),
                    "split": rec["split"],
                    "samples": res["samples"],
                    "bytes": res["bytes"],
                    "sha256": res["sha256"],
                }
            )

    # the plan is rebuilt from the manifest, so the manifest keeps its shard assignment
    items = [
        PlanItem(
            row=r,
            scan_id=s,
            subject_id=sub,
            split=sp,
            image_path="",
            modality=None,
            wds_shard=ws if ws is not None else -1,
            zarr_shard=r // cfg.zarr_volumes_per_shard,
            scans_table="",
        )
        for r, s, sub, sp, ws in zip(
            samples["row"], samples["scan_id"], samples["subject_id"], samples["split"], samples["wds_shard"]
        )
    ]
    plan = _plan_from_records(out, items, cfg, build)
    summary = manifest.write_manifest(
        out, plan, labels, cfg, wds_labels=WDS_LABELS_SIDECAR if extra else WDS_LABELS_INLINE, extra_shards=extra
    )
    write_json_atomic(out / "_state" / "relabel.json", {"labels_fingerprint": labels.fingerprint})
    return summary


def _plan_from_records(out: Path, items, cfg, build) -> Plan:
    """The shard -> rows lists, recovered from the resume records of the build."""
    wds, wds_split, zarr_groups = [], [], []
    for kind, target in (("wds", wds), ("zarr", zarr_groups)):
        for path in sorted((out / "_state").glob(f"{kind}-[0-9]*.json")):
            rec = json.loads(path.read_text())
            target.append([m["row"] for m in rec["rows"]])
            if kind == "wds":
                wds_split.append(rec["split"])
    return Plan(items, wds, wds_split, zarr_groups, list(build.get("not_labelled_scan_ids", [])))
