"""The loader over shards in a bucket (real S3 server): both formats serve exactly the local
batches, and the integrity checks still apply to what was downloaded."""

from __future__ import annotations

import sys
from pathlib import Path

import fsspec
import pytest
from support.shards import write_shards

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from loader_helpers import assert_batches_true, run_epoch  # noqa: E402


def upload_tree(local: Path, url: str, skip=()) -> None:
    fs = fsspec.filesystem("s3")
    for p in sorted(local.rglob("*")):
        rel = p.relative_to(local).as_posix()
        if p.is_file() and rel not in skip:
            fs.put_file(str(p), f"{url[5:]}/{rel}")


@pytest.fixture
def build(tmp_path):
    ids = [f"scan{i:02d}" for i in range(12)]
    ids[5] = "site.a/scan%05"
    info = write_shards(tmp_path / "local", n=12, scan_ids=ids, seed=1)
    info["root"] = tmp_path / "local"
    return info


@pytest.mark.parametrize("fmt,workers", [("wds", 0), ("wds", 2), ("zarr", 0)])
def test_remote_shards_serve_the_local_batches(s3, bucket, build, tmp_path, fmt, workers):
    upload_tree(build["root"], f"{bucket}/shards")
    kw = dict(format=fmt, batch_size=2, num_workers=workers, seed=4)
    local, _, _ = run_epoch(str(build["root"]), **kw)
    ids, batches, loader = run_epoch(f"{bucket}/shards", cache_dir=str(tmp_path / "cache"), **kw)
    assert ids == local and len(ids) == 12
    assert_batches_true(batches, build)
    assert loader.stats()["replaced_corrupt"] == 0 and loader.stats()["replaced_missing"] == 0


def test_shard_rebuilt_at_the_same_url_is_not_served_from_a_stale_cache(s3, bucket, build, tmp_path):
    """The cache is keyed by the manifest's sha256 of the shard: a new build under the same URL is
    downloaded again instead of reading the old tar (whose samples would all fail their checks)."""
    cache = str(tmp_path / "cache")
    upload_tree(build["root"], f"{bucket}/shards")
    run_epoch(f"{bucket}/shards", batch_size=2, num_workers=0, cache_dir=cache)
    ids = [f"scan{i:02d}" for i in range(12)]
    rebuilt = write_shards(tmp_path / "rebuilt", n=12, scan_ids=ids, seed=7)  # other volumes, same names
    upload_tree(tmp_path / "rebuilt", f"{bucket}/shards")
    _, batches, loader = run_epoch(f"{bucket}/shards", batch_size=2, num_workers=0, cache_dir=cache)
    assert loader.stats()["replaced_corrupt"] == 0 and loader.stats()["shards_damaged"] == 0
    assert_batches_true(batches, rebuilt)


def test_download_that_differs_from_the_manifest_never_enters_the_cache(s3, bucket, build, tmp_path):
    upload_tree(build["root"], f"{bucket}/shards", skip={"wds/shard-000001.tar"})
    tar = (build["root"] / "wds" / "shard-000001.tar").read_bytes()
    flipped = tar[:2000] + bytes([tar[2000] ^ 1]) + tar[2001:]  # one bit, in a tar header
    fsspec.filesystem("s3").pipe_file(f"{bucket[5:]}/shards/wds/shard-000001.tar", flipped)
    cache = tmp_path / "cache"
    _, batches, loader = run_epoch(
        f"{bucket}/shards", batch_size=2, num_workers=0, cache_dir=str(cache), max_bad_fraction=0.5
    )
    stats = loader.stats()
    assert stats["shards_damaged"] == 1 and stats["replaced_corrupt"] == 4
    assert_batches_true(batches, build)  # the 4 samples of the damaged shard were replaced by valid ones
    assert not [p for p in cache.iterdir() if "shard-000001" in p.name]


def test_train_and_eval_keep_a_shards_url_as_written():
    """A `Path` folded `s3://b/x` into `s3:/b/x`, which no longer reads as a URL."""
    from tte_scale.config import load_config
    from tte_scale.train.config import PretrainConfig

    cfg = load_config(PretrainConfig, "configs/pretrain/demo.yaml", ["data.shards_dir=s3://bkt/shards/v1"])
    assert cfg.data.shards_dir == "s3://bkt/shards/v1"
