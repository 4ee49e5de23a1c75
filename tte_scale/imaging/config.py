"""Config of the imaging stage: reader checks and the canonical volume."""

from __future__ import annotations

from dataclasses import dataclass

from tte_scale.config import check

# The one orientation every canonical volume has, as nibabel axcodes of the array axes
# [D, H, W]: D grows toward Superior, H toward Anterior, W toward the patient's Left.
CANONICAL_ORIENTATION = "SAL"


@dataclass(kw_only=True, slots=True)
class ImagingConfig:
    """How scans are read, checked and turned into fixed-size int16 volumes."""

    spacing_mm: tuple[float, float, float] = (3.0, 1.5, 1.5)
    """Target voxel size [D, H, W] in mm (slice, then in-plane; Merlin/INSPECT practice)."""
    shape: tuple[int, int, int] = (160, 224, 224)
    """Canonical volume shape [D, H, W]; centre crop / pad (with hu_min) around the scan centre."""
    hu_min: int = -1024
    """Lowest HU kept (air); also the padding value outside the scan."""
    hu_max: int = 3071
    """Highest HU kept."""
    min_slices: int = 16
    """DICOM series with fewer slices are rejected (`too_few_slices`); 1 only to inspect single
    images. Every format, NIfTI included, also passes the plausibility checks below."""
    gap_rel_tolerance: float = 0.1
    """Allowed deviation of a slice gap from the median gap, as a fraction of it."""
    gap_abs_tolerance_mm: float = 0.01
    """Floor of the allowed gap deviation in mm (header positions are rounded)."""
    max_tilt_deg: float = 0.5
    """Largest gantry tilt accepted (angle between slice step and slice normal)."""
    require_ct: bool = True
    """Reject series whose Modality (DICOM) or scans.parquet modality is not CT."""
    min_extent_mm: float = 20.0
    """Smallest extent of the scanned box along each axis (voxels x voxel size, mm), any format:
    a thinner scan (a 2x2x2 image, a slab of a few slices) is rejected (`too_small`). 0 disables."""
    min_coverage: float = 0.1
    """Smallest fraction of the canonical volume (`shape` x `spacing_mm`, centred on the scan) the
    scan covers; the rest is padding. Less is rejected (`low_coverage`); a whole chest covers 0.5-1
    at the default shape, a head CT about 0.2. 0 disables."""
    air_hu: float = -500.0
    """Values below this count as air (for `min_air_fraction`)."""
    min_air_fraction: float = 0.01
    """Smallest fraction of the scan's voxels below `air_hu`: a CT holds air around the body, in
    the lungs and outside the reconstruction circle (a fifth of a square image); an MR or an
    intensity-normalized volume holds none and is rejected (`implausible_hu`). 0 disables."""
    nonfinite_fill_hu: int | None = None
    """NaN or infinite voxels: None rejects the scan (`nonfinite_voxels`); a HU value is written
    in their place, and each such scan is listed with its count in build.json `notes`."""

    def __post_init__(self) -> None:
        check(len(self.spacing_mm) == 3 and all(s > 0 for s in self.spacing_mm), "spacing_mm", "three positive numbers")
        check(len(self.shape) == 3 and all(n >= 2 for n in self.shape), "shape", "three integers >= 2")
        check(-32768 <= self.hu_min < self.hu_max <= 32767, "hu_min", "need -32768 <= hu_min < hu_max <= 32767")
        check(self.min_slices >= 1, "min_slices", "must be >= 1")
        check(0 < self.gap_rel_tolerance < 0.5, "gap_rel_tolerance", "must be in (0, 0.5)")
        check(self.gap_abs_tolerance_mm >= 0, "gap_abs_tolerance_mm", "must be >= 0")
        check(0 <= self.max_tilt_deg < 45, "max_tilt_deg", "must be in [0, 45)")
        check(self.min_extent_mm >= 0, "min_extent_mm", "must be >= 0")
        check(0 <= self.min_coverage <= 1, "min_coverage", "must be in [0, 1]")
        check(0 <= self.min_air_fraction <= 1, "min_air_fraction", "must be in [0, 1]")
        check(
            self.nonfinite_fill_hu is None or self.hu_min <= self.nonfinite_fill_hu <= self.hu_max,
            "nonfinite_fill_hu",
            "must be null or a HU value in [hu_min, hu_max]",
        )
