"""The Zarr reader's direct chunk path (tte_scale/data/zarr_chunks.py): same volumes as zarr
itself, without going through zarr's read machinery, and zarr's own API for any other layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from tte_scale.data.readers import SampleError, ZarrReader
from tte_scale.data.split_index import read_split_index
from tte_scale.data.zarr_chunks import ChunkCorrupt, ChunkMissing, ShardChunks, plan


def _reader(root) -> ZarrReader:
    return ZarrReader(read_split_index(str(root), "train", "zarr"))


def test_volumes_are_read_without_zarr_array_reads(shards, monkeypatch):
    """The volume comes from one pread + decode into the batch slot: zarr's array read (event
    loop, codec threads, two intermediate arrays) cost 1.5x the WebDataset read per volume."""

    def guarded(method):
        def read(self, *args, **kwargs):
            if "volumes" in str(self.store_path):
                raise AssertionError("volume read through zarr's array API")
            return method(self, *args, **kwargs)

        return read

    monkeypatch.setattr(zarr.Array, "__getitem__", guarded(zarr.Array.__getitem__))
    monkeypatch.setattr(zarr.Array, "get_basic_selection", guarded(zarr.Array.get_basic_selection))
    reader = _reader(shards["root"])
    out = np.empty(reader.index.shape, dtype=np.int16)
    ix = reader.index
    for k in range(ix.num_samples):
        reader.read(k, out)
        np.testing.assert_array_equal(out, shards["volumes"][int(ix.rows[k])])
    reader.close()


def test_other_layouts_are_read_through_zarr(tmp_path):
    """An array without the crc32c codec (or any other chain) is not the direct path's layout."""
    from zarr.codecs import ZstdCodec

    a = zarr.create_array(
        str(tmp_path / "v"), shape=(4, 3, 5, 6), chunks=(1, 3, 5, 6), shards=(2, 3, 5, 6), dtype="int16",
        compressors=[ZstdCodec(level=1)],
    )  # fmt: skip
    assert plan(a, str(tmp_path / "v")) is None
    b = zarr.create_array(str(tmp_path / "w"), shape=(4, 3, 5, 6), chunks=(1, 3, 5, 6), dtype="int16")
    assert plan(b, str(tmp_path / "w")) is None  # no sharding codec


def test_damaged_index_absent_chunk_and_absent_shard(tmp_path):
    from zarr.codecs import BloscCodec, Crc32cCodec

    vols = np.arange(6 * 3 * 5 * 6, dtype=np.int16).reshape(6, 3, 5, 6)
    folder = tmp_path / "v"
    a = zarr.create_array(
        str(folder), shape=(6, 3, 5, 6), chunks=(1, 3, 5, 6), shards=(2, 3, 5, 6), dtype="int16",
        compressors=[BloscCodec(cname="zstd", clevel=3, shuffle="shuffle", typesize=2), Crc32cCodec()], fill_value=0,
    )  # fmt: skip
    a[0:2] = vols[0:2]
    a[2] = vols[2]  # row 3 stays absent from shard 1
    layout = plan(a, str(folder))
    assert layout is not None and layout.codec == {"id": "blosc"}
    chunks = ShardChunks(layout)
    out = np.empty((3, 5, 6), dtype=np.int16)
    for row in range(3):
        chunks.read(row, out)
        np.testing.assert_array_equal(out, vols[row])
    with pytest.raises(ChunkMissing, match="absent from its shard"):
        chunks.read(3, out)
    with pytest.raises(ChunkMissing, match="shard file"):
        chunks.read(4, out)  # shard 2 never written
    chunks.close()
    shard0 = Path(layout.shard_path(0))
    data = bytearray(shard0.read_bytes())
    data[-10] ^= 0xFF  # inside the index
    shard0.write_bytes(bytes(data))
    with pytest.raises(ChunkCorrupt, match="index crc32c"):
        ShardChunks(layout).read(0, out)


def test_flipped_chunk_byte_is_corrupt_not_decoded(shards_copy):
    first = Path(shards_copy["root"]) / "zarr" / "volumes" / "c" / "0" / "0" / "0" / "0"
    data = bytearray(first.read_bytes())
    data[100] ^= 0x01
    first.write_bytes(bytes(data))
    reader = _reader(shards_copy["root"])
    out = np.empty(reader.index.shape, dtype=np.int16)
    k = int(np.flatnonzero(np.asarray(reader.index.rows) == 0)[0])
    with pytest.raises(SampleError, match="crc32c") as err:
        reader.read(k, out)
    assert err.value.kind == "corrupt"
