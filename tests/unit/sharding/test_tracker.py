"""The driver's state in the middle of a build (sharding.tracker), step by step, without I/O."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tte_scale.formats.shards import WDS_DIR, ZARR_DIR
from tte_scale.sharding.plan import Plan, PlanItem
from tte_scale.sharding.tracker import Pending, Writers


def plan_of(wds_shards, zarr_rows_per_shard, n):
    wds_of = {r: s for s, rows in enumerate(wds_shards) for r in rows}
    items = [
        PlanItem(
            row=r,
            scan_id=f"s{r}",
            subject_id=r,
            split="train",
            image_path=f"{r}.nii.gz",
            modality="CT",
            wds_shard=wds_of[r],
            zarr_shard=r // zarr_rows_per_shard,
            scans_table="/x/scans.parquet",
        )
        for r in range(n)
    ]
    zarr = [list(range(s, min(n, s + zarr_rows_per_shard))) for s in range(0, n, zarr_rows_per_shard)]
    return Plan(items, wds_shards, ["train"] * len(wds_shards), zarr, [])


def test_each_shard_completes_once_and_refs_are_held_exactly_until_all_writers_have_them():
    # WebDataset shards and Zarr shards cut the rows differently: rows 0-4 | 5-6, Zarr 0-2 | 3-5 | 6
    plan = plan_of([[0, 1, 2, 3, 4], [5, 6]], 3, 7)
    for order in (list(range(7)), list(range(6, -1, -1)), [3, 0, 6, 1, 5, 2, 4]):
        pending = Pending.of(plan, [0, 1], [0, 1, 2])
        assert pending.rows_to_read() == list(range(7))
        completed = []
        for row in order:
            complete = pending.finish({"row": row, "status": "ok"}, f"data{row}", f"vol{row}")
            for kind, shard in complete:
                rows = pending.rows(kind, shard)
                assert all(r in pending.refs for r in rows)  # the writer can be given every ref
            pending.release(complete)
            completed += complete
            read = set(order[: order.index(row) + 1])
            # a read row is held while one of its shards still waits for rows
            held = {
                r
                for r in read
                if plan.items[r].wds_shard in pending.rows_left[WDS_DIR]
                or plan.items[r].zarr_shard in pending.rows_left[ZARR_DIR]
            }
            assert set(pending.refs) == held
        assert sorted(completed) == [(WDS_DIR, 0), (WDS_DIR, 1), (ZARR_DIR, 0), (ZARR_DIR, 1), (ZARR_DIR, 2)]
        assert pending.refs == {}


def test_shards_complete_from_an_earlier_run_are_not_waited_for():
    plan = plan_of([[0, 1, 2, 3], [4, 5]], 2, 6)
    pending = Pending.of(plan, [1], [0])  # WebDataset shard 0 and Zarr shards 1, 2 were kept
    assert pending.rows_to_read() == [0, 1, 4, 5]
    out = [pending.finish({"row": r, "status": "ok"}, None, None) for r in (4, 0, 5, 1)]
    assert out == [[], [], [(WDS_DIR, 1)], [(ZARR_DIR, 0)]]


def test_failed_rows_are_holes_and_absent_from_the_tar():
    class Labels:
        def members(self, row):
            return {"tte_time.npy": b"x"}

    class Cfg:
        imaging = type("I", (), {"spacing_mm": (1.0, 1.0, 1.0)})()
        codec = {"id": "zstd"}

    plan = plan_of([[0, 1, 2]], 3, 3)
    pending = Pending.of(plan, [0], [0])
    for r in range(3):
        meta = {"row": r, "status": "failed" if r == 1 else "ok", "shape": [2, 2, 2], "scanner": {}}
        pending.finish(meta, f"data{r}", np.zeros(1) + r)
    assert [key for key, _ in pending.wds_samples(0, Labels(), Cfg())] == ["s0", "s2"]
    vols = pending.zarr_volumes(0)
    assert vols[1] is None and vols[2][0] == 2
    result = {"path": "/o/wds/shard-000000.tar", "samples": 2, "bytes": 10, "sha256": "ab"}
    rec = pending.record(Path("/o"), WDS_DIR, 0, result)
    assert rec["path"] == "wds/shard-000000.tar" and [m["row"] for m in rec["rows"]] == [0, 1, 2]


def test_writers_yield_each_finished_writer_once():
    class Ex:  # a non-blocking wait finds one writer done at a time
        def wait(self, refs, num_returns=1, timeout=None):
            return refs[:num_returns] if timeout is None else refs[:1], []

        def get(self, ref):
            return {"ref": ref}

    w = Writers(Ex())
    for s in range(3):
        w.start(WDS_DIR, s, f"ref{s}")
    assert [(k, s) for k, s, _ in w.finished(block=False)] == [(WDS_DIR, 0), (WDS_DIR, 1), (WDS_DIR, 2)]
    assert list(w.finished(block=True)) == []
