"""Phantom DICOM series: each acquisition gives its known affine, or its rejection code."""

from __future__ import annotations

import numpy as np
import pytest
from support.phantoms import MARKER_LPS, axial_geometry, sagittal_geometry, write_series

from tte_scale.imaging import ImagingConfig, ScanReadError, axcodes, canonicalize, read_dicom_series, read_scan

CFG = ImagingConfig(spacing_mm=(5.0, 5.0, 5.0), shape=(40, 64, 64), min_slices=8)
HALF = 63 / 2 * 5.0


def expected_marker_dhw(cfg=CFG):
    """Canonical voxel of the marker: volumes are centred on the origin in these phantoms."""
    x_ras, y_ras, z = -MARKER_LPS[0], -MARKER_LPS[1], MARKER_LPS[2]
    c = (np.asarray(cfg.shape) - 1) / 2
    sd, sh, sw = cfg.spacing_mm
    return np.array([z / sd + c[0], y_ras / sh + c[1], -x_ras / sw + c[2]])


def marker_centroid(vol):
    return np.argwhere(vol > 500).mean(axis=0)


@pytest.mark.parametrize(
    "name, geometry, codes, affine_lps",
    [
        ("axial", axial_geometry(), "SPL", [[0, 0, 5, -HALF], [0, 5, 0, -HALF], [5, 0, 0, -100], [0, 0, 0, 1]]),
        (
            "feet_first",
            axial_geometry(feet_first=True),
            "IPR",
            [[0, 0, -5, HALF], [0, 5, 0, -HALF], [-5, 0, 0, 100], [0, 0, 0, 1]],
        ),
        ("sagittal", sagittal_geometry(), "RIP", [[-5, 0, 0, 150], [0, 0, 5, -HALF], [0, -5, 0, HALF], [0, 0, 0, 1]]),
    ],
)
def test_known_affine_and_canonical_marker(tmp_path, name, geometry, codes, affine_lps):
    iop, ipps, ps = geometry
    folder = write_series(tmp_path / name, iop, ipps, ps)  # shuffled file names
    raw = read_dicom_series(folder, CFG)
    expected = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine_lps, dtype=float)  # LPS -> RAS
    np.testing.assert_allclose(raw.affine_ras, expected, atol=1e-6)
    assert axcodes(raw.affine_ras) == codes
    assert raw.scanner == {"manufacturer": "ACME", "kvp": 120.0, "slice_thickness_mm": 5.0}
    vol, aff = canonicalize(raw, CFG)
    assert vol.dtype == np.int16 and vol.shape == CFG.shape and axcodes(aff) == "SAL"
    np.testing.assert_allclose(marker_centroid(vol), expected_marker_dhw(), atol=1.0)


def test_orientations_agree_voxelwise(tmp_path):
    vols = []
    for name, geom in [("a", axial_geometry()), ("f", axial_geometry(feet_first=True)), ("s", sagittal_geometry())]:
        vols.append(canonicalize(read_dicom_series(write_series(tmp_path / name, *geom), CFG), CFG)[0])
    # head-first and feet-first sample the same grid points: identical after reorientation
    np.testing.assert_array_equal(vols[0], vols[1])
    # sagittal covers another box: compare where both cover the object, away from the edges
    inner = (slice(4, -4), slice(4, -4), slice(4, -4))
    # (partial-volume differences at the sharp phantom edges and at the sagittal FOV edge x=+-150)
    assert np.mean(np.abs(vols[0][inner].astype(int) - vols[2][inner]) > 100) < 0.03


def test_slice_order_ignores_instance_number_and_names(tmp_path):
    iop, ipps, ps = axial_geometry()
    a = read_dicom_series(write_series(tmp_path / "a", iop, ipps, ps, seed=1), CFG)
    b = read_dicom_series(write_series(tmp_path / "b", iop, ipps[::-1], ps, seed=2), CFG)  # reversed instance numbers
    np.testing.assert_array_equal(a.hu_IJK, b.hu_IJK)
    np.testing.assert_allclose(a.affine_ras, b.affine_ras)


def test_rescale_slope_intercept_applied(tmp_path):
    iop, ipps, ps = axial_geometry()
    a = read_dicom_series(write_series(tmp_path / "a", iop, ipps, ps), CFG)
    b = read_dicom_series(write_series(tmp_path / "b", iop, ipps, ps, slope=0.5, intercept=-2048.0), CFG)
    np.testing.assert_allclose(a.hu_IJK, b.hu_IJK, atol=0.5)
    assert a.hu_IJK.min() == -1000.0 and a.hu_IJK.max() == 1000.0


