"""Phantom rendering, affines (NIfTI via nibabel) and DICOM series (via pydicom)."""

from __future__ import annotations

import datetime

import nibabel as nib
import numpy as np
import pydicom
import pytest

from tte_scale.synth.config import PROFILES
from tte_scale.synth.geometry import make_geometry, sample_geometry
from tte_scale.synth.model import FACTORS
from tte_scale.synth.phantom import HU_MAX, HU_MIN, render_phantom, render_sphere, sample_patient
from tte_scale.synth.writers import PRIVATE_CREATOR, fake_identity, write_dicom_series, write_nifti

# (axis_world, axis_sign): nominal LPS storage, feet-first, both in-plane axes flipped, transposed.
GRIDS = {
    "nominal": ((0, 1, 2), (-1, -1, 1)),
    "feet_first": ((0, 1, 2), (-1, -1, -1)),
    "flipped": ((0, 1, 2), (1, 1, 1)),
    "transposed_ff": ((1, 0, 2), (1, -1, -1)),
}


def _grid(name, shape=(40, 36, 30), spacing=(3.0, 3.0, 4.0)):
    aw, sg = GRIDS[name]
    return make_geometry(
        shape=shape, spacing=spacing, center_ras=np.array([5.0, -7.0, 12.0]), axis_world=aw, axis_sign=sg
    )


def _world_centroid(img: nib.Nifti1Image, threshold: float) -> np.ndarray:
    data = np.asarray(img.dataobj)
    ijk = np.argwhere(data > threshold).mean(axis=0)
    return nib.affines.apply_affine(img.affine, ijk)


@pytest.mark.parametrize("name", list(GRIDS))
def test_sphere_is_found_at_its_world_coordinate_after_nibabel_load(tmp_path, name):
    geom = _grid(name)
    center = np.array([20.0, -25.0, 30.0])  # RAS mm: right, posterior, superior of the grid centre
    vol = render_sphere(geom, center, radius=12.0).astype(np.int16)
    write_nifti(tmp_path / "s.nii.gz", vol, geom)
    img = nib.load(tmp_path / "s.nii.gz")
    assert img.get_data_dtype() == np.int16 and img.shape == geom.shape
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    np.testing.assert_allclose(img.affine, geom.affine, atol=1e-4)
    np.testing.assert_allclose(_world_centroid(img, 0), center, atol=0.5)
    # Independently of our affine: nibabel's canonical (RAS) reorientation agrees.
    canon = nib.as_closest_canonical(img)
    np.testing.assert_allclose(_world_centroid(canon, 0), center, atol=0.5)
    assert "".join(nib.aff2axcodes(img.affine)) == geom.orientation()


