"""Scanner geometry: voxel grid, RAS affine, and the world coordinates of every voxel axis.

World coordinates are NIfTI's RAS+ in mm: +x towards the patient's Right, +y Anterior,
+z Superior. DICOM's LPS+ flips the first two: RAS = diag(-1, -1, 1) @ LPS. Arrays are stored
in NIfTI order ``vol_IJK`` (I, J in-plane, K slices) with ``world = affine @ [i, j, k, 1]``.

The nominal storage is what dcm2niix writes for an axial head-first DICOM series: i runs to
the patient's left, j posterior, k superior. Scans deviate from it at random: in-plane axes
flipped or transposed, slices stored feet-first (k runs inferior). Affines stay axis-aligned
(no oblique acquisitions), which lets the phantom render one bounding box at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tte_scale.synth.config import ScannerConfig

__all__ = ["Geometry", "sample_geometry", "make_geometry", "voxel_axes", "LPS_FROM_RAS"]

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True, slots=True)
class Geometry:
    """One scan's voxel grid."""

    shape: tuple[int, int, int]
    """(I, J, K) array shape, NIfTI order."""
    affine: np.ndarray
    """float64 [4, 4]: voxel (i, j, k) -> RAS mm, axis-aligned."""
    slice_thickness: float
    """Nominal slice thickness (mm) = spacing between slices."""
    noise_hu: float
    """Standard deviation of the Gaussian image noise (HU)."""
    feet_first: bool
    """True when k runs from superior to inferior."""

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def fov_center(self) -> np.ndarray:
        """RAS position of the centre of the grid."""
        return self.affine[:3, :3] @ ((np.array(self.shape) - 1) / 2.0) + self.affine[:3, 3]

    def orientation(self) -> str:
        """Axis codes the way nibabel names them (e.g. 'LPS' for the nominal storage)."""
        import nibabel as nib

        return "".join(nib.aff2axcodes(self.affine))


def make_geometry(
    *,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    center_ras: np.ndarray,
    axis_world: tuple[int, int, int],
    axis_sign: tuple[int, int, int],
    noise_hu: float = 0.0,
) -> Geometry:
    """An axis-aligned grid: voxel axis a runs along world axis ``axis_world[a]`` with sign ``axis_sign[a]``,
    centred on ``center_ras``."""
    if sorted(axis_world) != [0, 1, 2]:
        raise ValueError(f"axis_world must be a permutation of (0, 1, 2), got {axis_world}")
    rot = np.zeros((3, 3))
    for a in range(3):
        rot[axis_world[a], a] = axis_sign[a] * spacing[a]
    affine = np.eye(4)
    affine[:3, :3] = rot
    affine[:3, 3] = np.asarray(center_ras, float) - rot @ ((np.array(shape) - 1) / 2.0)
    feet_first = axis_sign[list(axis_world).index(2)] < 0
    return Geometry(
        shape=tuple(int(n) for n in shape),
        affine=affine,
        slice_thickness=float(spacing[2]),
        noise_hu=float(noise_hu),
        feet_first=bool(feet_first),
    )


def sample_geometry(rng: np.random.Generator, sc: ScannerConfig, z_center: float = 0.0) -> Geometry:
    """Draw one scan's grid from the scanner ranges (spacing, FOV, matrix, coverage, storage order)."""
    spacing = float(rng.uniform(*sc.inplane_spacing_mm))
    matrix = int(np.clip(round(rng.uniform(*sc.fov_mm) / spacing), sc.matrix[0], sc.matrix[1]))
    dz = float(rng.uniform(*sc.slice_spacing_mm))
    n_slices = max(8, int(round(rng.uniform(*sc.coverage_mm) / dz)))
    # Nominal storage (see module doc): i -> RAS -x, j -> RAS -y, k -> +z.
    axis_world, axis_sign = [0, 1, 2], [-1, -1, 1]
    for a in (0, 1):
        if rng.random() < sc.flip_prob:
            axis_sign[a] *= -1
    if rng.random() < sc.flip_prob / 2:
        axis_world[0], axis_world[1] = 1, 0
        axis_sign[0], axis_sign[1] = axis_sign[1], axis_sign[0]
    if rng.random() < sc.feet_first_prob:
        axis_sign[2] = -1
    center = np.array([rng.normal(0.0, 8.0), rng.normal(0.0, 8.0), z_center])
    return make_geometry(
        shape=(matrix, matrix, n_slices),
        spacing=(spacing, spacing, dz),
        center_ras=center,
        axis_world=tuple(axis_world),
        axis_sign=tuple(axis_sign),
        noise_hu=float(rng.uniform(*sc.noise_hu)),
    )


def voxel_axes(geom: Geometry) -> list[tuple[int, np.ndarray]]:
    """For each voxel axis a: (world axis it runs along, RAS coordinate of each index, float64 [n_a])."""
    rot = geom.affine[:3, :3]
    out = []
    for a in range(3):
        col = rot[:, a]
        p = int(np.argmax(np.abs(col)))
        if np.count_nonzero(np.abs(col) > 1e-9 * np.abs(col).max()) != 1:
            raise ValueError("voxel_axes needs an axis-aligned affine (no oblique grids)")
        out.append((p, geom.affine[p, 3] + col[p] * np.arange(geom.shape[a])))
    return out
