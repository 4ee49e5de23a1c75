"""Readers on files no one here wrote (pydicom's and nibabel's bundled data) and on NIfTI phantoms."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.data import get_testdata_file
from support.phantoms import write_nifti

from tte_scale.imaging import (
    ImagingConfig,
    RawVolume,
    ScanReadError,
    axcodes,
    canonicalize,
    read_dicom_series,
    read_scan,
)

NIB_DATA = Path(nib.__file__).parent / "tests" / "data"


def test_nifti_lps_and_ras_give_the_same_canonical_volume(tmp_path):
    shape = (64, 64, 40)
    ras = np.array([[5.0, 0, 0, -157.5], [0, 5, 0, -157.5], [0, 0, 5, -97.5], [0, 0, 0, 1]])
    # same grid stored with x and y reversed (an LPS-ordered array): affine columns flip sign
    lps = ras.copy()
    lps[:3, 0] *= -1
    lps[:3, 1] *= -1
    lps[:3, 3] = ras[:3, :3] @ [63, 63, 0] + ras[:3, 3]
    a = read_scan(
        write_nifti(tmp_path / "ras.nii.gz", ras, shape),
        "CT",
        cfg := ImagingConfig(spacing_mm=(5.0, 5.0, 5.0), shape=(40, 64, 64), min_slices=8),
    )
    b = read_scan(write_nifti(tmp_path / "lps.nii.gz", lps, shape), "CT", cfg)
    assert axcodes(a.affine_ras) == "RAS" and axcodes(b.affine_ras) == "LPS"
    np.testing.assert_array_equal(a.hu_IJK[::-1, ::-1], b.hu_IJK)
    va, aff = canonicalize(a, cfg)
    vb, _ = canonicalize(b, cfg)
    np.testing.assert_array_equal(va, vb)
    # SAL: the canonical array is the RAS array with axes reversed and x flipped
    np.testing.assert_array_equal(va, np.clip(a.hu_IJK, -1024, 3071).transpose(2, 1, 0)[:, :, ::-1].astype(np.int16))
    assert axcodes(aff) == "SAL"


def test_nibabel_anatomical_matches_closest_canonical():
    img = nib.load(NIB_DATA / "anatomical.nii")
    raw = read_scan(NIB_DATA / "anatomical.nii", "CT", ImagingConfig(min_slices=2))
    np.testing.assert_allclose(raw.affine_ras, img.affine)
    assert axcodes(raw.affine_ras) == "".join(nib.aff2axcodes(img.affine))
    ras = nib.as_closest_canonical(img)
    x, y, z = ras.shape
    sx, sy, sz = ras.header.get_zooms()[:3]
    cfg = ImagingConfig(spacing_mm=(sz, sy, sx), shape=(z, y, x), hu_min=-32768, hu_max=32767)
    vol, aff = canonicalize(raw, cfg)
    expected = np.round(np.asarray(ras.dataobj, dtype=np.float32)).transpose(2, 1, 0)[:, :, ::-1]
    np.testing.assert_array_equal(vol, expected.astype(np.int16))
    np.testing.assert_allclose(
        aff[:3, 3] + aff[:3, :3] @ (np.array(vol.shape) - 1) / 2,
        ras.affine[:3, :3] @ (np.array(ras.shape) - 1) / 2 + ras.affine[:3, 3],
    )


def test_nibabel_4d_is_rejected():
    with pytest.raises(ScanReadError, match="not_3d"):
        read_scan(NIB_DATA / "example4d.nii.gz", "CT", ImagingConfig())


def test_nifti_modality_and_corrupt(tmp_path):
    with pytest.raises(ScanReadError, match="not_ct"):
        read_scan(NIB_DATA / "anatomical.nii", "MR", ImagingConfig())
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ScanReadError, match="unreadable_file"):
        read_scan(bad, "CT", ImagingConfig())


def _one_file_series(tmp_path, name):
    folder = tmp_path / name
    folder.mkdir()
    shutil.copy(get_testdata_file(name), folder / name)
    return folder


# uncompressed, JPEG 2000 and JPEG 2000 lossless CT (the last with a pixel-representation mismatch pydicom fixes)
@pytest.mark.parametrize("name", ["CT_small.dcm", "693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm"])
def test_pydicom_real_ct_is_read(tmp_path, name):
    import pydicom

    ds = pydicom.dcmread(get_testdata_file(name))
    raw = read_dicom_series(_one_file_series(tmp_path, name), ImagingConfig(min_slices=1))
    assert raw.hu_IJK.shape == (1, ds.Rows, ds.Columns)
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(raw.hu_IJK[0], hu)
    # first-slice origin and in-plane axes come straight from the header (LPS -> RAS)
    np.testing.assert_allclose(raw.affine_ras[:3, 3], np.array([-1, -1, 1]) * np.array(ds.ImagePositionPatient, float))
    assert set(raw.scanner) == {"manufacturer", "kvp", "slice_thickness_mm"}


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_RLE.dcm",  # RLE Lossless: pydicom's own decoder
        "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless: Pillow or pylibjpeg-openjpeg
        "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless: pylibjpeg-libjpeg (a dependency)
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
    ],
)
def test_compressed_transfer_syntaxes_decode_to_the_same_volume(tmp_path, name):
    """pydicom ships one image in several transfer syntaxes: each must read to the same HU and
    geometry as the uncompressed file (not CT, so the modality check is off here)."""
    import pydicom

    cfg = ImagingConfig(min_slices=1, require_ct=False)
    assert pydicom.dcmread(get_testdata_file(name)).file_meta.TransferSyntaxUID != "1.2.840.10008.1.2.1"
    ref = read_dicom_series(_one_file_series(tmp_path, "MR_small.dcm"), cfg)
    raw = read_dicom_series(_one_file_series(tmp_path, name), cfg)
    np.testing.assert_array_equal(raw.hu_IJK, ref.hu_IJK)
    np.testing.assert_allclose(raw.affine_ras, ref.affine_ras)


def test_pydicom_real_ct_single_slice_rejected_by_default(tmp_path):
    with pytest.raises(ScanReadError, match="too_few_slices"):
        read_dicom_series(_one_file_series(tmp_path, "CT_small.dcm"), ImagingConfig())


@pytest.mark.parametrize(
    "name, cfg, reason",
    [
        ("no_meta.dcm", {}, "unreadable_file"),
        ("MR_truncated.dcm", {}, "not_ct"),
        ("MR_truncated.dcm", {"require_ct": False, "min_slices": 1}, "pixel_decode_failed"),
        ("badVR.dcm", {}, "not_ct"),
        ("JPEGLSNearLossless_16.dcm", {"require_ct": False, "min_slices": 1}, "missing_geometry"),
        ("rtplan_truncated.dcm", {}, "not_ct"),
    ],
)
def test_pydicom_broken_files_rejected(tmp_path, name, cfg, reason):
    with pytest.raises(ScanReadError) as info:
        read_dicom_series(_one_file_series(tmp_path, name), ImagingConfig(**cfg))
    assert info.value.reason == reason
    assert name in info.value.detail or str(tmp_path) in info.value.detail


def test_canonical_clip_pad_and_determinism():
    rng = np.random.default_rng(0)
    hu = rng.normal(0, 2000, (20, 30, 30)).astype(np.float32)
    raw = RawVolume(hu_IJK=hu, affine_ras=np.diag([2.0, 2.0, 2.0, 1.0]))
    cfg = ImagingConfig(spacing_mm=(2.0, 2.0, 2.0), shape=(40, 16, 16))  # pad along D, crop in-plane
    a, _ = canonicalize(raw, cfg)
    b, _ = canonicalize(raw, cfg)
    assert a.tobytes() == b.tobytes()
    assert a.min() >= -1024 and a.max() <= 3071 and a.max() == 3071
    assert (a[:5] == -1024).all() and (a[-5:] == -1024).all()  # padded with air
