"""The labels fingerprint: what ties a shards folder to the labels folder it was built from.

``tte-scale shard`` records it in ``manifest/build.json`` (``labels_fingerprint``); ``tte-scale
train`` recomputes it for ``data.labels_dir`` and refuses labels of another cohort
(``tte_scale.data.build_info.check_run_inputs``). The recipe is defined here once: a sha256 over
``rows.parquet``, ``bench.parquet`` and ``bins.json`` (each file's name, then its bytes), followed
by the ``time`` then ``event`` arrays of ``tte.zarr`` as float32 / bool C-order bytes.

Torch-free and small on purpose: the sharding job (Ray workers) imports it too.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from tte_scale.errors import InputError
from tte_scale.hashing import update_from_file

__all__ = ["FINGERPRINT_FILES", "fingerprint_hasher", "labels_fingerprint"]

FINGERPRINT_FILES = ("rows.parquet", "bench.parquet", "bins.json")
"""Files of a labels folder hashed, in this order, before the arrays."""


def fingerprint_hasher(labels_dir: str | Path):
    """A sha256 that has consumed the labels folder's files; feed it ``time`` then ``event`` next."""
    folder = Path(labels_dir)
    h = hashlib.sha256()
    for name in FINGERPRINT_FILES:
        path = folder / name
        if not path.is_file():
            raise InputError(f"labels folder {folder}: {name} is missing (run `tte-scale labels` first)")
        h.update(name.encode())
        update_from_file(h, path)
    return h


def labels_fingerprint(labels_dir: str | Path) -> str:
    """The fingerprint of a labels folder, streaming ``tte.zarr`` one chunk of rows at a time (memory
    stays at one chunk whatever the cohort size; the same digest as hashing the whole arrays)."""
    import zarr

    folder = Path(labels_dir)
    h = fingerprint_hasher(folder)
    try:
        group = zarr.open_group(str(folder / "tte.zarr"), mode="r")
        arrays = [(group["time"], np.float32), (group["event"], np.bool_)]
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise InputError(f"labels folder {folder}: tte.zarr is missing or incomplete ({type(exc).__name__})") from None
    for arr, dtype in arrays:
        step = max(1, arr.chunks[0])
        for r0 in range(0, arr.shape[0], step):
            h.update(np.ascontiguousarray(arr[r0 : r0 + step], dtype=dtype).tobytes())
    return h.hexdigest()
