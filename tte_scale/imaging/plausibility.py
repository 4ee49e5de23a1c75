"""Is a scan as read plausible as a CT volume? Checks every input format alike, before and after
the canonical grid is laid over it.

Readers check what a file format can get wrong (slice gaps, tilt, headers); these check what any
format can carry that is not a usable CT: NaN voxels, a box a few millimetres thin, a scan that
fills a sliver of the canonical volume, values that are not Hounsfield units. Each raises
:class:`ScanReadError` with a reason code and a detail of counts (no header value), so the scan is
quarantined instead of reaching the shards as a plausible-looking volume of padding or zeros.
The thresholds are `ImagingConfig` fields; 0 disables a check.
"""

from __future__ import annotations

import numpy as np

from tte_scale.imaging.canonical import covered_fraction
from tte_scale.imaging.config import ImagingConfig
from tte_scale.imaging.volume import RawVolume, ScanReadError

__all__ = ["check_scan"]


def check_scan(raw: RawVolume, cfg: ImagingConfig) -> tuple[RawVolume, int]:
    """Return ``raw`` (non-finite voxels filled when ``cfg.nonfinite_fill_hu`` is set) and the
    number of voxels filled; raise ScanReadError for a scan that is not a plausible CT."""
    hu = raw.hu_IJK
    n_bad = 0
    if hu.dtype.kind == "f":  # integer voxels (a NIfTI file's stored values) are always finite
        bad = ~np.isfinite(hu)
        n_bad = int(np.count_nonzero(bad))
    if n_bad:
        if cfg.nonfinite_fill_hu is None:
            raise ScanReadError("nonfinite_voxels", f"{n_bad} of {hu.size} voxels are NaN or infinite")
        hu = np.where(bad, np.float32(cfg.nonfinite_fill_hu), hu)
        raw = RawVolume(hu_IJK=hu, affine_ras=raw.affine_ras, scanner=raw.scanner, ignored_files=raw.ignored_files)

    extent = np.asarray(hu.shape, dtype=np.float64) * np.asarray(raw.spacing_mm)
    if extent.min() < cfg.min_extent_mm:
        sizes = " x ".join(f"{e:.1f}" for e in extent)
        raise ScanReadError("too_small", f"scanned box {sizes} mm, imaging.min_extent_mm is {cfg.min_extent_mm:g}")

    if cfg.min_coverage > 0:
        covered = covered_fraction(raw, cfg)
        if covered < cfg.min_coverage:
            raise ScanReadError(
                "low_coverage",
                f"the scan covers {covered:.1%} of the canonical volume, imaging.min_coverage is {cfg.min_coverage:g}",
            )
    if cfg.min_air_fraction > 0:
        air = np.count_nonzero(hu < cfg.air_hu) / hu.size
        if air < cfg.min_air_fraction:
            raise ScanReadError(
                "implausible_hu",
                f"{air:.2%} of voxels below {cfg.air_hu:g} (air), imaging.min_air_fraction is {cfg.min_air_fraction:g}; "
                f"values range {float(hu.min()):g} to {float(hu.max()):g}",
            )

    return raw, n_bad
