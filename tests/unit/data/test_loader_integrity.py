"""Damaged shards: every fault detected, counted and logged, replaced deterministically, never served."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from loader_helpers import assert_batches_true, run_epoch

from tte_scale.data import DataIntegrityError
from tte_scale.data.tarindex import index_tar
from tte_scale.formats.shards import sample_key


def _member(root, shard, scan_id, suffix):
    path = Path(root) / "wds" / f"shard-{shard:06d}.tar"
    return path, index_tar(str(path)).members[sample_key(scan_id)][suffix]


def _flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


def _check(root, info, fmt="wds", workers=0, **kw):
    ids, batches, loader = run_epoch(root, format=fmt, batch_size=4, num_workers=workers, max_bad_fraction=0.5, **kw)
    assert len(batches) == 3  # same number of steps as an intact split
    assert_batches_true(batches, info)  # nothing silently wrong
    return ids, loader.stats()


@pytest.mark.parametrize("suffix,check", [("volume.bin", "crc32c"), ("tte_time.npy", "sha256")])
def test_flipped_data_byte(shards_copy, caplog, suffix, check):
    victim = shards_copy["scan_ids"][5]
    path, (off, size) = _member(shards_copy["root"], 1, victim, suffix)
    _flip(path, off + size // 2)
    with caplog.at_level(logging.WARNING, logger="tte_scale.data"):
        ids, stats = _check(shards_copy["root"], shards_copy, workers=2)
    assert victim not in ids and stats["replaced_corrupt"] == 1 and stats["replaced_missing"] == 0
    assert victim in caplog.text and "shard-000001.tar" in caplog.text and check in caplog.text


def test_corrupt_tar_header_resyncs(shards_copy, caplog):
    victim = shards_copy["scan_ids"][4]  # first sample of shard 1
    path, (off, _) = _member(shards_copy["root"], 1, victim, "volume.bin")
    with open(path, "r+b") as f:
        f.seek(off - 512)  # the member's header block
        f.write(b"garbage!")
    with caplog.at_level(logging.WARNING, logger="tte_scale.data"):
        ids, stats = _check(shards_copy["root"], shards_copy)
    assert victim not in ids
    assert set(shards_copy["scan_ids"][5:8]) <= set(ids)  # the rest of the shard is still read
    assert stats["replaced_missing"] == 1 and stats["shards_damaged"] == 1 and stats["shard_count_mismatch"] == 1
    assert "corrupt tar header" in caplog.text


def test_truncated_shard(shards_copy):
    last = shards_copy["scan_ids"][11]
    path, (off, size) = _member(shards_copy["root"], 2, last, "volume.bin")
    os.truncate(path, off + size // 2)
    ids, stats = _check(shards_copy["root"], shards_copy)
    assert last not in ids and set(shards_copy["scan_ids"][8:11]) <= set(ids)
    assert stats["replaced_missing"] == 1 and stats["shard_count_mismatch"] == 1 and stats["shards_damaged"] == 1


def test_deleted_shard(shards_copy, caplog):
    os.remove(Path(shards_copy["root"]) / "wds" / "shard-000000.tar")
    with caplog.at_level(logging.WARNING, logger="tte_scale.data"):
        ids, stats = _check(shards_copy["root"], shards_copy, workers=2)
    assert not set(shards_copy["scan_ids"][:4]) & set(ids)
    assert stats["replaced_missing"] == 4 and stats["shards_missing"] == 1
    assert "shard(s) missing" in caplog.text
    with pytest.raises(DataIntegrityError, match=r"1 shard\(s\) missing \(4 of 12 samples\)"):
        run_epoch(shards_copy["root"], batch_size=4, num_workers=0, max_bad_fraction=0.25)


def test_abort_past_max_bad_fraction_names_scans(shards_copy):
    for i in (1, 9):
        victim = shards_copy["scan_ids"][i]
        path, (off, size) = _member(shards_copy["root"], i // 4, victim, "volume.bin")
        _flip(path, off + 3)
    with pytest.raises(DataIntegrityError, match="2 corrupt or missing samples") as err:
        run_epoch(shards_copy["root"], batch_size=4, num_workers=0, max_bad_fraction=0.1)
    assert shards_copy["scan_ids"][1] in str(err.value) or shards_copy["scan_ids"][9] in str(err.value)


def test_zarr_flipped_byte_and_missing_shard(shards_copy, caplog):
    vol_dir = Path(shards_copy["root"]) / "zarr" / "volumes" / "c"
    first = vol_dir / "0" / "0" / "0" / "0"  # rows 0-3
    size = first.stat().st_size
    _flip(first, size // 3)
    os.remove(vol_dir / "2" / "0" / "0" / "0")  # rows 8-11
    with caplog.at_level(logging.WARNING, logger="tte_scale.data"):
        ids, stats = _check(shards_copy["root"], shards_copy, fmt="zarr")
    assert stats["replaced_corrupt"] == 1 and stats["replaced_missing"] == 4
    assert not set(shards_copy["scan_ids"][8:]) & set(ids)
    assert "zarr/volumes shard 2" in caplog.text


def test_zarr_flipped_label_byte(shards_copy):
    chunk = Path(shards_copy["root"]) / "zarr" / "tte" / "time" / "c" / "1" / "0"  # rows 5-9
    _flip(chunk, chunk.stat().st_size // 2)
    ids, stats = _check(shards_copy["root"], shards_copy, fmt="zarr")
    assert stats["replaced_corrupt"] == 5
    assert not set(shards_copy["scan_ids"][5:10]) & set(ids)


def _tamper_manifest_sha256(root, row):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(root) / "manifest" / "samples.parquet"
    table = pq.read_table(path)
    digests = table["volume_sha256"].to_pylist()
    digests[row] = "0" * 64
    pq.write_table(
        table.set_column(
            table.schema.get_field_index("volume_sha256"), "volume_sha256", pa.array(digests, pa.string())
        ),
        path,
    )


def test_volume_sha256_checked_without_crc_or_on_request(tmp_path, caplog):
    from support.shards import write_shards

    old = tmp_path / "old"  # a manifest without volume_crc32c: the decoded volume is hashed
    info = write_shards(old, n=12, crc32c=False)
    _tamper_manifest_sha256(old, 3)
    with caplog.at_level(logging.WARNING, logger="tte_scale.data"):
        ids, stats = _check(str(old), info)
    assert info["scan_ids"][3] not in ids and stats["replaced_corrupt"] == 1 and "volume sha256" in caplog.text

    new = tmp_path / "new"  # with the CRC the sha256 is skipped unless verify_volume_sha256 asks for it
    info = write_shards(new, n=12)
    _tamper_manifest_sha256(new, 3)
    ids, stats = _check(str(new), info)
    assert info["scan_ids"][3] in ids and stats["replaced_corrupt"] == 0
    for fmt in ("wds", "zarr"):
        ids, stats = _check(str(new), info, fmt=fmt, verify_volume_sha256=True)
        assert info["scan_ids"][3] not in ids and stats["replaced_corrupt"] == 1


def test_zarr_volume_hash_needed_only_without_chunk_crc32c():
    import zarr
    from zarr.codecs import Crc32cCodec, ZstdCodec

    from tte_scale.data.readers import _has_chunk_crc32c

    g = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
    kw = {"shape": (4, 2, 2, 2), "chunks": (1, 2, 2, 2), "dtype": "int16"}
    assert _has_chunk_crc32c(g.create_array("a", shards=(2, 2, 2, 2), compressors=[ZstdCodec(), Crc32cCodec()], **kw))
    assert _has_chunk_crc32c(g.create_array("b", compressors=[ZstdCodec(), Crc32cCodec()], **kw))
    assert not _has_chunk_crc32c(g.create_array("c", shards=(2, 2, 2, 2), compressors=[ZstdCodec()], **kw))
