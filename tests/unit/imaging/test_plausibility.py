"""Plausibility checks of a scan as read (any format): coverage geometry, thresholds, file sniffing."""

from __future__ import annotations

import numpy as np
import pytest
from support.phantoms import axial_geometry, write_series

from tte_scale.imaging import ImagingConfig, RawVolume, ScanReadError, check_scan, covered_fraction, read_dicom_series
from tte_scale.imaging.readers import _is_other_file

CFG = ImagingConfig(spacing_mm=(4.0, 2.0, 2.0), shape=(20, 30, 30))  # 80 x 60 x 60 mm


def raw_box(shape_ijk, spacing, fill=-1000.0) -> RawVolume:
    hu = np.full(shape_ijk, fill, dtype=np.float32)
    return RawVolume(hu_IJK=hu, affine_ras=np.diag([*spacing, 1.0]))


@pytest.mark.parametrize(
    "shape, spacing, want",
    [
        ((30, 30, 20), (2.0, 2.0, 4.0), 1.0),  # exactly the canonical box
        ((60, 60, 40), (2.0, 2.0, 4.0), 1.0),  # larger: cropped, covers it all
        ((30, 30, 10), (2.0, 2.0, 4.0), 0.5),  # half the slices
        ((15, 30, 20), (2.0, 2.0, 4.0), 0.5),  # half the width
        ((15, 15, 10), (2.0, 2.0, 4.0), 0.125),
    ],
)
def test_covered_fraction(shape, spacing, want):
    assert covered_fraction(raw_box(shape, spacing), CFG) == pytest.approx(want, abs=0.05)


def test_covered_fraction_of_a_rotated_scan_is_orientation_free():
    raw = raw_box((20, 30, 30), (4.0, 2.0, 2.0))
    raw.affine_ras = np.array([[0, 0, 2.0, 0], [0, 2.0, 0, 0], [4.0, 0, 0, 0], [0, 0, 0, 1]])  # slices along x
    assert covered_fraction(raw, CFG) == pytest.approx(1.0)


def test_thresholds_name_their_key_and_zero_disables():
    tissue = raw_box((30, 30, 20), (2.0, 2.0, 4.0), fill=40.0)  # no air at all
    with pytest.raises(ScanReadError, match="min_air_fraction") as err:
        check_scan(tissue, CFG)
    assert err.value.reason == "implausible_hu"
    relaxed = ImagingConfig(spacing_mm=(4.0, 2.0, 2.0), shape=(20, 30, 30), min_air_fraction=0)
    assert check_scan(tissue, relaxed)[1] == 0
    nan = raw_box((30, 30, 20), (2.0, 2.0, 4.0))
    nan.hu_IJK[0, 0, 0] = np.inf
    with pytest.raises(ScanReadError, match="1 of 18000 voxels"):
        check_scan(nan, CFG)
    filled, n = check_scan(nan, ImagingConfig(spacing_mm=(4.0, 2.0, 2.0), shape=(20, 30, 30), nonfinite_fill_hu=-1000))
    assert n == 1 and filled.hu_IJK[0, 0, 0] == -1000 and np.isinf(nan.hu_IJK[0, 0, 0])  # input untouched
    with pytest.raises(Exception, match="nonfinite_fill_hu"):
        ImagingConfig(nonfinite_fill_hu=5000)


def test_other_files_are_told_from_damaged_dicom(tmp_path):
    iop, ipps, ps = axial_geometry(n=3, step=5.0, size=8, ps=5.0)
    series = write_series(tmp_path / "s", iop, ipps, ps, size=8, phi=False)
    dcm = sorted(series.iterdir())[0].read_bytes()
    cases = {
        "README.txt": "Exportiert am Montag: Ärztin — 3 Serien\n".encode() * 40,  # multi-byte text past 1 KiB
        "empty": b"",
        "thumb.jpg": b"\xff\xd8\xff\xe0" + bytes(range(256)),
        "cut.dcm": dcm[:300],
        "no_preamble.dcm": dcm[132:],
        "binary.bin": bytes(range(256)) * 8,
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    assert {n: _is_other_file(tmp_path / n) for n in cases} == {
        "README.txt": True,
        "empty": True,
        "thumb.jpg": True,
        "cut.dcm": False,
        "no_preamble.dcm": False,
        "binary.bin": False,
    }


def test_series_with_only_other_files_says_so(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "notes.txt").write_text("nothing here")
    with pytest.raises(ScanReadError, match="none of them DICOM") as err:
        read_dicom_series(folder, CFG)
    assert err.value.reason == "no_dicom_files"
