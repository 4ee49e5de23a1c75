"""Imaging ingest: DICOM/NIfTI readers, slice geometry, canonical volumes, de-identification.

``read_scan`` -> :class:`RawVolume` (or :class:`ScanReadError` with a reason code) ->
``check_scan`` (plausible as CT, any format) -> ``canonicalize`` -> int16 ``[D, H, W]`` in
orientation :data:`CANONICAL_ORIENTATION`.
"""

from tte_scale.imaging.canonical import canonical_affine, canonicalize, covered_fraction
from tte_scale.imaging.config import CANONICAL_ORIENTATION, ImagingConfig
from tte_scale.imaging.deid import SCANNER_WHITELIST, scanner_fields
from tte_scale.imaging.geometry import SliceTolerances, axcodes, series_geometry
from tte_scale.imaging.plausibility import check_scan
from tte_scale.imaging.readers import read_dicom_series, read_nifti, read_scan, resolve_image_path
from tte_scale.imaging.volume import REASONS, RawVolume, ScanReadError

__all__ = [
    "CANONICAL_ORIENTATION",
    "ImagingConfig",
    "REASONS",
    "RawVolume",
    "SCANNER_WHITELIST",
    "ScanReadError",
    "SliceTolerances",
    "axcodes",
    "canonical_affine",
    "canonicalize",
    "check_scan",
    "covered_fraction",
    "read_dicom_series",
    "read_nifti",
    "read_scan",
    "resolve_image_path",
    "scanner_fields",
    "series_geometry",
]
