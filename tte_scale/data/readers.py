"""Read one sample by its split-local id from WebDataset tars or the Zarr group, verified.

Both readers decode the int16 volume straight into a slot of the batch buffer and return the
label arrays; anything wrong raises `SampleError` with kind `missing` (absent sample, shard or
chunk) or `corrupt` (checksum, header, decode). Shard-level damage found while indexing a tar
(bad headers, truncation, sample count different from the manifest) is queued in
`shard_events` for the loader to count once per shard.

Handles (open tar files, the Zarr group) are opened lazily on first use, i.e. inside the
DataLoader worker that uses them, never inherited across fork.

Integrity, checked before anything is decoded where possible (a decoder fed damaged bytes may
produce plausible voxels, and some codecs are not hardened against malformed input):
- WebDataset: the manifest's `volume_crc32c` (CRC-32C of the encoded `volume.bin` member; with
  SSE4.2 ~0.2 ms for a 3 MiB volume where sha256 of the decoded bytes took ~5 ms, about as long as
  the decode itself, on the dev CPU) and `labels_sha256`
  (sha256 of the label members' `.npy` bytes in formats.md order; a few KiB).
- Zarr: the chunk crc32c codec of `volumes` (checked before decoding by `tte_scale.data.zarr_chunks`
  for a local store of the layout the sharding job writes, by zarr otherwise) and `labels_sha256`
  (rows re-serialized with `np.save` to compare). A missing chunk reads as a volume made only of
  the fill value and is reported as missing rather than corrupt.
- The manifest's `volume_sha256` (sha256 of the decoded C-order int16 `[D, H, W]` bytes) is
  checked when no CRC covers the volume (an older manifest, a Zarr array without crc32c) or
  when `LoaderConfig.verify_volume_sha256` asks for it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections import OrderedDict

import google_crc32c
import numpy as np

from tte_scale.data.split_index import SplitIndex
from tte_scale.data.storage import ShardCache, ShardDamaged, join
from tte_scale.data.tarindex import TarIndex, index_tar
from tte_scale.data.zarr_chunks import ChunkCorrupt, ChunkMissing, ShardChunks, plan
from tte_scale.formats.shards import (
    HEADER_MEMBER,
    LABEL_KEYS,
    LABEL_MEMBERS,
    VOLUME_MEMBER,
    ZARR_DIR,
    ZARR_LABEL_ARRAYS,
    ZARR_VOLUMES,
    label_member_bytes,
    labels_sha256,
    sample_key,
)
from tte_scale.remote import is_url, local_path

__all__ = ["SampleError", "WdsReader", "ZarrReader"]

_MAX_OPEN = 8


class SampleError(Exception):
    def __init__(self, kind: str, reason: str, shard: str):
        super().__init__(reason)
        self.kind, self.reason, self.shard = kind, reason, shard


class NpyMembers:
    """`np.load` of `.npy` member bytes as a view, without re-parsing the same header each sample.

    Every sample of a build has the same label headers (dtype, shape), so a header is parsed
    once by numpy and later members are `np.frombuffer` views of the bytes just read.
    """

    def __init__(self):
        self._headers: dict[bytes, tuple[np.dtype, tuple[int, ...], str, int]] = {}

    def __call__(self, member: bytes) -> np.ndarray:
        if len(member) < 12 or bytes(member[:6]) != b"\x93NUMPY":
            raise ValueError("not an .npy member (bad magic)")
        # header length: 2 bytes in format 1.0, 4 bytes in 2.0 / 3.0
        if member[6] == 1:
            start = 10 + int.from_bytes(member[8:10], "little")
        else:
            start = 12 + int.from_bytes(member[8:12], "little")
        head = bytes(member[:start])
        got = self._headers.get(head)
        if got is None:
            arr = np.load(io.BytesIO(member), allow_pickle=False)
            order = "F" if arr.flags.f_contiguous and not arr.flags.c_contiguous else "C"
            self._headers[head] = (arr.dtype, arr.shape, order, start)
            return arr
        dtype, shape, order, start = got
        count = int(np.prod(shape))
        if len(member) - start != count * dtype.itemsize:
            raise ValueError(f"{len(member) - start} data bytes, header says {count} x {dtype}")
        return np.frombuffer(member, dtype=dtype, count=count, offset=start).reshape(shape, order=order)


class WdsReader:
    def __init__(self, index: SplitIndex, cache: ShardCache, verify_sha256: bool = False):
        self.index = index
        self.cache = cache
        self.verify_sha256 = verify_sha256
        self._npy = NpyMembers()
        self.shard_events: list[dict] = []
        self._tars: dict[str, tuple[str, TarIndex] | Exception] = {}
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._codecs: dict[str, object] = {}

    def _tar(self, path: str, expected: int | None, required: list[str]) -> tuple[str, TarIndex]:
        got = self._tars.get(path)
        if got is None:
            try:
                local = self.cache.local_path(path, *(self.index.shard_files or {}).get(path, (None, None)))
                tidx = index_tar(local)
                got = (local, tidx)
                for issue in tidx.issues:
                    self.shard_events.append({"kind": "shard_damaged", "shard": path, "detail": issue})
                complete = sum(1 for m in tidx.members.values() if all(n in m for n in required))
                if expected is not None and complete != expected:
                    self.shard_events.append(
                        {
                            "kind": "shard_count_mismatch",
                            "shard": path,
                            "detail": f"{complete} samples found, manifest says {expected}",
                        }
                    )
            except FileNotFoundError:
                got = FileNotFoundError(path)
                self.shard_events.append({"kind": "shard_missing", "shard": path, "detail": "file not found"})
            except ShardDamaged as exc:  # a download that differs from the manifest never enters the cache
                got = exc
                self.shard_events.append({"kind": "shard_damaged", "shard": path, "detail": str(exc)})
            except OSError as exc:
                got = exc
                self.shard_events.append({"kind": "shard_missing", "shard": path, "detail": f"unreadable: {exc}"})
            self._tars[path] = got
        if isinstance(got, ShardDamaged):
            raise SampleError("corrupt", f"shard damaged ({got})", path)
        if isinstance(got, Exception):
            raise SampleError("missing", f"shard unavailable ({got})", path)
        return got

    def _read_members(self, local: str, members: dict, names: list[str], path: str) -> dict[str, bytes]:
        fd = self._fds.get(local)
        if fd is None:
            fd = os.open(local, os.O_RDONLY)
            self._fds[local] = fd
            if len(self._fds) > _MAX_OPEN:
                os.close(self._fds.popitem(last=False)[1])
        else:
            self._fds.move_to_end(local)
        # One pread per member (no seek, no buffering layer): `bytes` that the CRC, the decoder
        # and np.frombuffer all take without a further copy.
        out = {}
        for n in names:
            offset, size = members[n]
            out[n] = os.pread(fd, size, offset)
            if len(out[n]) != size:
                raise SampleError("corrupt", f"short read of {n} (file changed or truncated)", path)
        return out

    def read(self, k: int, out_DHW: np.ndarray) -> dict[str, np.ndarray]:
        ix = self.index
        shard = int(ix.stream[k])
        path = ix.wds_paths[shard]
        key = sample_key(ix.scan_ids[k])
        vol_names = [HEADER_MEMBER, VOLUME_MEMBER]
        label_names = list(LABEL_MEMBERS)
        sidecar = ix.label_paths is not None
        need = vol_names if sidecar else vol_names + label_names
        local, tidx = self._tar(path, ix.wds_counts.get(shard), need)
        members = tidx.members.get(key, {})
        lost = [n for n in need if n not in members]
        if lost:
            raise SampleError("missing", f"members {lost} of sample {key!r} not in shard", path)
        parts = self._read_members(local, members, need, path)
        if sidecar:
            lpath = ix.label_paths.get(shard)
            if lpath is None:
                raise SampleError("missing", f"no sidecar label shard {shard} in the manifest", path)
            llocal, lidx = self._tar(lpath, ix.wds_counts.get(shard), label_names)
            lmembers = lidx.members.get(key, {})
            lost = [n for n in label_names if n not in lmembers]
            if lost:
                raise SampleError("missing", f"label members {lost} of {key!r} not in sidecar", lpath)
            parts.update(self._read_members(llocal, lmembers, label_names, lpath))

        if labels_sha256(parts[n] for n in label_names) != ix.labels_sha256[k]:
            raise SampleError("corrupt", "labels sha256 differs from the manifest", path)
        try:
            header = json.loads(bytes(parts[HEADER_MEMBER]))
        except ValueError as exc:
            raise SampleError("corrupt", f"header.json unreadable: {exc}", path) from None
        if header.get("scan_id") != ix.scan_ids[k] or list(header.get("shape", [])) != list(ix.shape):
            raise SampleError(
                "corrupt",
                f"header names {header.get('scan_id')!r} shape {header.get('shape')}, "
                f"manifest {ix.scan_ids[k]!r} {list(ix.shape)}",
                path,
            )
        if header.get("dtype", "int16") != "int16":
            raise SampleError("corrupt", f"volume dtype {header.get('dtype')!r}, expected int16", path)
        vol = parts[VOLUME_MEMBER]
        crc = int(ix.volume_crc32c[k])
        if crc >= 0 and google_crc32c.value(vol) != crc:
            raise SampleError("corrupt", "volume.bin crc32c differs from the manifest", path)
        codec = self._codec(header.get("codec"), path)
        try:
            codec.decode(vol, out=out_DHW)
        except Exception as exc:  # a damaged compressed stream often fails here already
            raise SampleError("corrupt", f"volume decode failed: {exc}", path) from None
        if (crc < 0 or self.verify_sha256) and hashlib.sha256(out_DHW.data).hexdigest() != ix.volume_sha256[k]:
            raise SampleError("corrupt", "volume sha256 (of the decoded int16 bytes) differs from the manifest", path)
        labels = {}
        for n, member in zip(LABEL_KEYS, LABEL_MEMBERS):
            try:
                labels[n] = self._npy(parts[member])
            except ValueError as exc:
                raise SampleError("corrupt", f"{member} unreadable: {exc}", path) from None
        return labels

    def _codec(self, config, path: str):
        import numcodecs

        key = json.dumps(config, sort_keys=True)
        codec = self._codecs.get(key)
        if codec is None:
            try:
                codec = numcodecs.get_codec(dict(config))
            except Exception as exc:
                raise SampleError("corrupt", f"unknown codec {config!r}: {exc}", path) from None
            self._codecs[key] = codec
        return codec

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


class ZarrReader:
    def __init__(self, index: SplitIndex, verify_sha256: bool = False):
        self.index = index
        self.verify_sha256 = verify_sha256
        self.shard_events: list[dict] = []
        self._group = None
        self._chunks: dict[str, OrderedDict] = {n: OrderedDict() for n in LABEL_KEYS}

    def _open(self):
        if self._group is None:
            import zarr

            self._group = zarr.open_group(join(self.index.root, ZARR_DIR), mode="r")
            self._volumes = self._group[ZARR_VOLUMES]
            self._fill = self._volumes.fill_value
            shards = getattr(self._volumes, "shards", None)
            self._shard_rows = int(shards[0]) if shards else int(self._volumes.chunks[0])
            self._labels = {n: self._group[p] for n, p in ZARR_LABEL_ARRAYS.items()}
            # A local store of the layout the sharding job writes: one pread + decode per volume
            # (tte_scale.data.zarr_chunks); anything else through zarr itself.
            self._chunks_reader = None
            folder = join(join(self.index.root, ZARR_DIR), ZARR_VOLUMES)
            if not is_url(folder) and (layout := plan(self._volumes, local_path(folder))) is not None:
                self._chunks_reader = ShardChunks(layout)
            # zarr checks a chunk crc32c itself before decoding; without one, hash the decoded volume
            self._hash_volumes = self.verify_sha256 or not _has_chunk_crc32c(self._volumes)
        return self._group

    def _label_row(self, name: str, row: int) -> np.ndarray:
        # Label arrays are chunked over many rows: decode each chunk once, keep a few.
        arr = self._labels[name]
        rows_per_chunk = int(arr.chunks[0])
        c = row // rows_per_chunk
        cache = self._chunks[name]
        block = cache.get(c)
        if block is None:
            block = arr[c * rows_per_chunk : (c + 1) * rows_per_chunk]
            cache[c] = block
            if len(cache) > 4:
                cache.popitem(last=False)
        return block[row - c * rows_per_chunk]

    def read(self, k: int, out_DHW: np.ndarray) -> dict[str, np.ndarray]:
        self._open()
        row = int(self.index.rows[k])
        where = f"zarr/volumes shard {row // self._shard_rows}"
        if self._chunks_reader is not None:
            if tuple(self._volumes.shape[1:]) != tuple(self.index.shape):
                raise SampleError(
                    "corrupt", f"volume shape {self._volumes.shape[1:]}, manifest {self.index.shape}", where
                )
            try:
                self._chunks_reader.read(row, out_DHW)
            except ChunkMissing as exc:
                raise SampleError("missing", f"volume is only fill value ({exc})", where) from None
            except ChunkCorrupt as exc:
                raise SampleError("corrupt", f"zarr read failed: {exc}", where) from None
            vol = out_DHW
        else:
            try:
                vol = self._volumes[row]
            except Exception as exc:
                raise SampleError("corrupt", f"zarr read failed: {type(exc).__name__}: {exc}", where) from None
        flat = vol.reshape(-1)
        if flat[0] == self._fill and flat[-1] == self._fill and (flat == self._fill).all():
            raise SampleError("missing", "volume is only fill value (missing chunk or shard file)", where)
        if vol.shape != tuple(self.index.shape):
            raise SampleError("corrupt", f"volume shape {vol.shape}, manifest {self.index.shape}", where)
        if vol is not out_DHW:
            np.copyto(out_DHW, vol)
        if self._hash_volumes and hashlib.sha256(out_DHW.data).hexdigest() != self.index.volume_sha256[k]:
            raise SampleError("corrupt", "volume sha256 (of the decoded int16 bytes) differs from the manifest", where)
        try:
            labels = {n: np.asarray(self._label_row(n, row)) for n in LABEL_KEYS}
        except Exception as exc:
            raise SampleError("corrupt", f"zarr label read failed: {exc}", "zarr/tte|bench") from None
        if labels_sha256(label_member_bytes(labels).values()) != self.index.labels_sha256[k]:
            raise SampleError("corrupt", "labels sha256 differs from the manifest", "zarr/tte|bench")
        return labels

    def close(self) -> None:
        if self._group is not None and self._chunks_reader is not None:
            self._chunks_reader.close()
        self._group = None


def _has_chunk_crc32c(arr) -> bool:
    """True when every chunk of the Zarr v3 array `arr` carries a crc32c (inside a shard or not)."""
    from zarr.codecs import Crc32cCodec, ShardingCodec

    codecs = list(getattr(arr.metadata, "codecs", ()))
    if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec):
        codecs = list(codecs[0].codecs)
    return any(isinstance(c, Crc32cCodec) for c in codecs)
