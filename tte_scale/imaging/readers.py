"""Read one scan (a NIfTI file or a folder holding one DICOM series) into a :class:`RawVolume`.

Every failure becomes a :class:`ScanReadError` with a reason code; messages name the file
(the user's own path) and the reason, never a header value. pydicom's own warnings can quote
header values (``Invalid value for VR IS: '...'``), so they are silenced while reading.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from pathlib import Path

import numpy as np

from tte_scale.imaging.config import ImagingConfig
from tte_scale.imaging.deid import scanner_fields
from tte_scale.imaging.geometry import SliceTolerances, check_affine, series_geometry
from tte_scale.imaging.volume import RawVolume, ScanReadError
from tte_scale.remote import StorageConfig, is_url, local_path

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def tolerances(cfg: ImagingConfig) -> SliceTolerances:
    return SliceTolerances(
        gap_rel=cfg.gap_rel_tolerance,
        gap_abs_mm=cfg.gap_abs_tolerance_mm,
        max_tilt_deg=cfg.max_tilt_deg,
        min_slices=cfg.min_slices,
    )


def resolve_image_path(image_path: str | Path, scans_table: str | Path) -> Path | str:
    """Where an ``image_path`` of a scans table points: a relative path is relative to the
    table's folder (so a cohort folder can be moved or copied whole); an absolute one is kept;
    an fsspec URL (``s3://...``) is returned untouched, as a string (``file://`` is a local path)."""
    if is_url(image_path):
        return str(image_path)
    p = Path(local_path(image_path))
    return p if p.is_absolute() else Path(scans_table).resolve().parent / p


def read_scan(
    path: str | Path, modality: str | None, cfg: ImagingConfig, storage: StorageConfig | None = None
) -> RawVolume:
    """Read a scan; ``modality`` is the scans table's column (checked for NIfTI files).

    ``path`` may be a URL: the scan is then downloaded whole into a temporary folder first
    (:mod:`tte_scale.imaging.fetch`, with ``storage``'s retries and concurrency) and read as a local
    file; error details name the URL."""
    if is_url(path):
        from tte_scale.imaging.fetch import as_url, fetched

        with fetched(str(path), storage or StorageConfig()) as local:
            try:
                return read_scan(local, modality, cfg)
            except ScanReadError as exc:
                raise ScanReadError(exc.reason, as_url(exc.detail, local, str(path))) from None
    path = Path(path)
    if not path.exists():
        raise ScanReadError("file_not_found", str(path))
    if path.is_dir():
        return read_dicom_series(path, cfg)
    if path.name.endswith(NIFTI_SUFFIXES):
        if cfg.require_ct and modality is not None and str(modality).upper() != "CT":
            raise ScanReadError("not_ct", f"{path}: scans table modality is not CT")
        return read_nifti(path)
    raise ScanReadError("unsupported_path", str(path))


def read_nifti(path: Path) -> RawVolume:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = _nifti_values(img.dataobj)
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:
        raise ScanReadError("unreadable_file", f"{path}: {type(exc).__name__}") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3 or min(data.shape) < 2:
        raise ScanReadError("not_3d", f"{path}: array of shape {tuple(data.shape)}")
    check_affine(affine)
    # NIfTI headers carry free text (descrip, aux_file, intent_name): none of it is kept.
    # nibabel's array is Fortran-ordered; it is kept so (canonicalize samples its transpose): a
    # C-ordered copy of a 512 x 512 x 250 scan cost 1 CPU-second, more than the resampling.
    return RawVolume(hu_IJK=data, affine_ras=affine, scanner={})


def _nifti_values(proxy) -> np.ndarray:
    """The voxel values of a NIfTI array proxy: as stored when the file holds integers with no
    scaling (slope 1, intercept 0, or unset), else float32 with scl_slope / scl_inter applied.

    Integers as stored are the same numbers as their float32 (|v| < 2**24), in half the memory
    for int16 CT, and need no NaN check."""
    slope, inter = getattr(proxy, "slope", 1.0), getattr(proxy, "inter", 0.0)
    if (
        np.dtype(proxy.dtype).kind in "iu"
        and np.dtype(proxy.dtype).itemsize <= 2
        and slope in (1.0, None)
        and inter in (0.0, None)
        and hasattr(proxy, "get_unscaled")
    ):
        return np.asanyarray(proxy.get_unscaled())
    return np.asarray(proxy, dtype=np.float32)  # applies scl_slope / scl_inter


@contextlib.contextmanager
def _quiet_pydicom():
    """Silence pydicom warnings/log records while reading: they may quote header values."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _is_localizer(ds) -> bool:
    image_type = [str(v).strip().upper() for v in (ds.get("ImageType") or [])]
    return "LOCALIZER" in image_type or "SCOUT" in image_type


# Signatures of files that share a folder with DICOM slices but are not DICOM (viewers and PACS
# exports put thumbnails, reports and archives there).
_OTHER_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"%PDF", b"PK\x03\x04", b"BM")


def _is_other_file(path: Path) -> bool:
    """Whether a file pydicom refused is plainly not DICOM (text, an image, a PDF, empty), rather
    than a damaged DICOM file.

    DICOM files carry "DICM" after a 128-byte preamble; files written without the preamble start
    with a binary data element, whose 16-bit group number holds a zero byte. A README has neither:
    its first KiB is text. Anything else stays an unreadable DICOM file.
    """
    with open(path, "rb") as fh:
        head = fh.read(1024)
    if head[128:132] == b"DICM":
        return False
    if not head or head.startswith(_OTHER_MAGIC):
        return True
    text = head.decode("utf-8", errors="replace")
    if len(head) == 1024 and text.endswith("\ufffd"):  # a multi-byte character cut at the end of the KiB
        text = text.rstrip("\ufffd")
    return "\ufffd" not in text and all(c.isprintable() or c in "\r\n\t\f" for c in text)


def read_dicom_series(folder: Path, cfg: ImagingConfig) -> RawVolume:
    """Read the one CT series in ``folder`` (files grouped by SeriesInstanceUID).

    Files that are not DICOM at all are skipped and listed in ``RawVolume.ignored_files``; a
    DICOM file that cannot be parsed rejects the series (`unreadable_file`).
    """
    import pydicom

    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ScanReadError("no_dicom_files", str(folder))
    with _quiet_pydicom():
        series: dict[str, list] = {}
        ignored = []
        for f in files:
            try:
                ds = pydicom.dcmread(f)
            except Exception as exc:
                if _is_other_file(f):
                    ignored.append(f.relative_to(folder).as_posix())
                    continue
                raise ScanReadError("unreadable_file", f"{f}: {type(exc).__name__}") from None
            uid = str(ds.get("SeriesInstanceUID", "") or "")
            series.setdefault(uid, []).append((f, ds))
        if not series:
            raise ScanReadError("no_dicom_files", f"{folder}: {len(ignored)} file(s), none of them DICOM")
        kept = {uid: s for uid, s in series.items() if not _is_localizer(s[0][1])}
        if not kept:
            raise ScanReadError("localizer", f"{folder}: only localizer images")
        if len(kept) > 1:
            raise ScanReadError("multiple_series", f"{folder}: {len(kept)} series")
        slices = next(iter(kept.values()))
        raw = _series_volume(folder, slices, cfg)
    raw.ignored_files = ignored
    return raw


def _rescale(ds, keyword: str, default: float) -> float:
    """RescaleSlope / RescaleIntercept: the default when absent or empty, else a finite number."""
    raw = ds.get(keyword, None)
    if raw is None or raw == "":
        return default
    value = float(raw)
    if not math.isfinite(value) or (keyword == "RescaleSlope" and value == 0):
        raise ValueError(keyword)
    return value


def _series_volume(folder: Path, slices: list, cfg: ImagingConfig) -> RawVolume:
    first = slices[0][1]
    if cfg.require_ct and any(str(ds.get("Modality", "")).upper() != "CT" for _, ds in slices):
        raise ScanReadError("not_ct", f"{folder}: modality is not CT")
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for _, ds in slices):
        raise ScanReadError("multiframe_unsupported", str(folder))
    try:
        iop = np.array([[float(v) for v in ds.ImageOrientationPatient] for _, ds in slices])
        ipp = np.array([[float(v) for v in ds.ImagePositionPatient] for _, ds in slices])
        spacing = {tuple(round(float(v), 4) for v in ds.PixelSpacing) for _, ds in slices}
        dims = {(int(ds.Rows), int(ds.Columns)) for _, ds in slices}
    except Exception as exc:
        raise ScanReadError("missing_geometry", f"{folder}: {type(exc).__name__}") from None
    if iop.shape[1:] != (6,) or ipp.shape[1:] != (3,):
        raise ScanReadError("missing_geometry", f"{folder}: malformed position/orientation")
    if len(spacing) != 1 or len(dims) != 1:
        raise ScanReadError("inconsistent_slices", f"{folder}: {len(dims)} image sizes, {len(spacing)} pixel spacings")
    try:
        thickness = scanner_fields(first)["slice_thickness_mm"] or 1.0
        geom = series_geometry(iop, ipp, next(iter(spacing)), tolerances(cfg), single_slice_mm=thickness)
    except ScanReadError as exc:
        raise ScanReadError(exc.reason, f"{folder}: {exc.detail}") from None

    rows, cols = next(iter(dims))
    hu_IJK = np.empty((len(slices), rows, cols), dtype=np.float32)
    for out_i, src_i in enumerate(geom.order):
        f, ds = slices[src_i]
        try:
            pixels = ds.pixel_array
        except Exception as exc:
            raise ScanReadError("pixel_decode_failed", f"{f}: {type(exc).__name__}") from None
        if pixels.shape != (rows, cols):
            raise ScanReadError("pixel_decode_failed", f"{f}: pixel array of shape {pixels.shape}")
        try:
            slope = _rescale(ds, "RescaleSlope", 1.0)
            intercept = _rescale(ds, "RescaleIntercept", 0.0)
        except (TypeError, ValueError):
            # NaN, inf or a zero slope would silently turn every voxel into one value
            raise ScanReadError("bad_rescale", f"{f}: RescaleSlope/RescaleIntercept not a usable number") from None
        # per slice: scanners may store a different slope/intercept in every file
        hu_IJK[out_i] = pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    check_affine(geom.affine_ras)
    return RawVolume(hu_IJK=hu_IJK, affine_ras=geom.affine_ras, scanner=scanner_fields(first))