@pytest.mark.parametrize("name", ["feet_first", "transposed_ff"])
def test_dicom_series_reassembles_to_the_same_volume_and_geometry(tmp_path, name):
    geom = _grid(name, shape=(24, 20, 12))
    rng = np.random.default_rng(0)
    vol = rng.integers(-1024, 2000, size=geom.shape).astype(np.int16)
    ident = fake_identity(rng, 100007, datetime.date(1950, 3, 4))
    n = write_dicom_series(
        tmp_path / "series",
        vol,
        geom,
        scan_id="scan-000007-1",
        subject_id=100007,
        when=datetime.datetime(2015, 6, 1, 13, 5),
        identity=ident,
        sex="F",
        seed=0,
        rng=rng,
    )
    files = sorted((tmp_path / "series").glob("*.dcm"))
    assert n == len(files) == geom.shape[2]
    slices = [pydicom.dcmread(f) for f in files]
    iop = np.array(slices[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    slices.sort(key=lambda d: float(np.dot(normal, np.array(d.ImagePositionPatient, float))))
    hu = np.stack(
        [d.pixel_array.astype(np.int32) * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in slices], axis=-1
    )  # [Rows, Columns, slices]
    dz = np.dot(normal, np.subtract(slices[1].ImagePositionPatient, slices[0].ImagePositionPatient))
    row_sp, col_sp = (float(v) for v in slices[0].PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2] = iop[:3] * col_sp, iop[3:] * row_sp, normal * dz
    lps[:3, 3] = slices[0].ImagePositionPatient
    affine_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    vol_ras = hu.transpose(1, 0, 2)  # -> [columns (i), rows (j), slices]
    # The reassembled series describes the same voxels at the same world positions.
    probe = np.array([[3, 5, 2], [20, 1, 10], [0, 19, 11]])
    for ijk in probe:
        world = nib.affines.apply_affine(geom.affine, ijk)
        ijk2 = np.rint(nib.affines.apply_affine(np.linalg.inv(affine_ras), world)).astype(int)
        assert vol_ras[tuple(ijk2)] == vol[tuple(ijk)]
    assert np.abs(dz) == pytest.approx(geom.slice_thickness)
    d = slices[0]
    assert d.Modality == "CT" and d.PatientName == ident["PatientName"] and d.PatientID == ident["PatientID"]
    assert d.PatientBirthDate == "19500304" and len({s.SeriesInstanceUID for s in slices}) == 1
    assert d.OtherPatientIDsSequence[0].PatientID == ident["OtherID"]
    assert d.private_block(0x0011, PRIVATE_CREATOR)[0x01].value.startswith(ident["PatientName"].split("^")[0])


@pytest.fixture(scope="module")
def scans():
    """Same subject and grid, healthy vs each factor at its maximum."""
    geom = sample_geometry(np.random.default_rng(5), PROFILES["compact"])
    pat = sample_patient(np.random.default_rng(6), 1.0, 20.0, 0.0)
    out = {"healthy": render_phantom(geom, pat, np.zeros(len(FACTORS)), np.random.default_rng(7))}
    for i, f in enumerate(FACTORS):
        x = np.zeros(len(FACTORS))
        x[i] = 1.0
        out[f] = render_phantom(geom, pat, x, np.random.default_rng(7))
    return geom, pat, out


def test_phantom_hu_ranges_and_anatomy(scans):
    geom, pat, vols = scans
    v = vols["healthy"]
    assert v.dtype == np.int16 and v.shape == geom.shape
    assert HU_MIN <= v.min() and v.max() <= HU_MAX
    frac = lambda lo, hi: float(((v >= lo) & (v < hi)).mean())  # noqa: E731
    assert frac(-1100, -950) > 0.1, "air around the patient"
    assert frac(-950, -700) > 0.05, "lung parenchyma"
    assert frac(-150, -50) > 0.02, "fat"
    assert frac(500, 2000) > 0.002, "bone"
    # The heart (with contrast) lies on the patient's left: RAS x below the patient's midline.
    img = nib.as_closest_canonical(nib.Nifti1Image(v, geom.affine))
    data = np.asarray(img.dataobj)
    ijk = np.argwhere((data > 150) & (data < 500))
    world = nib.affines.apply_affine(img.affine, ijk)
    heart = world[(world[:, 1] > pat.origin[1]) & (np.abs(world[:, 2] - pat.origin[2] + 45) < 30)]
    assert np.median(heart[:, 0]) < pat.origin[0]


def test_each_factor_changes_large_scale_image_statistics(scans):
    _, _, v = scans
    count = lambda a, lo, hi: int(((a >= lo) & (a < hi)).sum())  # noqa: E731
    h = v["healthy"]
    lung = (h > -940) & (h < -600)  # healthy parenchyma; excludes the air around the body
    assert v["emphysema"][lung].mean() < h[lung].mean() - 60
    assert count(v["effusion"], -20, 60) > count(h, -20, 60) * 1.1
    assert count(v["cardiomegaly"], 0, 500) > count(h, 0, 500) * 1.05
    assert count(v["pa_enlargement"], 250, 500) > count(h, 250, 500) * 1.2
    assert count(v["clot"], 250, 500) < count(h, 250, 500) * 0.9
    assert count(v["calcification"], 750, 1400) > count(h, 750, 1400) + 20
    assert count(v["nodules"], -100, 100) > count(h, -100, 100)
