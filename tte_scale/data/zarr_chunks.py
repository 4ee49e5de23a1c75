"""One volume of a local Zarr `volumes` array read as one chunk: index lookup, one pread, crc32c,
decode straight into the caller's buffer.

Why not `array[row]`: zarr-python 3 runs every read through its asyncio event-loop thread and a
codec thread pool, decodes the chunk into a fresh array, copies it into a fresh shard-sized output
array, and the loader then copied that into its batch slot: per 160 x 224 x 224 volume that cost
1.5x the CPU of the WebDataset read of the same bytes (benchmarks/results/loader_512.md). The
`volumes` array the sharding job writes has a fixed, standard layout (docs/formats.md: Zarr v3
`sharding_indexed`, one whole volume per inner chunk, inner codecs `bytes` little-endian -> one
Blosc/Zstd/Gzip compressor -> `crc32c`, index `bytes` + `crc32c`), which the Zarr v3 sharding
specification pins down to the byte: the shard index is ``chunks_per_shard`` pairs of little-endian
uint64 (offset, nbytes), ``2**64 - 1`` twice for an absent chunk, followed by its CRC-32C. For that
layout, and only for a local store, :func:`plan` returns a :class:`ChunkLayout` and
:class:`ShardChunks` reads a volume with the decode alone as its cost; any other array (another
codec chain, a remote store) returns None and the reader stays on zarr's own API.

Decoding uses numcodecs, the library zarr's Blosc/Zstd/Gzip codecs call themselves.
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from dataclasses import dataclass

import google_crc32c
import numpy as np

__all__ = ["ChunkLayout", "ShardChunks", "ChunkMissing", "ChunkCorrupt", "plan"]

_EMPTY = 2**64 - 1
# CRC-32C of any message followed by its own CRC-32C (little-endian): checking a chunk this way
# needs no copy of its bytes without the last four.
_CRC32C_RESIDUE = 0x48674BC7
_MAX_OPEN = 8


class ChunkMissing(Exception):
    """The shard file or the chunk (an empty index entry) is absent."""


class ChunkCorrupt(Exception):
    """Index or chunk bytes fail their CRC-32C, are truncated, or do not decode."""


@dataclass(frozen=True, slots=True)
class ChunkLayout:
    """Where the volumes of a `volumes` array lie and how they are encoded."""

    folder: str
    """The array's folder (holds `c/`)."""
    rows_per_shard: int
    """Rows (volumes) per shard file: chunks per shard, one volume per chunk."""
    separator: str
    """Chunk key separator of the `default` encoding."""
    index_at_end: bool
    """Index location of the sharding codec."""
    codec: dict
    """numcodecs config of the compressor."""
    volume_ndim: int
    """Dimensions of one volume (3: D, H, W); a chunk key has one more."""

    def shard_path(self, shard: int) -> str:
        parts = ["c", str(shard), *("0" * self.volume_ndim)]
        return os.path.join(self.folder, self.separator.join(parts))


def _numcodecs_config(codec) -> dict | None:
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

    if isinstance(codec, BloscCodec):
        return {"id": "blosc"}  # Blosc frames describe themselves: decoding needs no parameter
    if isinstance(codec, ZstdCodec):
        return {"id": "zstd"}
    if isinstance(codec, GzipCodec):
        return {"id": "gzip"}
    return None