def _reject(tmp_path, **kw):
    iop, ipps, ps = kw.pop("geometry", axial_geometry())
    ipps = kw.pop("edit", lambda p: p)(list(ipps))
    folder = write_series(tmp_path / "s", iop, ipps, ps, **kw)
    with pytest.raises(ScanReadError) as info:
        read_dicom_series(folder, CFG)
    assert str(folder) in info.value.detail  # the message names the series, and no header value
    return info.value.reason


def test_missing_slice(tmp_path):
    assert _reject(tmp_path, edit=lambda p: p[:20] + p[21:]) == "missing_slice"


def test_duplicate_slice(tmp_path):
    assert _reject(tmp_path, edit=lambda p: p + [p[10]]) == "duplicate_slice"


def test_mixed_spacing(tmp_path):
    def mixed(p):
        return p[:20] + [q + np.array([0, 0, -2.5]) for q in p[20:]]  # one 2.5 mm gap

    assert _reject(tmp_path, edit=mixed) == "uneven_spacing"


def test_gantry_tilt(tmp_path):
    tilt = np.tan(np.radians(15))
    assert _reject(tmp_path, edit=lambda p: [q + np.array([0, q[2] * tilt, 0]) for q in p]) == "gantry_tilt"


def test_too_few_slices(tmp_path):
    assert _reject(tmp_path, edit=lambda p: p[:5]) == "too_few_slices"


def test_localizer(tmp_path):
    assert _reject(tmp_path, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER")) == "localizer"


def test_not_ct(tmp_path):
    assert _reject(tmp_path, modality="MR") == "not_ct"


def test_mixed_orientation(tmp_path):
    iop, ipps, ps = axial_geometry()
    iops = [iop] * len(ipps)
    iops[7] = [1, 0, 0, 0, 0.8, -0.6]
    assert _reject(tmp_path, iops=iops) == "mixed_orientation"


def test_multiple_series_and_localizer_beside(tmp_path):
    iop, ipps, ps = axial_geometry()
    folder = write_series(tmp_path / "s", iop, ipps, ps)
    scout = ("ORIGINAL", "PRIMARY", "LOCALIZER")
    write_series(folder / "scout", iop, ipps[:3], ps, image_type=scout, series_uid="9.9")
    raw = read_dicom_series(folder, CFG)  # the localizer series is set aside
    assert raw.hu_IJK.shape[0] == len(ipps)
    write_series(folder / "other", iop, ipps, ps, series_uid="7.7")
    with pytest.raises(ScanReadError, match="multiple_series"):
        read_dicom_series(folder, CFG)


def test_scan_paths(tmp_path):
    with pytest.raises(ScanReadError, match="file_not_found"):
        read_scan(tmp_path / "nope.nii.gz", "CT", CFG)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScanReadError, match="no_dicom_files"):
        read_scan(tmp_path / "empty", "CT", CFG)
    (tmp_path / "x.png").write_bytes(b"png")
    with pytest.raises(ScanReadError, match="unsupported_path"):
        read_scan(tmp_path / "x.png", "CT", CFG)


def test_deid_whitelist_keeps_three_sanitised_fields_only():
    from pydicom.dataset import Dataset

    from tte_scale.imaging import SCANNER_WHITELIST, scanner_fields

    ds = Dataset()
    ds.PatientName = "ZZPHI^NAME"
    ds.Manufacturer = "ACME\u00c4 <b>{scanner}</b> " + "x" * 40  # markup, non-ASCII and length stripped
    ds.KVP = "120"
    ds.SliceThickness = "1e9"  # absurd value: dropped, not passed on
    out = scanner_fields(ds)
    assert set(out) == set(SCANNER_WHITELIST) == {"manufacturer", "kvp", "slice_thickness_mm"}
    assert out["kvp"] == 120.0 and out["slice_thickness_mm"] is None
    assert out["manufacturer"].startswith("ACME bscanner") and len(out["manufacturer"]) <= 32
    assert all(c.isalnum() or c in " ._-" for c in out["manufacturer"])
    assert scanner_fields(Dataset()) == {"manufacturer": None, "kvp": None, "slice_thickness_mm": None}
