"""Shard writers. Each output file has exactly one writer, writes to a temporary name and is
renamed into place when complete, so a killed job leaves either a whole shard or none.

Tar members carry fixed metadata (mtime 0, uid/gid 0, mode 0644) so that equal samples give
byte-identical shards whatever the machine, the time or the number of workers.
"""

from __future__ import annotations

import io
import os
import tarfile
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from tte_scale.hashing import sha256_file

TMP_MARK = ".tmp-"


def tmp_name(path: Path) -> Path:
    return path.with_name(f"{path.name}{TMP_MARK}{uuid.uuid4().hex[:8]}")


def resolve(ref):
    """A Ray ObjectRef -> its value; anything else is already a value (in-process run)."""
    try:
        import ray

        if isinstance(ref, ray.ObjectRef):
            return ray.get(ref)
    except ImportError:  # pragma: no cover - ray is a dependency
        pass
    return ref


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def write_tar(path: Path, samples: Iterable[tuple[str, list[tuple[str, Any]]]]) -> dict:
    """Write ``[(key, [(suffix, bytes or ref), ...]), ...]`` as one tar; return size and sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    count = 0
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for key, members in samples:
                for suffix, data in members:
                    _add(tar, f"{key}.{suffix}", resolve(data))
                count += 1
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"path": path, "samples": count, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def write_zarr_shard(zarr_dir: Path, rows: list[int], volumes: list[Any], shape) -> dict:
    """Write Zarr rows ``rows`` (one whole shard of ``volumes``) from this one task.

    Rows whose volume is None (failed scans) stay at the fill value. The whole shard is encoded
    in memory and stored in one put, which zarr's LocalStore writes to a temporary file and
    renames (zarr-python >= 3.1), so a partial shard never sits under the final name.
    """
    import zarr

    from tte_scale.sharding.codec import deterministic_blosc

    deterministic_blosc()  # zarr's Blosc codec calls numcodecs' Blosc
    arr = zarr.open_array(str(zarr_dir / "volumes"), mode="r+")
    block = np.zeros((len(rows), *shape), dtype=np.int16)
    n_ok = 0
    for i, ref in enumerate(volumes):
        vol = resolve(ref)
        if vol is not None:
            block[i] = vol
            n_ok += 1
    arr[rows[0] : rows[-1] + 1] = block
    shard_file = zarr_dir / "volumes" / "c" / str(rows[0] // arr.shards[0]) / "0" / "0" / "0"
    if not shard_file.exists():  # every row failed: zarr stores nothing for an all-fill shard
        return {"path": None, "samples": 0, "bytes": 0, "sha256": None}
    return {"path": shard_file, "samples": n_ok, "bytes": shard_file.stat().st_size, "sha256": sha256_file(shard_file)}
