"""The driver of `tte-scale shard`: plan, skip what is complete, map the scans (read +
canonicalize + encode) on the executor, then write the manifest.

Scans finish in any order; as soon as every scan of an output shard is done, that shard's one
writer is started with the scans' object refs. The driver only ever holds small metadata and
the refs of scans whose shards are not complete yet (:class:`sharding.tracker.Pending`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tte_scale.formats.shards import WDS_DIR, ZARR_DIR, wds_shard_name
from tte_scale.sharding import manifest
from tte_scale.sharding.config import ShardConfig
from tte_scale.sharding.executor import make_executor
from tte_scale.sharding.inputs import check_image_roots, check_remote_inputs, input_locations
from tte_scale.sharding.labels import read_labels
from tte_scale.sharding.plan import make_plan, read_scans
from tte_scale.sharding.resume import (
    ZARR_META,
    KeptShards,
    fingerprint,
    prepare_out,
    verify_threads,
    zarr_meta_files,
    zarr_meta_intact,
)
from tte_scale.sharding.state import record_path, write_json_atomic
from tte_scale.sharding.store import create_volumes, write_label_arrays
from tte_scale.sharding.tracker import EMPTY_RESULT, Pending, Writers


def build(
    scans_path,
    labels_dir,
    out,
    cfg: ShardConfig,
    *,
    workers: int = 2,
    ray_address: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    image_roots: list[str | Path] | None = None,
    before_write: Callable[[dict], None] | None = None,
) -> dict:
    """Build (or resume) the shards folder ``out``; return the run summary.

    ``image_roots``: when given, an image resolving outside all of these folders is refused
    before any work (``--image-root``). ``before_write``: called with the build's fingerprint once
    every input is checked, before anything is written (``--out URL`` checks the URL there).
    """
    from tqdm import tqdm

    t0 = time.perf_counter()
    out = Path(out)
    labels = read_labels(labels_dir)
    scans = read_scans(scans_path)
    plan = make_plan(scans, labels, cfg.samples_per_wds_shard, cfg.zarr_volumes_per_shard)
    table_rows = {sid: i for i, sid in enumerate(scans["scan_id"])}
    if image_roots:
        check_image_roots(plan.items, image_roots, table_rows)
    check_remote_inputs(plan.items, table_rows, cfg.storage)
    do_wds, do_zarr = cfg.format in ("wds", "both"), cfg.format in ("zarr", "both")
    inputs = lambda: [scans_path, labels_dir, *(it.image_file for it in plan.items)]  # noqa: E731
    fp = fingerprint(cfg, labels, plan)
    if before_write is not None:
        before_write(fp)
    resumed = prepare_out(out, fp, overwrite, inputs)

    fresh_zarr = do_zarr and not zarr_meta_intact(out)
    if fresh_zarr:  # a new build, or the store's metadata/labels damaged: every Zarr shard is redone
        create_volumes(out / ZARR_DIR, len(plan.items), cfg, labels)
        write_label_arrays(out / ZARR_DIR, labels, cfg.label_chunk_rows)
        write_json_atomic(record_path(out, ZARR_META, 0), {"path": None, "files": zarr_meta_files(out)})
    kinds = {WDS_DIR: len(plan.wds_shards) * do_wds, ZARR_DIR: 0 if fresh_zarr else len(plan.zarr_shards) * do_zarr}
    kept = KeptShards(out, plan, kinds, verify_threads()) if resumed else None
    todo_wds = kept.todo[WDS_DIR] if kept else list(range(kinds[WDS_DIR]))
    todo_zarr = list(range(len(plan.zarr_shards))) if fresh_zarr else kept.todo[ZARR_DIR] if kept else []
    pending = Pending.of(plan, todo_wds, todo_zarr)
    needed = pending.rows_to_read()
    skipped = len(plan.wds_shards) * do_wds + len(plan.zarr_shards) * do_zarr - len(todo_wds) - len(todo_zarr)
    t_checked = time.perf_counter()

    t_start = time.perf_counter()
    ex = make_executor(workers, ray_address, cfg.executor) if needed else None
    start_s = time.perf_counter() - t_start
    stop_s = 0.0
    bar = tqdm(total=len(needed), unit="vol", desc="shard", disable=not progress, dynamic_ncols=True)
    try:
        if ex:
            _run(ex, out, cfg, labels, pending, needed, do_zarr, bar)
    finally:
        bar.close()
        if ex:
            t_stop = time.perf_counter()
            ex.shutdown()
            stop_s = time.perf_counter() - t_stop

    summary = manifest.write_manifest(out, plan, labels, cfg)
    elapsed = time.perf_counter() - t0
    summary.update(
        processed=len(needed),
        skipped_shards=skipped,
        resumed=resumed,
        verified_shards=kept.verified if kept else 0,
        damaged_shards=kept.damaged if kept else 0,
        changed_inputs=len(kept.changed_rows) if kept else 0,
        # plan, output checks and the sha256 of every kept shard (benchmarks: cheap enough to always do)
        check_s=round(t_checked - t0, 3),
        seconds=round(elapsed, 3),
        volumes_per_s=round(len(needed) / elapsed, 3) if elapsed > 0 else None,
        workers=ex.workers if ex else 0,
        executor=ex.name if ex else None,
        # Ray's start-up and shutdown, included in `seconds` (benchmarks/bench_shard.py reports them apart)
        executor_start_s=round(start_s, 3),
        executor_stop_s=round(stop_s, 3),
    )
    write_json_atomic(out / "_state" / "last_run.json", summary)
    # where the images came from: printed by the CLI, never written into the build (absolute paths)
    return {**summary, "inputs": input_locations(plan.items)}


def _run(ex, out: Path, cfg: ShardConfig, labels, pending: Pending, rows: list[int], do_zarr: bool, bar) -> None:
    """Map the scans of ``rows``; start each output shard's writer as soon as its rows are all read
    and write its resume record when the writer is done."""

    def save(kind: str, shard: int, result: dict) -> None:
        write_json_atomic(record_path(out, kind, shard), pending.record(out, kind, shard, result))

    writers = Writers(ex)
    scans = ex.map_scans([pending.plan.items[r] for r in rows], cfg.imaging, cfg.codec, do_zarr, cfg.storage)
    for meta, data, volume in scans:
        bar.update(1)
        complete = pending.finish(meta, data, volume)
        for kind, shard in complete:
            if kind == ZARR_DIR:
                vols = pending.zarr_volumes(shard)
                writers.start(
                    kind, shard, ex.write_zarr(out / ZARR_DIR, pending.rows(kind, shard), vols, cfg.imaging.shape)
                )
            elif samples := pending.wds_samples(shard, labels, cfg):
                writers.start(kind, shard, ex.write_wds(out / WDS_DIR / wds_shard_name(shard), samples))
            else:  # every scan of the shard failed: no empty tar, the record says so
                save(kind, shard, EMPTY_RESULT)
        pending.release(complete)
        for done in writers.finished(block=False):
            save(*done)
    for done in writers.finished(block=True):
        save(*done)
