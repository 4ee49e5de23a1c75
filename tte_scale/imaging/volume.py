"""What a reader hands to the canonicalizer, and the reason codes a scan can be rejected with.

A reader never lets a header value escape: a :class:`ScanReadError` carries a reason code from
:data:`REASONS` and, optionally, a detail the reader wrote itself (counts, a file name, an
exception *type*), never a value copied out of a DICOM header.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# reason code -> what it means (documented in the manifest's build.json as well)
REASONS: dict[str, str] = {
    "file_not_found": "image_path does not exist (a URL: no such object, or nothing under the prefix)",
    "remote_read_failed": "an object of an image_path URL could not be read: access denied, or an error that "
    "persisted through storage.attempts tries (a re-run tries again)",
    "unreadable_file": "a file could not be parsed as DICOM/NIfTI (truncated, no preamble, bad header)",
    "no_dicom_files": "the folder holds no files, or none that is DICOM",
    "unsupported_path": "image_path is neither a folder of DICOM files nor a .nii/.nii.gz file",
    "multiple_series": "the folder holds more than one non-localizer series",
    "not_ct": "modality is not CT",
    "localizer": "only a localizer/scout series was found",
    "multiframe_unsupported": "multi-frame (enhanced) DICOM objects are not supported",
    "missing_geometry": "a slice lacks ImagePositionPatient, ImageOrientationPatient or PixelSpacing",
    "mixed_orientation": "slices disagree on ImageOrientationPatient",
    "inconsistent_slices": "slices disagree on rows, columns or pixel spacing",
    "too_few_slices": "fewer slices than imaging.min_slices",
    "duplicate_slice": "two slices at the same position along the slice normal",
    "missing_slice": "a gap of a whole multiple of the slice spacing: one or more slices missing",
    "uneven_spacing": "slice gaps differ by more than the tolerance (mixed spacing)",
    "gantry_tilt": "slice positions do not move along the slice normal (tilted gantry)",
    "pixel_decode_failed": "pixel data could not be decoded (truncated, or no installed plugin)",
    "not_3d": "the image is not a single 3D volume",
    "bad_affine": "the voxel-to-world transform is singular or not finite",
    "bad_rescale": "RescaleSlope or RescaleIntercept is not a finite number (or the slope is 0)",
    "nonfinite_voxels": "NaN or infinite voxel values (imaging.nonfinite_fill_hu is not set)",
    "too_small": "the scanned box is thinner than imaging.min_extent_mm along an axis",
    "low_coverage": "the scan covers less than imaging.min_coverage of the canonical volume",
    "implausible_hu": "fewer voxels below imaging.air_hu than imaging.min_air_fraction: not CT Hounsfield units",
    "worker_error": "an unexpected error while processing the scan",
}


class ScanReadError(Exception):
    """A scan that cannot be used; ``reason`` is a key of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reason code {reason!r}")
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(slots=True)
class RawVolume:
    """A scan as read: HU values on its own voxel grid, and where that grid lies in the patient.

    ``hu_IJK`` [I, J, K] (array axes in file order, C- or Fortran-ordered in memory): float32, or
    int16/uint16/int8/uint8 values as a NIfTI file stores them when it has no scaling; ``affine_ras`` float64 4x4 maps a
    voxel index (i, j, k, 1) to RAS+ millimetres (x toward the patient's left, y toward
    anterior, z toward superior; nibabel's convention). ``scanner`` holds only whitelisted
    fields (see :mod:`tte_scale.imaging.deid`). ``ignored_files``: files of a DICOM folder that
    are not DICOM at all (a README, a thumbnail), as paths relative to the folder.
    """

    hu_IJK: np.ndarray
    affine_ras: np.ndarray
    scanner: dict = field(default_factory=dict)
    ignored_files: list[str] = field(default_factory=list)

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size along each array axis (column norms of the affine)."""
        return tuple(float(v) for v in np.linalg.norm(self.affine_ras[:3, :3], axis=0))
