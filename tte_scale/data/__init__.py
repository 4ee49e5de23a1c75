"""Streaming loader: WebDataset / Zarr shards -> per-rank batches (docs/formats.md "Batch").

Public API: :class:`LoaderConfig` (+ :class:`AugmentConfig`), :func:`build_loader` ->
:class:`TTELoader` (resumable, elastic over world sizes, integrity-checked), and the on-device
:func:`augment_batch` / :func:`hu_to_float`.
"""

from tte_scale.data.augment import augment_batch, hu_to_float, to_device
from tte_scale.data.config import AugmentConfig, LoaderConfig
from tte_scale.data.loader import STATE_VERSION, TTELoader, build_loader
from tte_scale.data.stream import DataIntegrityError

__all__ = [
    "AugmentConfig",
    "LoaderConfig",
    "TTELoader",
    "build_loader",
    "STATE_VERSION",
    "augment_batch",
    "hu_to_float",
    "to_device",
    "DataIntegrityError",
]
