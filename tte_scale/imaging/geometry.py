"""Slice geometry of a DICOM series, as pure functions on numbers (no pydicom here).

Slices are ordered by the projection of ImagePositionPatient (IPP) on the slice normal
``n = row_dir x col_dir`` (ImageOrientationPatient, IOP), never by file name or InstanceNumber.
The ordered projections must step evenly: a gap of ~2x the typical step is a missing slice, a
gap of ~0 a duplicate, anything else outside the tolerance is uneven (mixed) spacing. Positions
must also move *along* the normal: a sideways drift means a tilted gantry, whose voxels are not
a box, so the series is rejected rather than silently sheared.

DICOM patient coordinates are LPS+ (x toward the patient's left, y toward posterior, z toward
head); the affines returned here are RAS+ (nibabel's convention): x and y are negated.

Legend: S slices, 3 xyz.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tte_scale.imaging.volume import ScanReadError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True, slots=True)
class SliceTolerances:
    """How strict the series checks are (values from ``ImagingConfig``)."""

    orientation: float = 1e-4
    """Largest difference between two slices' IOP direction cosines."""
    gap_rel: float = 0.1
    """Allowed deviation of a slice gap from the median gap, as a fraction of it."""
    gap_abs_mm: float = 0.01
    """Floor of the allowed deviation in mm (positions are often rounded in headers)."""
    max_tilt_deg: float = 0.5
    """Largest angle between the slice step and the slice normal."""
    min_slices: int = 16
    """Fewer slices than this is not a usable CT volume (e.g. a scout)."""


@dataclass(frozen=True, slots=True)
class SeriesGeometry:
    """Result of :func:`series_geometry`: file order -> volume order, and the voxel grid."""

    order: np.ndarray
    """int64 [S]: slice indices (into the input lists) from first to last along the normal."""
    affine_ras: np.ndarray
    """float64 4x4: voxel (slice, row, column) -> RAS+ mm."""
    slice_step_mm: float
    """Distance between consecutive slices along the normal."""


def series_geometry(
    iop_S6: np.ndarray,
    ipp_S3: np.ndarray,
    pixel_spacing: tuple[float, float],
    tol: SliceTolerances,
    single_slice_mm: float = 1.0,
) -> SeriesGeometry:
    """Check a series' slice positions and build its affine; raise ScanReadError when unusable.

    ``pixel_spacing`` is DICOM PixelSpacing: (between rows, between columns) in mm;
    ``single_slice_mm`` is the slice axis length used when there is only one slice.
    """
    iop_S6 = np.asarray(iop_S6, dtype=np.float64).reshape(-1, 6)
    ipp_S3 = np.asarray(ipp_S3, dtype=np.float64).reshape(-1, 3)
    n_slices = len(ipp_S3)
    if n_slices < tol.min_slices:
        raise ScanReadError("too_few_slices", f"{n_slices} slices, need {tol.min_slices}")
    if not (np.isfinite(iop_S6).all() and np.isfinite(ipp_S3).all()):
        raise ScanReadError("missing_geometry", "non-finite position or orientation")
    if np.abs(iop_S6 - iop_S6[0]).max() > tol.orientation:
        raise ScanReadError("mixed_orientation", "slices have different ImageOrientationPatient")
    row_dir, col_dir = iop_S6[0, :3], iop_S6[0, 3:]
    normal = np.cross(row_dir, col_dir)
    norm = np.linalg.norm(normal)
    if not (0.99 < np.linalg.norm(row_dir) < 1.01 and 0.99 < np.linalg.norm(col_dir) < 1.01 and norm > 0.99):
        raise ScanReadError("missing_geometry", "ImageOrientationPatient is not two orthonormal directions")
    normal = normal / norm

    proj_S = ipp_S3 @ normal
    order = np.argsort(proj_S, kind="stable")
    if n_slices == 1:
        return SeriesGeometry(
            order, _affine(normal * single_slice_mm, row_dir, col_dir, pixel_spacing, ipp_S3[0]), single_slice_mm
        )
    gaps = np.diff(proj_S[order])
    step = float(np.median(gaps))
    allowed = max(tol.gap_rel * step, tol.gap_abs_mm)
    if (gaps <= tol.gap_abs_mm).any():
        raise ScanReadError("duplicate_slice", f"{int((gaps <= tol.gap_abs_mm).sum())} repeated positions")
    off = np.abs(gaps - step) > allowed
    if off.any():
        ratio = gaps[off] / step
        if np.all((np.abs(ratio - np.round(ratio)) * step <= allowed) & (np.round(ratio) >= 2)):
            missing = int((np.round(ratio) - 1).sum())
            raise ScanReadError("missing_slice", f"{missing} slice(s) missing")
        raise ScanReadError("uneven_spacing", f"{int(off.sum())} of {len(gaps)} gaps off the median")

    first, last = ipp_S3[order[0]], ipp_S3[order[-1]]
    step_vec = (last - first) / (n_slices - 1)
    cos_tilt = abs(float(step_vec @ normal)) / float(np.linalg.norm(step_vec))
    tilt_deg = float(np.degrees(np.arccos(min(1.0, cos_tilt))))
    if tilt_deg > tol.max_tilt_deg:
        raise ScanReadError("gantry_tilt", f"slices drift {tilt_deg:.1f} degrees off the normal")

    return SeriesGeometry(order, _affine(step_vec, row_dir, col_dir, pixel_spacing, first), step)


def _affine(step_vec, row_dir, col_dir, pixel_spacing, first) -> np.ndarray:
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = step_vec  # slice axis: along the (checked) step
    affine_lps[:3, 1] = col_dir * float(pixel_spacing[0])  # row index moves down a column
    affine_lps[:3, 2] = row_dir * float(pixel_spacing[1])  # column index moves along a row
    affine_lps[:3, 3] = first
    return LPS_TO_RAS @ affine_lps


def axcodes(affine: np.ndarray) -> str:
    """Orientation letters of the array axes: the direction each index grows toward.

    E.g. ``"SAL"``: axis 0 grows toward superior, axis 1 toward anterior, axis 2 toward left.
    """
    import nibabel.orientations as nio

    return "".join(nio.aff2axcodes(affine))


def check_affine(affine: np.ndarray) -> None:
    """Raise ``bad_affine`` for a transform that cannot place voxels in space."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.isfinite(a).all() or abs(np.linalg.det(a[:3, :3])) < 1e-9:
        raise ScanReadError("bad_affine", "singular or non-finite voxel-to-world transform")
