"""Object storage through fsspec URLs: telling a URL from a local path, whole-object transfers with
bounded retries, and errors that say in one line what is wrong.

A path with a protocol other than ``file`` (``s3://bucket/key``, ``gs://...``) is a URL; anything
else, ``file://`` included, is a local path. Objects are always moved whole (one GET per object,
one upload per file): formats with internal offsets (gzip, tar, Zarr shards) are read locally
afterwards, never by seeking into the remote object, which is what made reading ``.nii.gz``
through a FUSE mount fail and cross-region reads slow.

Configuration is that of fsspec and of the protocol's library (s3fs/botocore for ``s3://``),
read from the environment that every process of a run inherits (Ray workers, DataLoader
workers, SLURM tasks): credentials from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
``AWS_SESSION_TOKEN`` or ``AWS_PROFILE``, an S3-compatible endpoint from ``AWS_ENDPOINT_URL``,
any filesystem option as ``FSSPEC_S3_<OPTION>`` (fsspec's config, e.g. ``FSSPEC_S3_ANON=true``).

Errors: every failure becomes a :class:`StorageError` with a ``kind`` (:data:`KINDS`) and a
message naming the URL. Only ``transient`` errors (connection, timeout, throttling, server
errors) are retried, :attr:`StorageConfig.attempts` times with a doubling wait; a missing
object, a missing bucket or refused credentials are final at once.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tte_scale.config import check
from tte_scale.errors import TteScaleError

__all__ = [
    "KINDS",
    "StorageConfig",
    "StorageError",
    "bucket_of",
    "classify",
    "delete",
    "download",
    "etag",
    "filesystem",
    "is_plain_md5",
    "is_url",
    "join",
    "list_objects",
    "local_path",
    "object_info",
    "read_bytes",
    "retrying",
    "upload",
]

T = TypeVar("T")

KINDS = {
    "no_backend": "no fsspec implementation of the protocol is installed",
    "no_credentials": "no credentials were found for the storage service",
    "no_bucket": "the bucket does not exist",
    "denied": "the credentials may not do this (access denied)",
    "not_found": "the object does not exist",
    "invalid": "the URL is not valid for the storage service",
    "transient": "a connection, timeout, throttling or server error (retried)",
}
FINAL_KINDS = tuple(k for k in KINDS if k != "transient")
_PLAIN_MD5 = re.compile(r"[0-9a-f]{32}")
_BACKENDS = {"s3": "s3fs (pip install 'tte-scale[s3]')", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}


@dataclass(kw_only=True, slots=True)
class StorageConfig:
    """How objects are transferred; changes how a run goes, never what it writes."""

    attempts: int = 4
    """Tries of one object transfer before it counts as failed. Only transient errors are retried
    (connection, timeout, throttling, server errors); a missing object, a missing bucket or refused
    credentials fail at once. The storage library retries on its own below this (botocore:
    ``AWS_MAX_ATTEMPTS``)."""
    backoff_s: float = 0.5
    """Wait before the second try, doubled before each further one (at most 30 s)."""
    concurrency: int = 8
    """Objects transferred at once: the files of one DICOM series folder (in each scan task), and
    the files `shard --out URL` uploads."""

    def __post_init__(self) -> None:
        check(self.attempts >= 1, "storage.attempts", f"must be >= 1, got {self.attempts}")
        check(self.backoff_s >= 0, "storage.backoff_s", f"must be >= 0, got {self.backoff_s}")
        check(self.concurrency >= 1, "storage.concurrency", f"must be >= 1, got {self.concurrency}")


class StorageError(TteScaleError):
    """A transfer that failed; ``kind`` is a key of :data:`KINDS`, the message names the URL."""

    def __init__(self, kind: str, url: str, detail: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown storage error kind {kind!r}")
        self.kind, self.url, self.detail = kind, url, detail
        super().__init__(f"{url}: {detail}")


def is_url(path) -> bool:
    """True for an fsspec URL whose protocol is not the local filesystem."""
    path = str(path)
    return "://" in path and not path.startswith("file://")


def local_path(path) -> str:
    """A local path with a ``file://`` prefix removed."""
    path = str(path)
    return path[len("file://") :] if path.startswith("file://") else path


def join(base, *parts: str) -> str:
    """Join path parts with ``/``, for URLs and local paths alike."""
    out = str(base).rstrip("/")
    for part in parts:
        out = f"{out}/{part}"
    return out


