"""The per-scan fast path of issue 17: NIfTI arrays read without a C-ordered copy, integer voxels
kept as stored, and `canonicalize` equal to the implementation before it.

The reference (tests/support/reference_canonical.py) is `canonicalize` as it was (commit 06935fe): a C-ordered float32 input must
give byte-identical volumes; a Fortran-ordered one (what nibabel returns) is sampled through its
transpose, which reorders grid_sample's float32 products, so a voxel lying within a rounding error
of a half HU may round the other way: at most 1 HU, on at most 0.1% of the voxels (measured on
the 512 x 512 synthetic scans of benchmarks/results/shard.md: 1,738 of 8,028,160 voxels, 0.02%).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from support.reference_canonical import reference_canonicalize

from tte_scale.imaging import ImagingConfig, RawVolume, canonicalize, check_scan, read_scan

CFG = ImagingConfig(spacing_mm=(3.0, 1.5, 1.5), shape=(24, 40, 36), min_slices=8, min_coverage=0.0)


def _scan(seed: int, shape=(48, 64, 30)) -> np.ndarray:
    """int16 CT-like values: air, soft tissue, bone and noise, beyond the HU window on both sides."""
    rng = np.random.default_rng(seed)
    vol = rng.normal(40, 200, size=shape)
    vol[:4] = -2048  # padding outside the reconstruction circle, below hu_min
    vol[..., -3:] = 3500  # above hu_max
    vol[10:20, 10:30, 5:15] = -900
    return np.round(vol).astype(np.int16)


AFFINES = {
    # x, y, z = file axes I, J, K; 0.7 mm pixels, 1.25 mm slices (a scanner export, LPS-stored)
    "lps": np.array([[-0.7, 0, 0, 20.0], [0, -0.7, 0, 30.0], [0, 0, 1.25, -10.0], [0, 0, 0, 1]]),
    # slice axis first, rows and columns swapped (a DICOM-like layout)
    "permuted": np.array([[0, 0, -0.7, 20.0], [0, -0.7, 0, 30.0], [1.25, 0, 0, -10.0], [0, 0, 0, 1]]),
}


def _oblique() -> np.ndarray:
    c, s = np.cos(0.3), np.sin(0.3)
    a = np.diag([0.7, 0.7, 1.25, 1.0])
    a[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ a[:3, :3]
    return a


AFFINES["oblique"] = _oblique()


@pytest.mark.parametrize("name", sorted(AFFINES))
@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_c_ordered_input_is_byte_identical_to_the_reference(name, dtype):
    raw = RawVolume(hu_IJK=_scan(1).astype(dtype), affine_ras=AFFINES[name])
    np.testing.assert_array_equal(canonicalize(raw, CFG)[0], reference_canonicalize(raw, CFG))


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_fortran_ordered_integer_input_is_within_one_hu_of_the_reference(name):
    hu = _scan(2)
    ref = reference_canonicalize(RawVolume(hu_IJK=hu.astype(np.float32), affine_ras=AFFINES[name]), CFG)
    got = canonicalize(RawVolume(hu_IJK=np.asfortranarray(hu), affine_ras=AFFINES[name]), CFG)[0]
    diff = np.abs(got.astype(np.int32) - ref)
    assert diff.max() <= 1
    assert np.count_nonzero(diff) <= 1e-3 * diff.size


def test_int16_nifti_is_read_as_stored_without_a_c_ordered_copy(tmp_path):
    hu = _scan(3)
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(hu, AFFINES["lps"]), path)
    raw = read_scan(path, "CT", CFG)
    # nibabel's own Fortran-ordered array: the C-ordered float32 copy cost ~1 CPU-s at 512 x 512
    assert raw.hu_IJK.dtype == np.int16 and raw.hu_IJK.flags.f_contiguous and not raw.hu_IJK.flags.c_contiguous
    np.testing.assert_array_equal(raw.hu_IJK, hu)
    checked, filled = check_scan(raw, CFG)
    assert filled == 0 and checked.hu_IJK is raw.hu_IJK


def test_scaled_nifti_is_still_read_as_float_with_the_scaling_applied(tmp_path):
    hu = _scan(4)
    img = nib.Nifti1Image(hu, AFFINES["lps"])
    img.header.set_slope_inter(2.0, -10.0)
    path = tmp_path / "scaled.nii.gz"
    nib.save(img, path)
    raw = read_scan(path, "CT", CFG)
    assert raw.hu_IJK.dtype == np.float32
    np.testing.assert_allclose(raw.hu_IJK, hu.astype(np.float32) * 2 - 10)