def plan(array, folder: str) -> ChunkLayout | None:
    """The layout of ``array`` (an opened zarr v3 `volumes` array stored in the local ``folder``)
    when it is the one this module reads, else None (read it with zarr)."""
    from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec

    meta = array.metadata
    codecs = list(getattr(meta, "codecs", ()))
    if sys.byteorder != "little" or np.dtype(array.dtype) != np.dtype("int16"):
        return None
    if len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec):
        return None
    sharding = codecs[0]
    shape = tuple(int(n) for n in array.shape)
    shard_shape = tuple(int(n) for n in array.shards)
    inner = tuple(int(n) for n in sharding.chunk_shape)
    if len(shape) < 2 or inner != (1, *shape[1:]) or shard_shape[1:] != shape[1:]:
        return None
    inner_codecs = list(sharding.codecs)
    if len(inner_codecs) != 3:
        return None
    first, comp, last = inner_codecs
    if not isinstance(first, BytesCodec) or str(getattr(first.endian, "value", first.endian)) not in ("little", "None"):
        return None
    if not isinstance(last, Crc32cCodec) or (config := _numcodecs_config(comp)) is None:
        return None
    index_codecs = list(sharding.index_codecs)
    if len(index_codecs) != 2 or not isinstance(index_codecs[0], BytesCodec):
        return None
    if not isinstance(index_codecs[1], Crc32cCodec):
        return None
    key_enc = getattr(meta, "chunk_key_encoding", None)
    if getattr(key_enc, "name", None) != "default":
        return None
    location = str(getattr(sharding.index_location, "value", sharding.index_location))
    if location not in ("start", "end"):
        return None
    return ChunkLayout(
        folder=folder,
        rows_per_shard=shard_shape[0],
        separator=str(key_enc.separator),
        index_at_end=location == "end",
        codec=config,
        volume_ndim=len(shape) - 1,
    )


class ShardChunks:
    """Reads volumes by row through a :class:`ChunkLayout`; keeps a few shard files open and
    their (checked) indexes."""

    def __init__(self, layout: ChunkLayout):
        import numcodecs

        self.layout = layout
        self._codec = numcodecs.get_codec(dict(layout.codec))
        self._fds: OrderedDict[int, tuple[int, np.ndarray]] = OrderedDict()

    def _shard(self, shard: int) -> tuple[int, np.ndarray]:
        got = self._fds.get(shard)
        if got is not None:
            self._fds.move_to_end(shard)
            return got
        path = self.layout.shard_path(shard)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise ChunkMissing(f"shard file {os.path.basename(os.path.dirname(path))} absent") from None
        try:
            n = self.layout.rows_per_shard
            size = os.fstat(fd).st_size
            need = 16 * n + 4
            if size < need:
                raise ChunkCorrupt(f"shard file of {size} bytes, shorter than its index")
            raw = os.pread(fd, need, size - need if self.layout.index_at_end else 0)
            if len(raw) != need or google_crc32c.value(raw) != _CRC32C_RESIDUE:
                raise ChunkCorrupt("shard index crc32c mismatch")
            index = np.frombuffer(raw, dtype="<u8", count=2 * n).reshape(n, 2)
        except BaseException:
            os.close(fd)
            raise
        self._fds[shard] = (fd, index)
        if len(self._fds) > _MAX_OPEN:
            os.close(self._fds.popitem(last=False)[1][0])
        return fd, index

    def read(self, row: int, out: np.ndarray) -> None:
        """Decode volume ``row`` into ``out`` (C-contiguous int16 of the volume's shape)."""
        n = self.layout.rows_per_shard
        fd, index = self._shard(row // n)
        offset, nbytes = (int(v) for v in index[row % n])
        if offset == _EMPTY and nbytes == _EMPTY:
            raise ChunkMissing("chunk absent from its shard (a failed row)")
        if nbytes < 4:
            raise ChunkCorrupt(f"chunk of {nbytes} bytes")
        data = os.pread(fd, nbytes, offset)
        if len(data) != nbytes:
            raise ChunkCorrupt("short read of the chunk (file changed or truncated)")
        if google_crc32c.value(data) != _CRC32C_RESIDUE:
            raise ChunkCorrupt("chunk crc32c mismatch")
        try:
            self._codec.decode(memoryview(data)[:-4], out=out)
        except Exception as exc:
            raise ChunkCorrupt(f"chunk decode failed: {type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        for fd, _ in self._fds.values():
            os.close(fd)
        self._fds.clear()
