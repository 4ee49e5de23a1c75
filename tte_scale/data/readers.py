"""Read one sample by its split-local id from WebDataset tars or the Zarr group, verified.

Both readers decode the int16 volume straight into a slot of the batch buffer and return the
label arrays; anything wrong raises `SampleError` with kind `missing` (absent sample, shard or
chunk) or `corrupt` (checksum, header, decode). Shard-level damage found while indexing a tar
(bad headers, truncation, sample count different from the manifest) is queued in
`shard_events` for the loader to count once per shard.

Handles (open tar files, the Zarr group) are opened lazily on first use, i.e. inside the
DataLoader worker that uses them, never inherited across fork.

Integrity: both formats check the manifest's `volume_sha256` = sha256 of the decoded C-order
int16 `[D, H, W]` bytes (what the sharding stage writes; it is codec-independent, so the Zarr
copy is verified too) and `labels_sha256` (sha256 of the label members' `.npy` bytes in
formats.md order; Zarr rows are re-serialized with `np.save` to compare). A missing Zarr chunk
reads as a volume made only of the fill value and is reported as missing rather than corrupt.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import OrderedDict

import numpy as np

from tte_scale.data.manifest import SplitIndex, encode_key
from tte_scale.data.storage import ShardCache, join
from tte_scale.data.tarindex import TarIndex, index_tar

__all__ = ["SampleError", "LABEL_KEYS", "WdsReader", "ZarrReader", "labels_npy_bytes"]

# Label members in formats.md order (labels_sha256 hashes their bytes in this order).
LABEL_KEYS = ("tte_time", "tte_event", "bench_label", "bench_time", "bench_event")
_LABEL_DTYPES = {"tte_time": np.float32, "tte_event": np.bool_, "bench_label": np.int8,
                 "bench_time": np.float32, "bench_event": np.bool_}
_MAX_OPEN = 8


class SampleError(Exception):
    def __init__(self, kind: str, reason: str, shard: str):
        super().__init__(reason)
        self.kind, self.reason, self.shard = kind, reason, shard


def labels_npy_bytes(labels: dict[str, np.ndarray]) -> bytes:
    """The label members' `.npy` bytes concatenated in formats.md order."""
    out = io.BytesIO()
    for k in LABEL_KEYS:
        np.save(out, np.ascontiguousarray(labels[k], dtype=_LABEL_DTYPES[k]), allow_pickle=False)
    return out.getvalue()


class WdsReader:
    def __init__(self, index: SplitIndex, cache: ShardCache):
        self.index = index
        self.cache = cache
        self.shard_events: list[dict] = []
        self._tars: dict[str, tuple[str, TarIndex] | Exception] = {}
        self._files: OrderedDict[str, object] = OrderedDict()
        self._codecs: dict[str, object] = {}

    def _tar(self, path: str, expected: int | None, required: list[str]) -> tuple[str, TarIndex]:
        got = self._tars.get(path)
        if got is None:
            try:
                local = self.cache.local_path(path)
                tidx = index_tar(local)
                got = (local, tidx)
                for issue in tidx.issues:
                    self.shard_events.append({"kind": "shard_damaged", "shard": path, "detail": issue})
                complete = sum(1 for m in tidx.members.values() if all(n in m for n in required))
                if expected is not None and complete != expected:
                    self.shard_events.append({"kind": "shard_count_mismatch", "shard": path,
                                              "detail": f"{complete} samples found, manifest says {expected}"})
            except FileNotFoundError:
                got = FileNotFoundError(path)
                self.shard_events.append({"kind": "shard_missing", "shard": path, "detail": "file not found"})
            except OSError as exc:
                got = exc
                self.shard_events.append({"kind": "shard_missing", "shard": path, "detail": f"unreadable: {exc}"})
            self._tars[path] = got
        if isinstance(got, Exception):
            raise SampleError("missing", f"shard unavailable ({got})", path)
        return got

    def _read_span(self, local: str, members: dict, names: list[str], path: str) -> dict[str, memoryview]:
        f = self._files.get(local)
        if f is None:
            f = open(local, "rb")
            self._files[local] = f
            if len(self._files) > _MAX_OPEN:
                self._files.popitem(last=False)[1].close()
        else:
            self._files.move_to_end(local)
        lo = min(members[n][0] for n in names)
        hi = max(members[n][0] + members[n][1] for n in names)
        f.seek(lo)
        buf = f.read(hi - lo)  # one read for the whole sample: its members are contiguous
        if len(buf) != hi - lo:
            raise SampleError("corrupt", "short read (file changed or truncated)", path)
        mv = memoryview(buf)
        return {n: mv[members[n][0] - lo:members[n][0] - lo + members[n][1]] for n in names}

    def read(self, k: int, out_DHW: np.ndarray) -> dict[str, np.ndarray]:
        ix = self.index
        shard = int(ix.stream[k])
        path = ix.wds_paths[shard]
        key = encode_key(ix.scan_ids[k])
        vol_names = ["header.json", "volume.bin"]
        label_names = [f"{n}.npy" for n in LABEL_KEYS]
        sidecar = ix.label_paths is not None
        need = vol_names if sidecar else vol_names + label_names
        local, tidx = self._tar(path, ix.wds_counts.get(shard), need)
        members = tidx.members.get(key, {})
        lost = [n for n in need if n not in members]
        if lost:
            raise SampleError("missing", f"members {lost} of sample {key!r} not in shard", path)
        parts = self._read_span(local, members, need, path)
        if sidecar:
            lpath = ix.label_paths.get(shard)
            if lpath is None:
                raise SampleError("missing", f"no sidecar label shard {shard} in the manifest", path)
            llocal, lidx = self._tar(lpath, ix.wds_counts.get(shard), label_names)
            lmembers = lidx.members.get(key, {})
            lost = [n for n in label_names if n not in lmembers]
            if lost:
                raise SampleError("missing", f"label members {lost} of {key!r} not in sidecar", lpath)
            parts.update(self._read_span(llocal, lmembers, label_names, lpath))

        vol = parts["volume.bin"]
        label_bytes = b"".join(bytes(parts[n]) for n in label_names)
        if hashlib.sha256(label_bytes).hexdigest() != ix.labels_sha256[k]:
            raise SampleError("corrupt", "labels sha256 differs from the manifest", path)
        try:
            header = json.loads(bytes(parts["header.json"]))
        except ValueError as exc:
            raise SampleError("corrupt", f"header.json unreadable: {exc}", path) from None
        if header.get("scan_id") != ix.scan_ids[k] or list(header.get("shape", [])) != list(ix.shape):
            raise SampleError("corrupt", f"header names {header.get('scan_id')!r} shape {header.get('shape')}, "
                              f"manifest {ix.scan_ids[k]!r} {list(ix.shape)}", path)
        if header.get("dtype", "int16") != "int16":
            raise SampleError("corrupt", f"volume dtype {header.get('dtype')!r}, expected int16", path)
        codec = self._codec(header.get("codec"), path)
        try:
            codec.decode(vol, out=out_DHW)
        except Exception as exc:  # a damaged compressed stream often fails here already
            raise SampleError("corrupt", f"volume decode failed: {exc}", path) from None
        if hashlib.sha256(out_DHW.data).hexdigest() != ix.volume_sha256[k]:
            raise SampleError("corrupt", "volume sha256 (of the decoded int16 bytes) differs from the manifest", path)
        labels = {}
        for n in LABEL_KEYS:
            try:
                labels[n] = np.load(io.BytesIO(parts[f"{n}.npy"]), allow_pickle=False)
            except ValueError as exc:
                raise SampleError("corrupt", f"{n}.npy unreadable: {exc}", path) from None
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
        for f in self._files.values():
            f.close()
        self._files.clear()


