"""The per-scan path before issue 17, kept as a reference: `canonicalize` (commit 06935fe) and the
NIfTI read it was fed (nibabel float32, then a C-ordered copy).

tests/unit/imaging/test_canonical_fast_path.py checks the current code against it, and
benchmarks/bench_shard.py --input scanner512 times both in one run (the before/after rows).
"""

from __future__ import annotations

import numpy as np

from tte_scale.imaging import ImagingConfig, RawVolume
from tte_scale.imaging.canonical import canonical_affine, scan_center_ras


def reference_read_nifti(path) -> RawVolume:
    """read_nifti before issue 17 (no error handling: a reference for files known to be good)."""
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asarray(img.dataobj, dtype=np.float32)
    return RawVolume(hu_IJK=np.ascontiguousarray(data), affine_ras=np.asarray(img.affine, dtype=np.float64))


def reference_canonicalize(raw: RawVolume, cfg: ImagingConfig) -> np.ndarray:
    """`canonicalize` before issue 17 (C-ordered float32 copy, float64 grid, three prep arrays)."""
    import torch
    import torch.nn.functional as F

    out_aff = canonical_affine(cfg, scan_center_ras(raw))
    vox_map = np.linalg.inv(raw.affine_ras) @ out_aff
    D, H, W = cfg.shape
    in_shape = np.asarray(raw.hu_IJK.shape, dtype=np.float64)
    scale = 2.0 / np.maximum(in_shape - 1.0, 1.0)
    lin = vox_map[:3, :3] * scale[:, None]
    off = vox_map[:3, 3] * scale - 1.0
    d = np.arange(D, dtype=np.float64)[:, None, None, None]
    h = np.arange(H, dtype=np.float64)[None, :, None, None]
    w = np.arange(W, dtype=np.float64)[None, None, :, None]
    grid = off + d * lin[:, 0] + h * lin[:, 1] + w * lin[:, 2]
    grid = np.ascontiguousarray(grid[..., ::-1], dtype=np.float32)
    hu = np.ascontiguousarray(raw.hu_IJK, dtype=np.float32)
    vol = np.clip(hu, cfg.hu_min, cfg.hu_max).astype(np.float32) - np.float32(cfg.hu_min)
    with torch.no_grad():
        out = F.grid_sample(
            torch.from_numpy(vol)[None, None],
            torch.from_numpy(grid)[None],
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        )[0, 0]
    out = torch.round(out) + cfg.hu_min
    return out.clamp_(cfg.hu_min, cfg.hu_max).to(torch.int16).numpy()
