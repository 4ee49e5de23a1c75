"""A scan in object storage, brought whole into a local temporary folder for the local readers.

``image_path`` may be an fsspec URL (``s3://bucket/ct/s1.nii.gz``). Nothing seeks into a remote
object: a NIfTI file (``.nii``/``.nii.gz``) is one object downloaded whole; any other URL is a DICOM
series folder, i.e. a prefix: it is listed and every object under it downloaded whole, at most
``StorageConfig.concurrency`` at a time. The files then go through exactly the readers of local
files, so a scan read from a bucket gives the same volume, and the same reason codes, as the same
file on disk. The temporary folder (under ``TMPDIR``) is removed when the scan has been read.

Failures raise :class:`ScanReadError` naming the URL: an object or prefix that does not exist is
``file_not_found``, an object that cannot be read (access denied, errors that persisted through
the retries) ``remote_read_failed``. A bucket that does not exist or missing credentials are
refused before the build starts (``sharding.inputs.check_remote_inputs``), not per scan.
"""

from __future__ import annotations

import contextlib
import posixpath
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tte_scale.imaging.volume import ScanReadError
from tte_scale.remote import StorageConfig, StorageError, download, list_objects, object_info

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _scan_error(exc: StorageError, url: str) -> ScanReadError:
    if exc.kind == "not_found":
        return ScanReadError("file_not_found", url)
    return ScanReadError("remote_read_failed", f"{url}: {exc.kind}: {exc.detail}")


def _safe_relative(rel: str) -> bool:
    """An object name under the prefix that stays inside the local folder once written there."""
    parts = rel.split("/")
    return not rel.startswith("/") and ".." not in parts and all(parts) and posixpath.normpath(rel) == rel


@contextlib.contextmanager
def fetched(url: str, storage: StorageConfig) -> Iterator[Path]:
    """A local copy of the scan at ``url``: the NIfTI file, or the folder of the series' files."""
    url = url.rstrip("/")
    with tempfile.TemporaryDirectory(prefix="tte_scale_scan_") as tmp:
        if url.endswith(NIFTI_SUFFIXES):
            dest = Path(tmp) / posixpath.basename(url)
            try:
                download(url, dest, storage)
            except StorageError as exc:
                raise _scan_error(exc, url) from None
            yield dest
            return
        folder = Path(tmp) / "series"
        try:
            objects = list_objects(url, storage)
            if not objects:
                # not a prefix: an object of another type, or nothing at all
                raise ScanReadError("unsupported_path" if object_info(url, storage) else "file_not_found", url)
        except StorageError as exc:
            raise _scan_error(exc, url) from None
        unsafe = sorted(rel for rel in objects if not _safe_relative(rel))
        if unsafe:
            raise ScanReadError("unsupported_path", f"{url}: {len(unsafe)} object name(s) with empty or '..' parts")

        def get(rel: str) -> None:
            download(f"{url}/{rel}", folder / rel, storage)

        with ThreadPoolExecutor(max_workers=min(storage.concurrency, len(objects))) as pool:
            try:
                for _ in pool.map(get, sorted(objects)):
                    pass
            except StorageError as exc:
                # an object listed a moment ago and gone now is a series that changed under us
                raise _scan_error(exc, exc.url) from None
        yield folder


def as_url(detail: str, local: Path, url: str) -> str:
    """A reader's ``detail`` naming the local copy ``local`` (or a file under it) by ``url``."""
    url = url.rstrip("/")
    opened = str(local)
    if detail == opened:
        return url
    if detail.startswith(opened + ":") or detail.startswith(opened + "/"):
        return url + detail[len(opened) :]
    return detail
