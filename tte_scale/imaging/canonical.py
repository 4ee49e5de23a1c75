"""Turn a :class:`RawVolume` into the canonical int16 volume of the shard config.

Canonical means: array axes [D, H, W] grow toward Superior, Anterior and the patient's Left
(:data:`CANONICAL_ORIENTATION` ``"SAL"``), voxels of ``cfg.spacing_mm``, shape ``cfg.shape``
centred on the centre of the scanned box, HU clipped to ``[hu_min, hu_max]``, int16.

Reorienting, resampling and cropping/padding are one trilinear resampling step: each output
voxel centre is mapped through ``inv(A_in) @ A_out`` into the input grid and sampled with
``torch.nn.functional.grid_sample``. One interpolation instead of three keeps it exact for
axis-aligned scans (flips and permutations land on grid points) and correct for oblique ones.
Outside the scan the value is ``hu_min`` (air). CPU grid_sample is deterministic, and the
sampling grid is built in float64, so equal inputs give byte-identical outputs.

Legend: D, H, W canonical axes; I, J, K input array axes.
"""

from __future__ import annotations

import numpy as np

from tte_scale.imaging.config import ImagingConfig
from tte_scale.imaging.volume import RawVolume


def canonical_affine(cfg: ImagingConfig, center_ras: np.ndarray) -> np.ndarray:
    """Affine of the canonical grid (voxel [d, h, w] -> RAS mm) centred on ``center_ras``."""
    sd, sh, sw = cfg.spacing_mm
    a = np.zeros((4, 4))
    a[2, 0] = sd  # d -> +z (superior)
    a[1, 1] = sh  # h -> +y (anterior)
    a[0, 2] = -sw  # w -> -x: RAS x grows toward the Right, so -x is toward the Left
    a[3, 3] = 1.0
    half = (np.asarray(cfg.shape, dtype=np.float64) - 1.0) / 2.0
    a[:3, 3] = np.asarray(center_ras, dtype=np.float64) - a[:3, :3] @ half
    return a


def scan_center_ras(raw: RawVolume) -> np.ndarray:
    """World position of the centre of the scanned voxel box."""
    half = (np.asarray(raw.hu_IJK.shape, dtype=np.float64) - 1.0) / 2.0
    return raw.affine_ras[:3, :3] @ half + raw.affine_ras[:3, 3]


def covered_fraction(raw: RawVolume, cfg: ImagingConfig, samples: int = 24) -> float:
    """Fraction of the canonical volume that lies inside the scanned voxel box.

    Measured on a grid of at most ``samples`` points per axis spread over the canonical volume
    (the full grid has millions of points; the fraction is a threshold check, and a coarse grid
    is within a few percent of it). A point is inside when its input voxel coordinates are within
    half a voxel of the array, the box the scan's voxels cover.
    """
    out_aff = canonical_affine(cfg, scan_center_ras(raw))
    vox_map = np.linalg.inv(raw.affine_ras) @ out_aff
    axes = [np.linspace(0, n - 1, min(n, samples)) for n in cfg.shape]
    dhw = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    ijk = dhw @ vox_map[:3, :3].T + vox_map[:3, 3]
    size = np.asarray(raw.hu_IJK.shape, dtype=np.float64)
    inside = np.all((ijk >= -0.5) & (ijk <= size - 0.5), axis=1)
    return float(inside.mean())


def canonicalize(raw: RawVolume, cfg: ImagingConfig) -> tuple[np.ndarray, np.ndarray]:
    """Return (``vol_DHW`` int16, its RAS affine).

    ``raw.hu_IJK`` may be float32 or an integer dtype (a NIfTI file's stored values), and C- or
    Fortran-ordered: nibabel hands a NIfTI array over in Fortran order, whose C-ordered copy cost
    more CPU than the whole resampling (benchmarks/results/shard.md), so a Fortran-ordered array is
    sampled through its transpose (a C-contiguous view, axes K, J, I) instead of being copied.
    """
    import torch
    import torch.nn.functional as F

    out_aff = canonical_affine(cfg, scan_center_ras(raw))
    vox_map = np.linalg.inv(raw.affine_ras) @ out_aff  # canonical voxel -> input voxel
    D, H, W = cfg.shape
    hu = raw.hu_IJK
    in_shape = np.asarray(hu.shape, dtype=np.float64)
    # grid_sample (align_corners=True) wants coordinates in [-1, 1] per axis of the array it
    # samples, listed last axis first: (k, j, i) for the [I, J, K] array, (i, j, k) for its
    # transpose. Fold that normalization into the affine map.
    transposed = not hu.flags.c_contiguous and hu.flags.f_contiguous
    src = hu.T if transposed else hu
    scale = 2.0 / np.maximum(in_shape - 1.0, 1.0)
    lin = vox_map[:3, :3] * scale[:, None]
    off = vox_map[:3, 3] * scale - 1.0
    d = np.arange(D, dtype=np.float64)[:, None, None, None]
    h = np.arange(H, dtype=np.float64)[None, :, None, None]
    w = np.arange(W, dtype=np.float64)[None, None, :, None]
    # Summed in float64 and rounded once to float32, as before, but written straight into the
    # float32 grid: the float64 [D, H, W, 3] intermediate (190 MB at the default shape) cost a
    # third of the step.
    grid_DHW3 = np.empty((D, H, W, 3), dtype=np.float32)
    np.add(off + d * lin[:, 0] + h * lin[:, 1], w * lin[:, 2], out=grid_DHW3 if transposed else grid_DHW3[..., ::-1])

    # Shift HU so air is 0: grid_sample's zero padding then pads with hu_min. Two passes into
    # one float32 buffer instead of three fresh arrays; integer voxels are clipped in their own
    # dtype (a mixed int16 -> float32 clip loop is 5x slower), and the shift converts them: the
    # same float32 numbers either way (integers below 2**24 are exact).
    vol = np.empty(src.shape, dtype=np.float32)
    if src.dtype.kind == "f":
        np.clip(src, cfg.hu_min, cfg.hu_max, out=vol)
        np.subtract(vol, np.float32(cfg.hu_min), out=vol)
    else:
        info = np.iinfo(src.dtype)
        clipped = np.clip(src, max(cfg.hu_min, info.min), min(cfg.hu_max, info.max))
        np.subtract(clipped, np.float32(cfg.hu_min), out=vol, dtype=np.float32)
    with torch.no_grad():
        out = F.grid_sample(
            torch.from_numpy(vol)[None, None],
            torch.from_numpy(grid_DHW3)[None],
            mode="bilinear",  # trilinear for 5-D input
            padding_mode="zeros",
            align_corners=True,
        )[0, 0]
    out = torch.round(out) + cfg.hu_min
    vol_DHW = out.clamp_(cfg.hu_min, cfg.hu_max).to(torch.int16).numpy()
    return np.ascontiguousarray(vol_DHW), out_aff
