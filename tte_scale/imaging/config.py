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
    """Series with fewer slices are rejected (`too_few_slices`); 1 only to inspect single images."""
    gap_rel_tolerance: float = 0.1
    """Allowed deviation of a slice gap from the median gap, as a fraction of it."""
    gap_abs_tolerance_mm: float = 0.01
    """Floor of the allowed gap deviation in mm (header positions are rounded)."""
    max_tilt_deg: float = 0.5
    """Largest gantry tilt accepted (angle between slice step and slice normal)."""
    require_ct: bool = True
    """Reject series whose Modality (DICOM) or scans.parquet modality is not CT."""

    def __post_init__(self) -> None:
        check(len(self.spacing_mm) == 3 and all(s > 0 for s in self.spacing_mm), "spacing_mm", "three positive numbers")
        check(len(self.shape) == 3 and all(n >= 2 for n in self.shape), "shape", "three integers >= 2")
        check(-32768 <= self.hu_min < self.hu_max <= 32767, "hu_min", "need -32768 <= hu_min < hu_max <= 32767")
        check(self.min_slices >= 1, "min_slices", "must be >= 1")
        check(0 < self.gap_rel_tolerance < 0.5, "gap_rel_tolerance", "must be in (0, 0.5)")
        check(self.gap_abs_tolerance_mm >= 0, "gap_abs_tolerance_mm", "must be >= 0")
        check(0 <= self.max_tilt_deg < 45, "max_tilt_deg", "must be in [0, 45)")
