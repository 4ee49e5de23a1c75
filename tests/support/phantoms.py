"""Test utility: CT phantoms defined in patient space, written as DICOM series or NIfTI.

The phantom is an analytic function of LPS millimetres (body ellipse, a bright marker at the
patient's left-anterior-superior), so any acquisition geometry (axial, feet-first, sagittal,
tilted, missing slices ...) samples the same object and the canonical volumes can be compared.
DICOM files carry fake PHI everywhere a header can hold it (standard, private, nested).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

FAKE_PHI = (
    "ZZPHIPATIENTNAME",
    "ZZPHI-MRN-0042",
    "ZZPHIDOCTOR",
    "ZZPHI-ACCESSION",
    "ZZPHIPRIVATE",
    "ZZPHINESTED",
    "ZZPHIINSTITUTION",
    "19010203",
)
MARKER_LPS = np.array([60.0, -40.0, 30.0])  # patient's left, anterior, superior


def hu_at(x, y, z):
    """HU of the phantom at LPS mm (x to the left, y to posterior, z to the head)."""
    body = (x / 150.0) ** 2 + (y / 110.0) ** 2 < 1.0
    body &= np.abs(z) < 110.0
    marker = (x - MARKER_LPS[0]) ** 2 + (y - MARKER_LPS[1]) ** 2 + (z - MARKER_LPS[2]) ** 2 < 20.0**2
    out = np.where(body, 40.0, -1000.0)
    return np.where(marker, 1000.0, out)


def axial_geometry(n=41, step=5.0, size=64, ps=5.0, feet_first=False):
    """(iop, [ipp per slice], pixel spacing) of an axial series centred on the origin."""
    half = (size - 1) / 2 * ps
    zs = (np.arange(n) - (n - 1) / 2) * step
    if feet_first:  # feet-first supine: rows run to the patient's right
        return [-1, 0, 0, 0, 1, 0], [np.array([half, -half, z]) for z in zs[::-1]], (ps, ps)
    return [1, 0, 0, 0, 1, 0], [np.array([-half, -half, z]) for z in zs], (ps, ps)


def sagittal_geometry(n=61, step=5.0, size=64, ps=5.0):
    """Sagittal: rows run posterior, columns run to the feet, slices step to the left."""
    half = (size - 1) / 2 * ps
    xs = (np.arange(n) - (n - 1) / 2) * step
    return [0, 1, 0, 0, 0, -1], [np.array([x, -half, half]) for x in xs], (ps, ps)


def sample_slice(iop, ipp, ps, rows, cols):
    row_dir, col_dir = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    r = np.arange(rows)[:, None, None] * ps[0] * col_dir
    c = np.arange(cols)[None, :, None] * ps[1] * row_dir
    p = np.asarray(ipp, float) + r + c
    return hu_at(p[..., 0], p[..., 1], p[..., 2])


def _dataset(iop, ipp, ps, rows, cols, series_uid, instance, modality, image_type, slope, intercept, phi):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = "1.2.3.4"
    ds.ImageType = image_type
    ds.InstanceNumber = instance
    ds.Manufacturer = "ACME"
    ds.KVP = 120
    ds.SliceThickness = 5.0
    if phi:
        ds.PatientName = FAKE_PHI[0]
        ds.PatientID = FAKE_PHI[1]
        ds.ReferringPhysicianName = FAKE_PHI[2]
        ds.AccessionNumber = FAKE_PHI[3]
        ds.InstitutionName = FAKE_PHI[6]
        ds.PatientBirthDate = FAKE_PHI[7]
        ds.StudyDescription = FAKE_PHI[0] + " CHEST"
        block = ds.private_block(0x0011, "ZZ VENDOR", create=True)
        block.add_new(0x01, "LO", FAKE_PHI[4])
        item = Dataset()
        item.PatientName = FAKE_PHI[5]
        item.PatientID = FAKE_PHI[1]
        ds.RequestAttributesSequence = Sequence([item])
    ds.ImageOrientationPatient = [float(v) for v in iop]
    ds.ImagePositionPatient = [float(v) for v in ipp]
    ds.PixelSpacing = [float(ps[0]), float(ps[1])]
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    hu = sample_slice(iop, ipp, ps, rows, cols)
    stored = np.round((hu - intercept) / slope).astype(np.int16)
    ds.PixelData = stored.tobytes()
    return ds


def write_series(
    folder,
    iop,
    ipps,
    ps,
    *,
    size=64,
    modality="CT",
    image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
    shuffle_names=True,
    phi=True,
    iops=None,
    slope=1.0,
    intercept=-1024.0,
    seed=0,
    series_uid="1.2.3.4.5",
):
    """Write one DICOM file per slice; names are shuffled so that order cannot come from them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(range(len(ipps)))
    if shuffle_names:
        random.Random(seed).shuffle(names)
    for i, ipp in enumerate(ipps):
        ds = _dataset(
            iops[i] if iops else iop,
            ipp,
            ps,
            size,
            size,
            series_uid,
            i + 1,
            modality,
            list(image_type),
            slope,
            intercept,
            phi,
        )
        ds.save_as(folder / f"IM{names[i]:04d}.dcm", enforce_file_format=True)
    return folder


def write_nifti(path, affine_ras, shape):
    """NIfTI of the phantom sampled on the voxel grid of ``affine_ras`` (RAS+)."""
    import nibabel as nib

    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    ras = idx @ affine_ras[:3, :3].T + affine_ras[:3, 3]
    hu = hu_at(-ras[:, 0], -ras[:, 1], ras[:, 2]).reshape(shape).astype(np.int16)
    nib.save(nib.Nifti1Image(hu, affine_ras), str(path))
    return path
