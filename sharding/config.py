"""Config of the sharding job (`tte-scale shard`): imaging, codec, shard sizes, formats."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from tte_scale.config import check
from tte_scale.imaging.config import ImagingConfig
from tte_scale.remote import StorageConfig

# Chosen by an earlier run of benchmarks/bench_shard.py: the fastest decode among codecs within 85% of
# the best ratio. Its latest run (results/shard.json, a loaded machine) measured this codec at ratio 3.37
# and 0.33 GB/s decode, and the same with bit shuffle at 3.53 and 0.87 GB/s, now the benchmark's pick.
# Changing the default changes every build's bytes (and the fingerprints of resumed builds), so it waits
# until the loader benchmark has been re-run with bit shuffle (docs/scaling.md, section 7).
DEFAULT_CODEC: dict[str, Any] = {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 1, "blocksize": 0}


# Fields that change how a build runs, never what it writes: left out of output_config().
RUN_ONLY_FIELDS = ("executor", "storage")


@dataclass(kw_only=True, slots=True)
class ShardConfig:
    """What `tte-scale shard` builds; the output depends on nothing else (not the worker count)."""

    imaging: ImagingConfig = field(default_factory=ImagingConfig)
    """Reader checks and the canonical volume (orientation SAL, spacing, shape, HU range)."""
    format: Literal["wds", "zarr", "both"] = "both"
    """Which outputs to write: WebDataset tar shards, a Zarr v3 store, or both."""
    codec: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_CODEC))
    """numcodecs codec config of the volume (WebDataset member and Zarr chunk compressor)."""
    wds_shard_bytes: int = 1 << 30
    """Target size of a WebDataset shard; samples per shard = this / estimated volume bytes."""
    assumed_compression_ratio: float = 3.0
    """Used only to plan samples per shard before any scan is read (keeps the plan deterministic);
    3.37-3.60x measured on synthetic CT with the default codec (benchmarks/results/shard.json), so tar shards
    come out ~0.9-0.95 GB at the default 1 GiB target (docs/formats.md, "Shard sizes")."""
    zarr_volumes_per_shard: int = 16
    """Volumes per Zarr shard file (the sharding codec's outer chunk; one writer per file)."""
    label_chunk_rows: int = 1024
    """Rows per chunk of the Zarr label arrays."""
    executor: Literal["tasks", "data"] = "tasks"
    """How a Ray run maps scans: Ray tasks with a bounded window in flight ("tasks") or a Ray Data
    `map` ("data"). Tasks stay the default: clearly faster at the demo shape, within noise at the
    default shape (benchmarks/results/shard.md). Ignored with --workers 0.
    The output is byte-identical either way, so this is not part of the build fingerprint nor of
    build.json (see RUN_ONLY_FIELDS)."""
    storage: StorageConfig = field(default_factory=StorageConfig)
    """Object storage transfers (image_path URLs, `--out URL`): tries, backoff, objects at once.
    Like `executor`, it changes how a build runs, never its bytes (RUN_ONLY_FIELDS)."""

    def __post_init__(self) -> None:
        check(isinstance(self.codec, dict) and "id" in self.codec, "codec", "a numcodecs config with an 'id'")
        check(self.wds_shard_bytes >= 1, "wds_shard_bytes", "must be >= 1")
        check(self.assumed_compression_ratio >= 1.0, "assumed_compression_ratio", "must be >= 1")
        check(self.zarr_volumes_per_shard >= 1, "zarr_volumes_per_shard", "must be >= 1")
        check(self.label_chunk_rows >= 1, "label_chunk_rows", "must be >= 1")
        check(self.executor in ("tasks", "data"), "executor", "must be 'tasks' or 'data'")
        from tte_scale.sharding.codec import get_codec

        try:
            get_codec(self.codec)
        except Exception as exc:
            check(False, "codec", f"not a usable numcodecs codec: {exc}")

    @property
    def samples_per_wds_shard(self) -> int:
        d, h, w = self.imaging.shape
        est = d * h * w * 2 / self.assumed_compression_ratio
        return max(1, int(self.wds_shard_bytes // est))


def output_config(cfg: ShardConfig) -> dict[str, Any]:
    """The config as recorded in build.json and hashed into the build fingerprint."""
    from tte_scale.config import to_dict

    return {k: v for k, v in to_dict(cfg).items() if k not in RUN_ONLY_FIELDS}
