"""Where a build's inputs lie, and whether they changed since they were read.

A scans table may name images inside its own folder, through ``../``, by absolute paths
elsewhere, or by fsspec URLs (``s3://bucket/...``, passed through untouched). All of them are
accepted (images are often kept apart from the tables), but the run says where they come from
(:func:`input_locations`), and ``--image-root`` refuses any image outside the given folders or
URL prefixes (:func:`check_image_roots`), before any work: a local image is inside a local root
when it resolves there, symlinks followed; a URL is inside a URL root when it lies under that
prefix. A local image is never inside a URL root, nor a URL inside a local folder.

Images in object storage are checked once per bucket before any work
(:func:`check_remote_inputs`): a bucket that does not exist, missing credentials or refused
access stop the run with one line naming the scan and its URL, instead of quarantining every scan.

:func:`input_signature` is what a failed scan's record keeps of its input (size and modification
time; for a DICOM folder, file count, total size and newest time; for an object its size and
ETag, for a prefix the count, total size and a digest of the objects' ETags), so that a re-run
reads the input again once the user has fixed it in place.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from tte_scale.errors import InputError
from tte_scale.remote import StorageConfig, StorageError, bucket_of, is_url, list_objects, object_info
from tte_scale.sharding.plan import PlanItem

__all__ = [
    "input_locations",
    "describe_locations",
    "check_image_roots",
    "check_remote_inputs",
    "input_signature",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _real(item: PlanItem) -> str:
    """The image's local path, symlinks followed, or its URL."""
    file = item.image_file
    return file if is_url(file) else os.path.realpath(file)


