"""Image writers: NIfTI (.nii.gz, int16 HU) and DICOM CT series (one file per slice, fake PHI).

A DICOM slice k of ``vol_IJK`` is the 2-D pixel array ``vol_IJK[:, :, k].T`` ([Rows, Columns]:
column index = i, row index = j), so the DICOM row direction is voxel axis i and the column
direction is axis j, both expressed in LPS; ImagePositionPatient is the LPS centre of voxel
(0, 0, k). Files are written in a shuffled order with InstanceNumber = k + 1, so readers must
sort slices by position, as with real series.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import numpy as np

from tte_scale.synth.geometry import LPS_FROM_RAS, Geometry

__all__ = ["write_nifti", "write_dicom_series", "PRIVATE_CREATOR", "fake_identity"]

PRIVATE_CREATOR = "TTE_SCALE_SYNTH"
_FIRST = ["Ada", "Ben", "Chloe", "Dmitri", "Eva", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Luca"]
_LAST = ["Alvarez", "Brown", "Chen", "Dubois", "Evans", "Fischer", "Garcia", "Hansen", "Ito", "Jensen"]
_SCANNERS = [
    ("SIEMENS", "SOMATOM Force"),
    ("GE MEDICAL SYSTEMS", "Revolution CT"),
    ("Philips", "IQon Spectral CT"),
    ("TOSHIBA", "Aquilion ONE"),
]


def write_nifti(path: Path, vol_IJK: np.ndarray, geom: Geometry) -> None:
    """int16 NIfTI-1 with the scanner affine as both sform and qform (code 1, scanner-based)."""
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(vol_IJK, np.int16), geom.affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_sform(geom.affine, code=1)
    img.set_qform(geom.affine, code=1)
    img.header["descrip"] = b"tte_scale synthetic chest CT"
    tmp = path.with_name(path.name + ".tmp.nii.gz")
    nib.save(img, tmp)
    os.replace(tmp, path)


def fake_identity(rng: np.random.Generator, subject_id: int, birth: datetime.date) -> dict[str, str]:
    """Fake identifying values for one subject (what de-identification must remove)."""
    name = f"{_LAST[rng.integers(len(_LAST))]}^{_FIRST[rng.integers(len(_FIRST))]}"
    return {
        "PatientName": name,
        "PatientID": f"MRN{subject_id:08d}",
        "PatientBirthDate": birth.strftime("%Y%m%d"),
        "OtherID": f"ALT{rng.integers(10**7, 10**8)}",
        "Address": f"{rng.integers(1, 999)} Synthetic Street",
    }


def _uid(*parts) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(p) for p in parts])


def write_dicom_series(
    folder: Path,
    vol_IJK: np.ndarray,
    geom: Geometry,
    *,
    scan_id: str,
    subject_id: int,
    when: datetime.datetime,
    identity: dict[str, str],
    sex: str,
    seed: int,
    rng: np.random.Generator,
) -> int:
    """Write one CT series into ``folder`` (created); returns the number of files."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    folder.mkdir(parents=True, exist_ok=True)
    lps = LPS_FROM_RAS @ geom.affine
    si, sj, _ = geom.spacing
    row_cos, col_cos = lps[:3, 0] / si, lps[:3, 1] / sj
    maker, model = _SCANNERS[rng.integers(len(_SCANNERS))]
    # Half the scanners store unsigned values with intercept -1024, half signed with 0.
    unsigned = bool(rng.random() < 0.5)
    intercept = -1024 if unsigned else 0
    study_uid, series_uid, frame_uid = (_uid(seed, scan_id, k) for k in ("study", "series", "frame"))
    date, tod = when.strftime("%Y%m%d"), when.strftime("%H%M%S")

    base = Dataset()
    base.PatientName = identity["PatientName"]
    base.PatientID = identity["PatientID"]
    base.PatientBirthDate = identity["PatientBirthDate"]
    base.PatientSex = sex
    base.PatientAddress = identity["Address"]
    other = Dataset()
    other.PatientID = identity["OtherID"]
    other.IssuerOfPatientID = "SYNTHETIC HOSPITAL"
    base.OtherPatientIDsSequence = Sequence([other])  # nested PHI
    base.InstitutionName = "Synthetic General Hospital"
    base.ReferringPhysicianName = "Doe^Jane"
    base.AccessionNumber = f"ACC{subject_id:07d}{scan_id[-1]}"
    base.StudyDate = base.SeriesDate = base.AcquisitionDate = base.ContentDate = date
    base.StudyTime = base.SeriesTime = base.AcquisitionTime = base.ContentTime = tod
    base.StudyInstanceUID, base.SeriesInstanceUID, base.FrameOfReferenceUID = study_uid, series_uid, frame_uid
    base.StudyID, base.SeriesNumber = "1", 2
    base.SOPClassUID = CTImageStorage
    base.Modality = "CT"
    base.Manufacturer, base.ManufacturerModelName = maker, model
    base.StudyDescription, base.SeriesDescription = "CT ANGIO CHEST PE PROTOCOL", "CTA 1.0 mm" if si < 1 else "CTA"
    base.BodyPartExamined = "CHEST"
    base.PatientPosition = "FFS" if geom.feet_first and rng.random() < 0.5 else "HFS"
    base.KVP = int(rng.choice([100, 120]))
    base.SliceThickness = round(geom.slice_thickness, 4)
    base.SpacingBetweenSlices = round(geom.slice_thickness, 4)
    base.PixelSpacing = [round(sj, 6), round(si, 6)]  # [between rows, between columns]
    base.ImageOrientationPatient = [round(float(v), 6) for v in (*row_cos, *col_cos)]
    base.Rows, base.Columns = geom.shape[1], geom.shape[0]
    base.SamplesPerPixel, base.PhotometricInterpretation = 1, "MONOCHROME2"
    base.BitsAllocated, base.BitsStored, base.HighBit = 16, 16, 15
    base.PixelRepresentation = 0 if unsigned else 1
    base.RescaleIntercept, base.RescaleSlope, base.RescaleType = intercept, 1, "HU"
    base.WindowCenter, base.WindowWidth = 40, 400
    base.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    block = base.private_block(0x0011, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", identity["PatientName"].replace("^", " "))  # private PHI
    block.add_new(0x02, "LO", f"subject {subject_id}")

    n = geom.shape[2]
    # File names carry no slice order (as in many PACS exports): readers must sort by position.
    for name_idx, k in enumerate(rng.permutation(n)):
        ds = Dataset()
        ds.update(base)
        ds.SOPInstanceUID = _uid(seed, scan_id, "sop", int(k))
        ds.InstanceNumber = int(k) + 1
        pos = lps[:3, :3] @ np.array([0.0, 0.0, float(k)]) + lps[:3, 3]
        ds.ImagePositionPatient = [round(float(v), 4) for v in pos]
        ds.SliceLocation = round(float(pos[2]), 4)
        stored = vol_IJK[:, :, k].T.astype(np.int32) - intercept
        ds.PixelData = stored.astype(np.uint16 if unsigned else np.int16).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.save_as(folder / f"IM{name_idx + 1:05d}.dcm", enforce_file_format=True)
    return n
