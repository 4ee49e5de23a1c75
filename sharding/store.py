"""The Zarr v3 store of a build: group, `volumes` array metadata and the label arrays.

Created by the driver only (metadata and labels are small); volume shards are then filled by
one writer task each (:func:`sharding.writers.write_zarr_shard`). Label arrays live in their
own subgroups (`tte/`, `bench/`) so that a relabel can write new ones beside and swap the
folders without touching `volumes`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from sharding.codec import zarr_compressor
from sharding.config import ShardConfig
from sharding.labels import LabelSet

FORMAT_VERSION = 1
LABEL_ARRAYS = {
    "tte/time": "time_NK",
    "tte/event": "event_NK",
    "bench/label": "bench_label_NT",
    "bench/time": "bench_time_NT",
    "bench/event": "bench_event_NT",
}
FILL = {np.dtype(np.float32): np.float32("nan"), np.dtype(bool): False, np.dtype(np.int8): -1}


def create_volumes(zarr_dir: Path, n_rows: int, cfg: ShardConfig, labels: LabelSet) -> None:
    """Create the group and an empty `volumes` array (fill 0 marks a failed row)."""
    import zarr
    from zarr.codecs import Crc32cCodec

    group = zarr.open_group(str(zarr_dir), mode="a", zarr_format=3)
    d, h, w = cfg.imaging.shape
    s = min(cfg.zarr_volumes_per_shard, max(1, n_rows))
    zarr.create_array(
        str(zarr_dir / "volumes"),
        shape=(n_rows, d, h, w),
        dtype="int16",
        chunks=(1, d, h, w),
        shards=(s, d, h, w),
        # crc32c last (docs/formats.md): a flipped byte fails loudly instead of decoding to wrong voxels
        compressors=[zarr_compressor(cfg.codec), Crc32cCodec()],
        fill_value=0,
        dimension_names=("row", "d", "h", "w"),
        overwrite=True,
    )
    set_label_attrs(group, labels)


def set_label_attrs(group, labels: LabelSet) -> None:
    group.attrs.update(
        {"format_version": FORMAT_VERSION, "bench_tasks": labels.bench_tasks, "num_tasks": int(labels.time_NK.shape[1])}
    )


def write_label_arrays(root: Path, labels: LabelSet, chunk_rows: int) -> None:
    """Write all label arrays under ``root`` (a group folder: the store or a staging copy)."""
    import zarr

    zarr.open_group(str(root), mode="a", zarr_format=3)
    for name, attr in LABEL_ARRAYS.items():
        data = getattr(labels, attr)
        rows = max(1, min(chunk_rows, data.shape[0]))
        arr = zarr.create_array(
            str(root / name),
            shape=data.shape,
            dtype=data.dtype,
            chunks=(rows, max(1, data.shape[1])),
            fill_value=FILL[data.dtype],
            overwrite=True,
        )
        arr[...] = data


def swap_label_arrays(zarr_dir: Path, staging: Path) -> None:
    """Replace `tte/` and `bench/` by the staged ones: rename old away, new in, delete old."""
    for sub in ("tte", "bench"):
        old = zarr_dir / f".old-{sub}"
        shutil.rmtree(old, ignore_errors=True)
        if (zarr_dir / sub).exists():
            (zarr_dir / sub).rename(old)
        (staging / sub).rename(zarr_dir / sub)
        shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