def _inside(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or under it (both local, or both URLs)."""
    if is_url(path) != is_url(root):
        return False
    sep = "/" if is_url(root) else os.sep
    root = root.rstrip(sep) or root
    return path.rstrip(sep) == root or path.startswith(root + sep)


def _common_prefix(urls: list[str]) -> str:
    """The longest common ``/``-separated prefix of URLs; a URL that is the prefix itself (a
    single object) is named by its folder."""
    parts = [u.rstrip("/").split("/") for u in urls]
    common = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    if any(len(common) == len(p) for p in parts):
        common = common[:-1]
    if len(common) < 2:
        return "several protocols"
    return "/".join(common) + ("/" if len(common) == 2 else "")  # ["s3:", ""] -> "s3://"


def input_locations(items: Sequence[PlanItem]) -> dict:
    """How many images lie (symlinks followed) under the scans table's folder, how many elsewhere
    and under which common folder, how many in object storage and under which common prefix."""
    if not items:
        return {
            "table_dir": None,
            "scans": 0,
            "inside": 0,
            "outside": 0,
            "outside_under": None,
            "remote": 0,
            "remote_under": None,
        }
    table_dir = os.path.realpath(Path(items[0].scans_table).parent)
    paths = [_real(it) for it in items]
    urls = [p for p in paths if is_url(p)]
    local = [p for p in paths if not is_url(p)]
    outside = [p for p in local if not _inside(p, table_dir)]
    under = None
    if outside:
        under = os.path.commonpath(outside)
        if under in outside:  # a single file: name its folder
            under = os.path.dirname(under)
    return {
        "table_dir": table_dir,
        "scans": len(items),
        "inside": len(local) - len(outside),
        "outside": len(outside),
        "outside_under": under,
        "remote": len(urls),
        "remote_under": _common_prefix(urls) if urls else None,
    }


def describe_locations(loc: dict) -> str:
    """One line for the console (absolute paths: never written into the build's files)."""
    line = f"inputs: {loc['inside']} of {loc['scans']} scan(s) under the scans table's folder {loc['table_dir']}"
    if loc["outside"]:
        line += f"; {loc['outside']} elsewhere, under {loc['outside_under']}"
    if loc.get("remote"):
        line += f"; {loc['remote']} in object storage, under {loc['remote_under']}"
    if loc["outside"] or loc.get("remote"):
        line += " (--image-root DIR|URL refuses images outside the folders or prefixes you name)"
    return line


def check_image_roots(items: Sequence[PlanItem], roots: Sequence[str | Path], table_rows: dict[str, int]) -> None:
    """Raise InputError, naming the first offending row of the scans table and how many there are,
    when an image lies outside every root of ``roots`` (local folders, symlinks followed, or URL
    prefixes). ``table_rows``: scan id -> row of the scans table."""
    real_roots = [str(r) if is_url(r) else os.path.realpath(r) for r in roots]
    bad = sorted(
        (it for it in items if not any(_inside(_real(it), r) for r in real_roots)),
        key=lambda it: table_rows[it.scan_id],
    )
    if bad:
        first = bad[0]
        where = "is" if is_url(_real(first)) else f"resolves to {_real(first)},"
        raise InputError(
            f"scans table {first.scans_table}: row {table_rows[first.scan_id]} (scan_id {first.scan_id!r}): "
            f"image_path {first.image_path!r} {where} outside --image-root "
            f"{', '.join(map(str, roots))} ({len(bad)} of {len(items)} labelled scans are outside)"
        )


def check_remote_inputs(items: Sequence[PlanItem], table_rows: dict[str, int], storage: StorageConfig) -> None:
    """Before any work: the first image (in table order) of each bucket is looked up once. A missing
    bucket, missing credentials, refused access, an unknown protocol or a service that cannot be
    reached raise InputError naming that scan and URL; a missing object is fine here (the scan is
    quarantined as ``file_not_found`` when it is read)."""
    first: dict[str, PlanItem] = {}
    for it in sorted(items, key=lambda it: table_rows[it.scan_id]):
        if is_url(it.image_file):
            first.setdefault(bucket_of(it.image_file), it)
    for bucket, it in first.items():
        url = it.image_file
        try:
            if url.rstrip("/").endswith(NIFTI_SUFFIXES):
                object_info(url, storage)
            else:
                list_objects(url, storage)
        except StorageError as exc:
            if exc.kind == "not_found":
                continue
            n = sum(1 for i in items if is_url(i.image_file) and bucket_of(i.image_file) == bucket)
            raise InputError(
                f"scans table {it.scans_table}: row {table_rows[it.scan_id]} (scan_id {it.scan_id!r}): image_path "
                f"{exc} ({n} labelled scan(s) in {bucket}; nothing was read or written)"
            ) from None


def input_signature(path: Path | str, storage: StorageConfig | None = None) -> list | None:
    """``[size, mtime_ns]`` of a file; ``[files, total size, newest mtime_ns]`` of a folder (a DICOM
    series); for a URL ``[size, etag]`` of an object and ``[objects, total size, digest of names,
    sizes and ETags]`` of a prefix; None when absent or unreachable. Equal signatures: the input is
    taken as unchanged."""
    if is_url(path):
        return _object_signature(str(path).rstrip("/"), storage or StorageConfig(attempts=2))
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return None
    if not path.is_dir():
        return [st.st_size, st.st_mtime_ns]
    n, size, newest = 0, 0, st.st_mtime_ns
    for p in path.rglob("*"):
        try:
            s = p.stat()
        except OSError:
            continue
        newest = max(newest, s.st_mtime_ns)
        if p.is_file():
            n, size = n + 1, size + s.st_size
    return [n, size, newest]


def _object_signature(url: str, storage: StorageConfig) -> list | None:
    try:
        if not url.endswith(NIFTI_SUFFIXES) and (objects := list_objects(url, storage)):
            h = hashlib.sha256()
            for rel in sorted(objects):
                h.update(f"{rel}\0{objects[rel]['size']}\0{objects[rel]['etag']}\n".encode())
            return [len(objects), sum(o["size"] for o in objects.values()), h.hexdigest()[:16]]
        info = object_info(url, storage)  # a NIfTI object, or an object where a series folder was named
    except StorageError:
        return None
    return None if info is None else [info["size"], info["etag"]]
