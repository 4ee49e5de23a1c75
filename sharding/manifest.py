"""The manifest of a build (docs/formats.md "manifest/"): samples, shards, build.json.

Assembled from the per-shard resume records only, so a resumed build writes exactly the same
manifest as an uninterrupted one. Nothing here depends on timing or worker count (those go to
`_state/last_run.json`), so manifests of equal builds are byte-identical.
"""

from __future__ import annotations

import os
from pathlib import Path

from tte_scale.formats.shards import (
    FORMAT_VERSION,
    MANIFEST_DIR,
    SAMPLE_COLUMNS,
    STATUS_OK,
    WDS_DIR,
    WDS_LABELS_INLINE,
    ZARR_DIR,
    labels_sha256,
    samples_schema,
    shards_schema,
)
from tte_scale.imaging import CANONICAL_ORIENTATION, REASONS
from tte_scale.sharding.config import output_config
from tte_scale.sharding.labels import LabelSet
from tte_scale.sharding.state import load_record, write_json_atomic
from tte_scale.sharding.writers import tmp_name

NOTE_KINDS = ("ignored_files", "nonfinite_filled")
"""build.json `notes`: what usable scans needed (non-DICOM files skipped in a series folder,
non-finite voxels filled with imaging.nonfinite_fill_hu), one list per kind."""


def software_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in (
        "tte-scale",
        "numpy",
        "torch",
        "nibabel",
        "pydicom",
        "numcodecs",
        "zarr",
        "webdataset",
        "pyarrow",
        "ray",
    ):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def write_parquet_atomic(path: Path, table) -> None:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def write_manifest(
    out: Path, plan, labels: LabelSet, cfg, *, wds_labels: str = WDS_LABELS_INLINE, extra_shards=()
) -> dict:
    import pyarrow as pa

    out = Path(out)
    metas: dict[int, dict] = {}
    shard_rows = []
    wds_index: dict[int, int] = {}
    for kind, groups in ((WDS_DIR, plan.wds_shards), (ZARR_DIR, plan.zarr_shards)):
        for shard in range(len(groups)):
            rec = load_record(out, kind, shard)
            if rec is None:
                continue
            k = 0
            for m in rec["rows"]:
                metas.setdefault(m["row"], m)
                if kind == WDS_DIR and m["status"] == STATUS_OK:
                    wds_index[m["row"]] = k
                    k += 1
            if rec["path"] is not None:
                shard_rows.append(
                    {
                        "format": kind,
                        "shard": shard,
                        "path": rec["path"],
                        "split": rec["split"],
                        "samples": rec["samples"],
                        "bytes": rec["bytes"],
                        "sha256": rec["sha256"],
                    }
                )
    shard_rows += list(extra_shards)

    cols = {c: [] for c in SAMPLE_COLUMNS}
    failures = []
    notes: dict[str, list] = {kind: [] for kind in NOTE_KINDS}
    for it in plan.items:
        m = metas.get(it.row)
        if m is None:
            raise RuntimeError(f"row {it.row} ({it.scan_id}) has no result: the build did not finish")
        ok = m["status"] == STATUS_OK
        vals = {
            "row": it.row,
            "scan_id": it.scan_id,
            "subject_id": it.subject_id,
            "split": it.split,
            "status": m["status"],
            "reason": m["reason"],
            "wds_shard": it.wds_shard if ok and it.row in wds_index else None,
            "wds_index": wds_index.get(it.row) if ok else None,
            "volume_bytes": m.get("volume_bytes"),
            "volume_crc32c": m.get("volume_crc32c"),
            "volume_sha256": m.get("volume_sha256"),
            "labels_sha256": labels_sha256(labels.members(it.row).values()),
            "shape": m.get("shape"),
        }
        for c in SAMPLE_COLUMNS:
            cols[c].append(vals[c])
        if not ok:
            failures.append({"row": it.row, "scan_id": it.scan_id, "reason": m["reason"], "detail": m["detail"]})
        for kind, detail in sorted(m.get("notes", {}).items()):
            notes[kind].append({"row": it.row, "scan_id": it.scan_id, "detail": detail})
    write_parquet_atomic(out / MANIFEST_DIR / "samples.parquet", pa.table(cols, schema=samples_schema()))
    write_parquet_atomic(
        out / MANIFEST_DIR / "shards.parquet", pa.Table.from_pylist(shard_rows, schema=shards_schema())
    )

    ok_metas = [m for m in metas.values() if m["status"] == STATUS_OK]
    raw = sum(m["raw_bytes"] for m in ok_metas)
    enc = sum(m["volume_bytes"] for m in ok_metas)
    counts = {
        "scans_in_table": len(plan.items) + len(plan.not_labelled),
        "not_labelled": len(plan.not_labelled),
        "labelled": len(plan.items),
        "ok": len(ok_metas),
        "failed": len(failures),
        "wds_shards": sum(r["format"] == WDS_DIR for r in shard_rows),
        "zarr_shard_files": sum(r["format"] == ZARR_DIR for r in shard_rows),
        "compression_ratio": round(raw / enc, 4) if enc else None,
    }
    build = {
        "format_version": FORMAT_VERSION,
        "config": output_config(cfg),
        "orientation": CANONICAL_ORIENTATION,
        "samples_per_wds_shard": cfg.samples_per_wds_shard,
        "software": software_versions(),
        "counts": counts,
        "failures": failures,
        "not_labelled_scan_ids": plan.not_labelled,
        "reason_codes": {r: REASONS[r] for r in sorted({f["reason"] for f in failures})},
        "notes": notes,
        "wds_labels": wds_labels,
        "labels_fingerprint": labels.fingerprint,
    }
    write_json_atomic(out / MANIFEST_DIR / "build.json", build)
    return dict(counts)
