"""The Zarr v3 store of a build: group, `volumes` array metadata and the label arrays.

Created by the driver only (metadata and labels are small); volume shards are then filled by
one writer task each (:func:`sharding.writers.write_zarr_shard`). Label arrays live in their
own subgroups (`tte/`, `bench/`) so that a relabel can write new ones beside and swap the
folders without touching `volumes`. Every group has its own `zarr.json` (Zarr v3 has no implicit
groups: without it, stock zarr lists only `volumes` and warns about the other folders).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tte_scale.formats.shards import (
    FORMAT_VERSION,
    VOLUME_DIMENSION_NAMES,
    VOLUME_FILL,
    ZARR_LABEL_ARRAYS,
    ZARR_LABEL_FILL,
    ZARR_LABEL_GROUPS,
    ZARR_VOLUMES,
    volume_chunks,
)
from tte_scale.sharding.codec import zarr_compressor
from tte_scale.sharding.config import ShardConfig
from tte_scale.sharding.labels import LabelSet


def create_volumes(zarr_dir: Path, n_rows: int, cfg: ShardConfig, labels: LabelSet) -> None:
    """Create the group and an empty `volumes` array (fill 0 marks a failed row)."""
    import zarr
    from zarr.codecs import Crc32cCodec

    group = zarr.open_group(str(zarr_dir), mode="a", zarr_format=3)
    d, h, w = cfg.imaging.shape
    s = min(cfg.zarr_volumes_per_shard, max(1, n_rows))
    zarr.create_array(
        str(zarr_dir / ZARR_VOLUMES),
        shape=(n_rows, d, h, w),
        dtype="int16",
        chunks=volume_chunks(cfg.imaging.shape),
        shards=(s, d, h, w),
        # crc32c last (docs/formats.md): a flipped byte fails loudly instead of decoding to wrong voxels
        compressors=[zarr_compressor(cfg.codec), Crc32cCodec()],
        fill_value=VOLUME_FILL,
        dimension_names=VOLUME_DIMENSION_NAMES,
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

    group = zarr.open_group(str(root), mode="a", zarr_format=3)
    for key, name in ZARR_LABEL_ARRAYS.items():
        data = labels.array(key)
        rows = max(1, min(chunk_rows, data.shape[0]))
        # through the group: zarr writes the metadata of the parent groups (`tte/`, `bench/`) too
        arr = group.create_array(
            name,
            shape=data.shape,
            dtype=data.dtype,
            chunks=(rows, max(1, data.shape[1])),
            fill_value=ZARR_LABEL_FILL[key],
            overwrite=True,
        )
        arr[...] = data


def swap_label_arrays(zarr_dir: Path, staging: Path) -> None:
    """Replace `tte/` and `bench/` by the staged ones: rename old away, new in, delete old."""
    for sub in ZARR_LABEL_GROUPS:
        old = zarr_dir / f".old-{sub}"
        shutil.rmtree(old, ignore_errors=True)
        if (zarr_dir / sub).exists():
            (zarr_dir / sub).rename(old)
        (staging / sub).rename(zarr_dir / sub)
        shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
