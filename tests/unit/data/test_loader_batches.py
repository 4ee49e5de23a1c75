"""Batches of the loader: contract, equality of both formats, worker-count independence."""

from __future__ import annotations

import pytest
import torch
from loader_helpers import assert_batches_true, run_epoch

from tte_scale.config import ConfigError
from tte_scale.data import LoaderConfig, build_loader
from tte_scale.errors import InputError


def test_batch_contract_and_content(shards):
    ids, batches, loader = run_epoch(shards["root"], batch_size=3, num_workers=0)
    assert loader.steps_per_epoch == 4 and len(batches) == 4
    b = batches[0]
    assert b["volume"].dtype == torch.int16 and tuple(b["volume"].shape) == (3, 1, 8, 12, 10)
    assert b["tte_time"].dtype == torch.float32 and tuple(b["tte_time"].shape) == (3, 6)
    assert b["tte_event"].dtype == torch.bool and b["bench_label"].dtype == torch.int8
    assert b["bench_time"].dtype == torch.float32 and b["bench_event"].dtype == torch.bool
    assert b["row"].dtype == torch.int64 and isinstance(b["scan_id"], list)
    assert sorted(ids) == sorted(shards["scan_ids"])  # an epoch is every sample once
    assert_batches_true(batches, shards)
    assert loader.stats()["replaced_corrupt"] == 0 and loader.stats()["samples"] == 12


def test_wds_and_zarr_give_the_same_stream(shards):
    wds, _, _ = run_epoch(shards["root"], format="wds", batch_size=2, num_workers=0, seed=5)
    zarr_ids, batches, _ = run_epoch(shards["root"], format="zarr", batch_size=2, num_workers=0, seed=5)
    assert wds == zarr_ids
    assert_batches_true(batches, shards)


@pytest.mark.parametrize("fmt,workers", [("wds", 1), ("wds", 3), ("zarr", 2)])
def test_same_order_whatever_the_number_of_workers(shards, fmt, workers):
    ref, _, _ = run_epoch(shards["root"], format=fmt, batch_size=2, num_workers=0, seed=1)
    ids, batches, _ = run_epoch(shards["root"], format=fmt, batch_size=2, num_workers=workers, seed=1)
    assert ids == ref
    assert_batches_true(batches, shards)


def test_epochs_and_seeds_change_the_order(shards):
    cfg = LoaderConfig(batch_size=4, num_workers=0, seed=2, shuffle_window=8)
    loader = build_loader(shards["root"], cfg)
    e0 = [s for b in loader for s in b["scan_id"]]
    assert loader.epoch == 1  # a finished epoch advances the cursor
    e1 = [s for b in loader for s in b["scan_id"]]
    assert sorted(e0) == sorted(e1) and e0 != e1
    loader.set_epoch(0)
    assert [s for b in loader for s in b["scan_id"]] == e0
    other, _, _ = run_epoch(shards["root"], batch_size=4, num_workers=0, seed=3, shuffle_window=8)
    assert other != e0


@pytest.mark.parametrize("world,batch", [(1, 5), (2, 2), (3, 3), (2, 5)])
def test_every_rank_takes_the_same_steps_and_ranks_are_disjoint(shards, world, batch):
    per_rank = [
        run_epoch(shards["root"], batch_size=batch, num_workers=0, rank=r, world_size=world)[0] for r in range(world)
    ]
    steps = 12 // (batch * world)
    assert all(len(ids) == steps * batch for ids in per_rank)
    flat = [s for ids in per_rank for s in ids]
    assert len(set(flat)) == len(flat)  # disjoint; the remainder (12 mod global batch) is dropped


def test_too_small_split_and_bad_inputs(shards, tmp_path):
    with pytest.raises(Exception, match="fewer than one global batch"):
        build_loader(shards["root"], LoaderConfig(batch_size=7, num_workers=0), rank=0, world_size=2)
    with pytest.raises(InputError, match="no `ok` samples in split 'tuning'"):
        build_loader(shards["root"], LoaderConfig(split="tuning", num_workers=0))
    with pytest.raises(InputError, match="samples.parquet: manifest table not found"):
        build_loader(str(tmp_path), LoaderConfig())
    with pytest.raises(ConfigError, match="batch_size"):
        LoaderConfig(batch_size=0)
    with pytest.raises(ValueError, match="rank"):
        build_loader(shards["root"], LoaderConfig(num_workers=0), rank=2, world_size=2)


def test_splits_and_failed_rows(tmp_path):
    from support.shards import write_shards

    splits = ["train"] * 6 + ["tuning"] * 4
    info = write_shards(tmp_path / "s", n=10, splits=splits, failed_rows=(2, 7), samples_per_shard=3)
    ids, batches, _ = run_epoch(str(tmp_path / "s"), split="tuning", batch_size=1, num_workers=0)
    assert sorted(ids) == sorted(info["scan_ids"][i] for i in (6, 8, 9))
    zids, zb, _ = run_epoch(str(tmp_path / "s"), format="zarr", split="train", batch_size=1, num_workers=0)
    assert sorted(zids) == sorted(info["scan_ids"][i] for i in (0, 1, 3, 4, 5))
    assert_batches_true(zb, info)


def test_shared_slots_are_not_overwritten_before_they_are_copied(shards):
    """One prefetched batch per worker (two slots each) and a consumer slower than the workers:
    every batch must still hold its own samples, and a second epoch reuses the slots."""
    import time

    cfg = LoaderConfig(batch_size=1, num_workers=2, prefetch_factor=1, seed=6)
    loader = build_loader(shards["root"], cfg)
    for _ in range(2):
        batches = []
        for b in loader:
            time.sleep(0.02)
            batches.append(b)
        assert len(batches) == 12
        assert_batches_true(batches, shards)
