"""Configs of the streaming loader and of its batch augmentation."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from tte_scale.config import check

__all__ = ["AugmentConfig", "LoaderConfig", "LoaderSettings"]


@dataclass(kw_only=True, slots=True)
class AugmentConfig:
    """Batch augmentation, applied on the device after the int16 volume has been transferred."""

    enabled: bool = False
    """Apply random crop / flip / intensity jitter (normalization to float always happens)."""
    crop_size: tuple[int, int, int] | None = None
    """Random crop [D, H, W] per sample; None keeps the full canonical volume."""
    flip_axes: tuple[int, ...] = ()
    """Spatial axes (0=D, 1=H, 2=W) each flipped with probability `flip_prob` per sample. None by
    default (opt-in): in chest CT left and right are not interchangeable (heart, aortic arch and
    lobes are lateralized, and a finding's side carries meaning), so a left-right flip (W after
    canonical resampling) teaches the encoder to ignore laterality and makes a small one-sided
    lesion ambiguous; flip only where the anatomy is symmetric for the task."""
    flip_prob: float = 0.5
    """Probability of flipping each axis in `flip_axes`."""
    intensity_scale: float = 0.05
    """Multiply the normalized volume by 1 + U(-s, s) per sample."""
    intensity_shift: float = 0.05
    """Add U(-s, s) per sample to the normalized volume."""
    hu_min: float = -1000.0
    """HU mapped to 0.0 by `hu_to_float` (values below are clipped)."""
    hu_max: float = 1000.0
    """HU mapped to 1.0 by `hu_to_float` (values above are clipped)."""

    def __post_init__(self) -> None:
        if self.crop_size is not None:
            check(
                len(self.crop_size) == 3 and all(c > 0 for c in self.crop_size),
                "crop_size",
                f"expected 3 positive sizes [D, H, W], got {self.crop_size}",
            )
        check(all(a in (0, 1, 2) for a in self.flip_axes), "flip_axes", f"axes must be 0, 1 or 2, got {self.flip_axes}")
        check(0.0 <= self.flip_prob <= 1.0, "flip_prob", f"must be in [0, 1], got {self.flip_prob}")
        check(self.intensity_scale >= 0, "intensity_scale", f"must be >= 0, got {self.intensity_scale}")
        check(self.intensity_shift >= 0, "intensity_shift", f"must be >= 0, got {self.intensity_shift}")
        check(self.hu_max > self.hu_min, "hu_max", f"must be > hu_min ({self.hu_min}), got {self.hu_max}")


@dataclass(kw_only=True, slots=True)
class LoaderSettings:
    """How the loader reads and checks samples: the settings a user tunes for a run.

    Declared once, here: :class:`LoaderConfig` adds what each caller decides (split, batch,
    seed, shuffle), and the training config's ``data`` section inherits these fields, so
    ``tte-scale train --set data.max_bad_fraction=0.05`` reaches the loader with the same
    defaults as a loader built directly.
    """

    format: Literal["wds", "zarr"] = "wds"
    """Shard format to read; both give the same sample order and the same batches."""
    num_workers: int = 2
    """DataLoader worker processes per rank (0 = read in the calling process)."""
    shuffle_window: int = 64
    """Samples are shuffled inside consecutive blocks of this many global positions."""
    cache_dir: str | None = None
    """Local folder caching remote (fsspec URL) shards; None = a folder under the system temp dir."""
    cache_max_bytes: int = 20 * 2**30
    """Size bound of `cache_dir`; least recently used shards are evicted past it."""
    max_bad_fraction: float = 0.01
    """Abort when more than this fraction of a rank's epoch samples were corrupt or missing."""
    replacement_tries: int = 64
    """How many following global positions to try when looking for a valid substitute sample."""
    verify_volume_sha256: bool = False
    """Also hash every decoded volume against the manifest's sha256 (costs about half a decode).
    Off by default: the CRC-32C of the compressed bytes (WebDataset: manifest `volume_crc32c`;
    Zarr: the array's crc32c codec) already catches damaged bytes before they are decoded; the
    sha256 is checked anyway where no CRC is available."""
    prefetch_factor: int = 2
    """Batches each worker prepares ahead (each worker decodes into prefetch_factor + 1 shared slots)."""
    pin_memory: bool | None = None
    """Pin batch memory; None = pin when CUDA is available."""
    multiprocessing_context: Literal["auto", "fork", "spawn", "forkserver"] = "auto"
    """Worker start method; `auto` = forkserver for Zarr (zarr v3's async I/O thread does not
    survive fork), fork for WebDataset (plain file reads opened lazily in each worker)."""

    def __post_init__(self) -> None:
        check(self.format in ("wds", "zarr"), "format", f"must be 'wds' or 'zarr', got {self.format!r}")
        check(self.num_workers >= 0, "num_workers", f"must be >= 0, got {self.num_workers}")
        check(self.shuffle_window >= 1, "shuffle_window", f"must be >= 1, got {self.shuffle_window}")
        check(self.cache_max_bytes > 0, "cache_max_bytes", f"must be > 0, got {self.cache_max_bytes}")
        check(
            0.0 <= self.max_bad_fraction <= 1.0, "max_bad_fraction", f"must be in [0, 1], got {self.max_bad_fraction}"
        )
        check(self.replacement_tries >= 1, "replacement_tries", f"must be >= 1, got {self.replacement_tries}")
        check(self.prefetch_factor >= 1, "prefetch_factor", f"must be >= 1, got {self.prefetch_factor}")

    def start_method(self) -> str:
        """The worker start method `auto` resolves to for this format."""
        if self.multiprocessing_context != "auto":
            return self.multiprocessing_context
        return "forkserver" if self.format == "zarr" else "fork"

    def loader_settings(self) -> dict:
        """These fields as keyword arguments (``LoaderConfig(**s.loader_settings(), split=...)``)."""
        return {f.name: getattr(self, f.name) for f in fields(LoaderSettings)}


@dataclass(kw_only=True, slots=True)
class LoaderConfig(LoaderSettings):
    """The streaming loader: the :class:`LoaderSettings` plus which split, batch and order."""

    split: str = "train"
    """Split to stream (`train`, `tuning`, `held_out`)."""
    batch_size: int = 2
    """Samples per batch on each rank (global batch = batch_size * world_size)."""
    seed: int = 0
    """Seed of the shuffle; with `epoch` it fixes the global sample order."""
    shuffle: bool = True
    """Shuffle shard order and samples (False: manifest order, for evaluation)."""
    drop_last: Literal["drop"] = "drop"
    """Remainder policy: the last N mod global_batch samples of an epoch are not served, so every
    rank takes exactly floor(N / global_batch) steps (the shuffle puts other samples there next epoch)."""

    def __post_init__(self) -> None:
        LoaderSettings.__post_init__(self)  # zero-argument super() does not work in slots dataclasses
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(bool(self.split), "split", "must not be empty")