def bucket_of(url: str) -> str:
    """``s3://bucket/a/b`` -> ``s3://bucket`` (the part of a URL one set of permissions covers)."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"


def filesystem(url: str):
    """``(fs, path)`` of a URL; :class:`StorageError` ``no_backend`` when its protocol has no
    installed implementation."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        scheme = url.split("://", 1)[0]
        need = _BACKENDS.get(scheme, "its fsspec implementation")
        raise StorageError(
            "no_backend", url, f"cannot open {scheme}:// URLs here: install {need} ({type(exc).__name__}: {exc})"
        ) from None


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def classify(exc: BaseException, url: str) -> StorageError:
    """The :class:`StorageError` an exception of a storage library stands for.

    By exception type and name, so that no library (botocore, aiohttp, google-auth) is imported
    here: s3fs turns service error codes into builtin exceptions (NoSuchKey -> FileNotFoundError,
    AccessDenied -> PermissionError, ...) and lets botocore's own ones through (NoCredentialsError).
    """
    if isinstance(exc, StorageError):
        return exc
    names = _names(exc)
    text = f"{type(exc).__name__}: {exc}".strip()
    cause = exc.__cause__
    if names & {"NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError"}:
        return StorageError(
            "no_credentials",
            url,
            "no credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, in the "
            f"environment of every process; README 'Object storage') ({text})",
        )
    if isinstance(exc, FileNotFoundError):
        if (cause is not None and "NoSuchBucket" in _names(cause)) or "bucket does not exist" in str(exc).lower():
            return StorageError("no_bucket", url, f"bucket {bucket_of(url)} does not exist")
        return StorageError("not_found", url, "no such object")
    if isinstance(exc, PermissionError):
        return StorageError("denied", url, f"access denied ({text})")
    if isinstance(exc, ValueError) or (isinstance(exc, OSError) and exc.errno == 22):  # EINVAL: a bad bucket name
        return StorageError("invalid", url, f"not a valid location ({text})")
    return StorageError("transient", url, text)


def retrying(fn: Callable[[], T], url: str, cfg: StorageConfig, sleep: Callable[[float], None] = time.sleep) -> T:
    """``fn()``, tried again on transient errors (``cfg.attempts`` tries in all, waits doubling
    from ``cfg.backoff_s``); any failure is raised as a :class:`StorageError` naming ``url``."""
    for attempt in range(cfg.attempts):
        try:
            return fn()
        except Exception as exc:
            err = classify(exc, url)
            if err.kind != "transient":
                raise err from None
            if attempt + 1 == cfg.attempts:
                raise StorageError(
                    "transient", url, f"failed {cfg.attempts} time(s), last: {err.detail} (storage.attempts)"
                ) from None
            sleep(min(30.0, cfg.backoff_s * 2**attempt))
    raise AssertionError("unreachable")  # pragma: no cover


def etag(info: dict) -> str | None:
    """The object's ETag without quotes (S3: the MD5 of a single-part upload, ``md5-N`` of a
    multipart one), or None when the service reports none."""
    value = info.get("ETag") or info.get("etag")
    return str(value).strip('"') if value else None


def is_plain_md5(tag: str | None) -> bool:
    return bool(tag) and _PLAIN_MD5.fullmatch(tag) is not None


def object_info(url: str, cfg: StorageConfig) -> dict | None:
    """``{"size", "etag"}`` of the object at ``url``, None when there is none."""
    fs, path = filesystem(url)

    def head():
        try:
            info = fs.info(path)
        except FileNotFoundError as exc:
            if classify(exc, url).kind == "no_bucket":
                raise
            return None
        if info.get("type") == "directory":
            return None
        return {"size": int(info["size"]), "etag": etag(info)}

    return retrying(head, url, cfg)


def list_objects(url: str, cfg: StorageConfig) -> dict[str, dict]:
    """Every object under the prefix ``url`` + ``/``: relative name -> ``{"size", "etag"}``
    (fresh from the service, not a cached listing)."""
    fs, path = filesystem(url)
    prefix = path.rstrip("/")

    def find():
        fs.invalidate_cache(prefix)
        found = fs.find(prefix, detail=True, withdirs=False)
        out = {}
        for name, info in found.items():
            rel = name[len(prefix) :].lstrip("/") if name.startswith(prefix) else None
            if rel and not rel.endswith("/") and info.get("type", "file") != "directory":
                out[rel] = {"size": int(info["size"]), "etag": etag(info)}
        return out

    return retrying(find, url, cfg)


def read_bytes(url: str, cfg: StorageConfig) -> bytes:
    """The whole content of one object."""
    fs, path = filesystem(url)
    return retrying(lambda: fs.cat_file(path), url, cfg)


def download(url: str, dest: Path, cfg: StorageConfig) -> int:
    """The whole object ``url`` into the local file ``dest`` (written under a temporary name and
    renamed, so ``dest`` is never partial); returns its size."""
    fs, path = filesystem(url)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.part{os.getpid()}")

    def get():
        try:
            fs.get_file(path, str(tmp))
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest.stat().st_size

    return retrying(get, url, cfg)


def upload(local: Path, url: str, cfg: StorageConfig, md5: str | None = None) -> dict:
    """Upload the local file to ``url``; return the object's ``{"size", "etag"}`` as stored.

    An object store replaces an object in one step, so a reader sees the old object or the new
    one, never a part. When the service's ETag is a plain MD5 and ``md5`` is given, a mismatch
    counts as a failed (retried) upload.
    """
    fs, path = filesystem(url)
    size = Path(local).stat().st_size

    def put():
        fs.put_file(str(local), path)
        fs.invalidate_cache(path)
        info = fs.info(path)
        got = {"size": int(info["size"]), "etag": etag(info)}
        if got["size"] != size or (md5 and is_plain_md5(got["etag"]) and got["etag"] != md5):
            raise OSError(f"stored object differs from {local} (size {got['size']} of {size}, ETag {got['etag']})")
        return got

    return retrying(put, url, cfg)


def delete(url: str, cfg: StorageConfig) -> None:
    fs, path = filesystem(url)

    def rm():
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            pass

    retrying(rm, url, cfg)