class ZarrReader:
    _LABEL_ARRAYS = {"tte_time": "tte/time", "tte_event": "tte/event", "bench_label": "bench/label",
                     "bench_time": "bench/time", "bench_event": "bench/event"}

    def __init__(self, index: SplitIndex):
        self.index = index
        self.shard_events: list[dict] = []
        self._group = None
        self._chunks: dict[str, OrderedDict] = {n: OrderedDict() for n in LABEL_KEYS}

    def _open(self):
        if self._group is None:
            import zarr

            self._group = zarr.open_group(join(self.index.root, "zarr"), mode="r")
            self._volumes = self._group["volumes"]
            self._fill = self._volumes.fill_value
            shards = getattr(self._volumes, "shards", None)
            self._shard_rows = int(shards[0]) if shards else int(self._volumes.chunks[0])
            self._labels = {n: self._group[p] for n, p in self._LABEL_ARRAYS.items()}
        return self._group

    def _label_row(self, name: str, row: int) -> np.ndarray:
        # Label arrays are chunked over many rows: decode each chunk once, keep a few.
        arr = self._labels[name]
        rows_per_chunk = int(arr.chunks[0])
        c = row // rows_per_chunk
        cache = self._chunks[name]
        block = cache.get(c)
        if block is None:
            block = arr[c * rows_per_chunk:(c + 1) * rows_per_chunk]
            cache[c] = block
            if len(cache) > 4:
                cache.popitem(last=False)
        return block[row - c * rows_per_chunk]

    def read(self, k: int, out_DHW: np.ndarray) -> dict[str, np.ndarray]:
        self._open()
        row = int(self.index.rows[k])
        where = f"zarr/volumes shard {row // self._shard_rows}"
        try:
            vol = self._volumes[row]
        except Exception as exc:
            raise SampleError("corrupt", f"zarr read failed: {type(exc).__name__}: {exc}", where) from None
        flat = vol.reshape(-1)
        if flat[0] == self._fill and flat[-1] == self._fill and (flat == self._fill).all():
            raise SampleError("missing", "volume is only fill value (missing chunk or shard file)", where)
        if vol.shape != tuple(self.index.shape):
            raise SampleError("corrupt", f"volume shape {vol.shape}, manifest {self.index.shape}", where)
        np.copyto(out_DHW, vol)
        if hashlib.sha256(out_DHW.data).hexdigest() != self.index.volume_sha256[k]:
            raise SampleError("corrupt", "volume sha256 (of the decoded int16 bytes) differs from the manifest", where)
        try:
            labels = {n: np.asarray(self._label_row(n, row)) for n in LABEL_KEYS}
        except Exception as exc:
            raise SampleError("corrupt", f"zarr label read failed: {exc}", "zarr/tte|bench") from None
        if hashlib.sha256(labels_npy_bytes(labels)).hexdigest() != self.index.labels_sha256[k]:
            raise SampleError("corrupt", "labels sha256 differs from the manifest", "zarr/tte|bench")
        return labels

    def close(self) -> None:
        self._group = None
