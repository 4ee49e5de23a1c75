"""Remote shards (fsspec memory://) through the size-bounded local cache."""

from __future__ import annotations

from pathlib import Path

import fsspec
from loader_helpers import assert_batches_true, run_epoch

from tte_scale.data import LoaderConfig, build_loader
from tte_scale.data.storage import ShardCache


def test_remote_shards_are_cached_and_evicted(shards, tmp_path):
    fs = fsspec.filesystem("memory")
    root = Path(shards["root"])
    for f in root.rglob("*"):
        if f.is_file() and "zarr" not in f.parts:
            fs.pipe_file(f"/remote/{f.relative_to(root)}", f.read_bytes())
    shard_size = (root / "wds" / "shard-000000.tar").stat().st_size
    cache = tmp_path / "cache"
    local, _, _ = run_epoch(shards["root"], batch_size=2, num_workers=0, seed=4)
    ids, batches, loader = run_epoch(
        "memory://remote",
        batch_size=2,
        num_workers=0,
        seed=4,
        cache_dir=str(cache),
        cache_max_bytes=int(shard_size * 1.5),
    )
    assert ids == local
    assert_batches_true(batches, shards)
    cached = [f for f in cache.iterdir() if f.name != ".lock"]
    assert len(cached) == 1 and sum(f.stat().st_size for f in cached) <= shard_size * 1.5  # bound kept
    fs.rm("/remote", recursive=True)


def test_cache_reuses_and_evicts_least_recently_used(tmp_path):
    fs = fsspec.filesystem("memory")
    for i in range(3):
        fs.pipe_file(f"/c/{i}.tar", bytes([i]) * 100)
    cache = ShardCache(str(tmp_path / "cache"), max_bytes=250)
    a = cache.local_path("memory://c/0.tar")
    cache.local_path("memory://c/1.tar")
    assert cache.local_path("memory://c/0.tar") == a and cache.downloads == 2  # reused, 0 now most recent
    import os
    import time

    os.utime(a, (time.time() + 10, time.time() + 10))
    cache.local_path("memory://c/2.tar")  # 300 bytes > 250: evict the least recently used (1)
    names = sorted(p.name.split("-", 1)[1] for p in (tmp_path / "cache").iterdir() if p.name != ".lock")
    assert names == ["0.tar", "2.tar"] and cache.evictions == 1
    assert Path(a).read_bytes() == bytes([0]) * 100
    fs.rm("/c", recursive=True)


def test_missing_remote_shard_is_replaced(shards, tmp_path):
    fs = fsspec.filesystem("memory")
    root = Path(shards["root"])
    for f in root.rglob("*"):
        if f.is_file() and "zarr" not in f.parts and f.name != "shard-000002.tar":
            fs.pipe_file(f"/remote2/{f.relative_to(root)}", f.read_bytes())
    loader = build_loader(
        "memory://remote2",
        LoaderConfig(batch_size=4, num_workers=0, max_bad_fraction=0.5, cache_dir=str(tmp_path / "c")),
    )
    batches = list(loader)
    assert len(batches) == 3 and loader.stats()["replaced_missing"] == 4 and loader.stats()["shards_missing"] == 1
    assert_batches_true(batches, shards)
    fs.rm("/remote2", recursive=True)
