"""The driver of `tte-scale shard`: plan, skip what is complete, map the scans (read +
canonicalize + encode) on the executor, then write the manifest.

Scans finish in any order; as soon as every scan of an output shard is done, that shard's one
writer is started with the scans' object refs. The driver only ever holds small metadata and
the refs of scans whose shards are not complete yet.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from sharding import manifest
from sharding.config import ShardConfig, output_config
from sharding.executor import make_executor
from sharding.labels import read_labels
from sharding.plan import make_plan, read_scans, wds_key
from sharding.samples import header_json
from sharding.state import clean_partials, load_record, record_path, write_json_atomic
from sharding.store import create_volumes, write_label_arrays
from tte_scale.errors import InputError

OUTPUT_DIRS = ("wds", "wds-labels", "zarr", "manifest", "_state")


def _fingerprint(cfg: ShardConfig, labels, plan) -> dict:
    import hashlib
    import json

    h = hashlib.sha256(json.dumps(output_config(cfg), sort_keys=True).encode())
    h.update(labels.fingerprint.encode())
    # image_path as the scans table writes it: moving the cohort folder must not change the plan
    for it in plan.items:
        h.update(f"{it.row}\0{it.scan_id}\0{it.image_path}\0{it.modality}\n".encode())
    return {"fingerprint": h.hexdigest()}


def _prepare_out(out: Path, fp: dict, overwrite: bool) -> bool:
    """Make ``out`` ready; return True when an earlier build of the same plan is resumed."""
    import json

    plan_file = out / "_state" / "plan.json"
    if overwrite:
        for d in OUTPUT_DIRS:
            shutil.rmtree(out / d, ignore_errors=True)
    elif plan_file.is_file():
        if json.loads(plan_file.read_text()) != fp:
            raise InputError(
                f"{out}: holds a build of different scans/labels/config; pass --overwrite to replace it "
                "(or --relabel to attach new labels to the existing volumes)"
            )
        clean_partials(out)
        return True
    elif any((out / d).exists() for d in OUTPUT_DIRS):
        raise InputError(f"{out}: holds shard outputs without a build plan; pass --overwrite to replace them")
    write_json_atomic(plan_file, fp)
    return False


def build(
    scans_path, labels_dir, out, cfg: ShardConfig, *, workers: int = 2, ray_address: str | None = None,
    overwrite: bool = False, progress: bool = True,
) -> dict:
    """Build (or resume) the shards folder ``out``; return the run summary."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    out = Path(out)
    labels = read_labels(labels_dir)
    plan = make_plan(read_scans(scans_path), labels, cfg.samples_per_wds_shard, cfg.zarr_volumes_per_shard)
    do_wds, do_zarr = cfg.format in ("wds", "both"), cfg.format in ("zarr", "both")
    resumed = _prepare_out(out, _fingerprint(cfg, labels, plan), overwrite)

    if do_zarr and load_record(out, "zarr-meta", 0) is None:
        create_volumes(out / "zarr", len(plan.items), cfg, labels)
        write_label_arrays(out / "zarr", labels, cfg.label_chunk_rows)
        write_json_atomic(record_path(out, "zarr-meta", 0), {"path": None})

    todo_wds = {s: set(r) for s, r in enumerate(plan.wds_shards) if do_wds and load_record(out, "wds", s) is None}
    todo_zarr = {z: set(r) for z, r in enumerate(plan.zarr_shards) if do_zarr and load_record(out, "zarr", z) is None}
    needed = sorted(set().union(*todo_wds.values(), *todo_zarr.values()))
    skipped = len(plan.wds_shards) * do_wds + len(plan.zarr_shards) * do_zarr - len(todo_wds) - len(todo_zarr)

    t_start = time.perf_counter()
    ex = make_executor(workers, ray_address, cfg.executor) if needed else None
    start_s = time.perf_counter() - t_start
    stop_s = 0.0
    metas: dict[int, dict] = {}
    refs: dict[int, tuple] = {}  # row -> (data, volume) refs, until its shards have their writers
    writers: list[tuple[str, int, object]] = []
    bar = tqdm(total=len(needed), unit="vol", desc="shard", disable=not progress, dynamic_ncols=True)

    def finish_writers(block: bool) -> None:
        while writers:
            done, _ = ex.wait([w[2] for w in writers], num_returns=len(writers) if block else 1, timeout=None if block else 0)
            if not done:
                return
            done_set = set(done)
            for kind, shard, ref in [w for w in writers if w[2] in done_set]:
                res = ex.get(ref)
                rows = plan.wds_shards[shard] if kind == "wds" else plan.zarr_shards[shard]
                rec = {
                    "path": None if res["path"] is None else str(Path(res["path"]).relative_to(out)),
                    "samples": res["samples"], "bytes": res["bytes"], "sha256": res["sha256"],
                    "split": plan.wds_split[shard] if kind == "wds" else None,
                    "rows": [metas[r] for r in rows],
                }
                write_json_atomic(record_path(out, kind, shard), rec)
                writers[:] = [w for w in writers if w[2] is not ref]

    def shard_ready(row: int) -> None:
        it = plan.items[row]
        if it.wds_shard in todo_wds:
            left = todo_wds[it.wds_shard]
            left.discard(row)
            if not left:
                rows = plan.wds_shards[it.wds_shard]
                samples = []
                for r in rows:
                    if metas[r]["status"] != "ok":
                        continue
                    pi = plan.items[r]
                    members = [("header.json", header_json(pi, metas[r], cfg.imaging, cfg.codec)), ("volume.bin", refs[r][0])]
                    members += list(labels.members(r).items())
                    samples.append((wds_key(pi.scan_id), members))
                path = out / "wds" / f"shard-{it.wds_shard:06d}.tar"
                if samples:
                    writers.append(("wds", it.wds_shard, ex.write_wds(path, samples)))
                else:  # every scan failed: no empty tar, the record says so
                    write_json_atomic(record_path(out, "wds", it.wds_shard), {
                        "path": None, "samples": 0, "bytes": 0, "sha256": None,
                        "split": plan.wds_split[it.wds_shard], "rows": [metas[r] for r in rows],
                    })
                del todo_wds[it.wds_shard]
        if it.zarr_shard in todo_zarr:
            left = todo_zarr[it.zarr_shard]
            left.discard(row)
            if not left:
                rows = plan.zarr_shards[it.zarr_shard]
                vols = [refs[r][1] if metas[r]["status"] == "ok" else None for r in rows]
                writers.append(("zarr", it.zarr_shard, ex.write_zarr(out / "zarr", rows, vols, cfg.imaging.shape)))
                del todo_zarr[it.zarr_shard]

    try:
        if ex:
            scans = ex.map_scans([plan.items[r] for r in needed], cfg.imaging, cfg.codec, do_zarr)
            for meta, data, vol in scans:
                row = meta["row"]
                metas[row] = meta
                refs[row] = (data, vol)
                bar.update(1)
                shard_ready(row)
                # drop scan refs whose shards all have their writer (the writer holds them now)
                for r in list(refs):
                    it = plan.items[r]
                    if it.wds_shard not in todo_wds and it.zarr_shard not in todo_zarr:
                        del refs[r]
                finish_writers(block=False)
            finish_writers(block=True)
    finally:
        bar.close()
        if ex:
            t_stop = time.perf_counter()
            ex.shutdown()
            stop_s = time.perf_counter() - t_stop

    summary = manifest.write_manifest(out, plan, labels, cfg)
    elapsed = time.perf_counter() - t0
    summary.update(
        processed=len(needed), skipped_shards=skipped, resumed=resumed, seconds=round(elapsed, 3),
        volumes_per_s=round(len(needed) / elapsed, 3) if elapsed > 0 else None,
        workers=ex.workers if ex else 0, executor=ex.name if ex else None,
        # Ray's start-up and shutdown, included in `seconds` (benchmarks/bench_shard.py reports them apart)
        executor_start_s=round(start_s, 3), executor_stop_s=round(stop_s, 3),
    )
    write_json_atomic(out / "_state" / "last_run.json", summary)
    return summary
