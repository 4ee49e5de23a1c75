"""Local paths and fsspec URLs for the loader, and a size-bounded local cache for remote shards.

A path with a protocol other than `file` (`s3://`, `gs://`, `memory://`) is remote
(:mod:`tte_scale.remote`, which also says how credentials and endpoints are configured): the
whole shard file is downloaded once into `cache_dir` (to a temporary name, then renamed, under an
fcntl lock so that the workers and ranks of one node download it once) and read locally by offset
afterwards. When the manifest gives the shard's size and sha256 (`shards.parquet`), the download is
checked against them before it enters the cache, and the cache entry is named by that sha256 too:
a shard rebuilt under the same URL is a new entry, never the stale copy. After each download the
least recently used files are evicted until the cache fits in `max_bytes` (the file just fetched
is never evicted; a reader that already opened an evicted file keeps reading it, since unlinking
an open file is safe on POSIX).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from tte_scale.hashing import sha256_file
from tte_scale.remote import StorageConfig, StorageError, download, is_url, join, list_objects, local_path, object_info
from tte_scale.remote import read_bytes as read_object

__all__ = ["is_remote", "join", "read_bytes", "exists", "missing", "ShardCache", "ShardDamaged"]

log = logging.getLogger("tte_scale.data")

is_remote = is_url
_STORAGE = StorageConfig()


class ShardDamaged(OSError):
    """A downloaded shard whose size or sha256 differs from the manifest's."""


def read_bytes(path: str) -> bytes:
    """Whole content of a small file (manifest tables, build.json)."""
    if is_remote(path):
        return read_object(path, _STORAGE)
    return Path(local_path(path)).read_bytes()


def exists(path: str) -> bool:
    """Whether the file exists (a remote one: an object, not a prefix)."""
    if is_remote(path):
        return object_info(path, _STORAGE) is not None
    return os.path.exists(local_path(path))


def missing(paths: Iterable[str]) -> list[str]:
    """The paths of ``paths`` that do not exist; remote ones by one listing per folder."""
    paths = list(paths)
    remote: dict[str, list[str]] = defaultdict(list)
    lost = []
    for p in paths:
        if is_remote(p):
            remote[p.rsplit("/", 1)[0]].append(p)
        elif not os.path.exists(local_path(p)):
            lost.append(p)
    for folder, members in remote.items():
        try:
            there = list_objects(folder, _STORAGE)
        except StorageError as exc:
            if exc.kind != "not_found":
                raise
            there = {}
        lost += [p for p in members if p.rsplit("/", 1)[1] not in there]
    lost_set = set(lost)
    return [p for p in paths if p in lost_set]


class ShardCache:
    """Maps a shard path to a local file path, downloading remote shards into a bounded cache."""

    def __init__(self, cache_dir: str | None, max_bytes: int, storage: StorageConfig | None = None):
        self.cache_dir = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "tte_scale_shard_cache"
        self.max_bytes = int(max_bytes)
        self.storage = storage or _STORAGE
        self.downloads = 0
        self.evictions = 0

    def _entry(self, url: str, sha256: str | None) -> Path:
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        version = f"-{sha256[:16]}" if sha256 else ""
        return self.cache_dir / f"{digest}{version}-{os.path.basename(url.rstrip('/'))}"

    def local_path(self, path: str, size: int | None = None, sha256: str | None = None) -> str:
        """A local file with the content of `path`: FileNotFoundError when it is missing,
        :class:`ShardDamaged` when a download differs from the given `size` / `sha256`."""
        if not is_remote(path):
            local = local_path(path)
            if not os.path.exists(local):
                raise FileNotFoundError(local)
            return local
        entry = self._entry(path, sha256)
        if entry.exists():
            os.utime(entry)  # mark as recently used for eviction
            return str(entry)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not entry.exists():  # another process may have fetched it while we waited
                    self._download(path, entry, size, sha256)
                    self._evict(keep=entry)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return str(entry)

    def _download(self, url: str, entry: Path, size: int | None, sha256: str | None) -> None:
        # checked under a name the cache never serves; renamed into place only when it matches
        tmp = entry.with_name(entry.name + f".check{os.getpid()}")
        try:
            try:
                got = download(url, tmp, self.storage)
            except StorageError as exc:
                if exc.kind == "not_found":
                    raise FileNotFoundError(url) from None
                raise OSError(str(exc)) from None
            if size is not None and got != size:
                raise ShardDamaged(f"{url}: downloaded {got} bytes, the manifest says {size}")
            if sha256 is not None and sha256_file(tmp) != sha256:
                raise ShardDamaged(f"{url}: sha256 of the download differs from the manifest")
            os.replace(tmp, entry)
        finally:
            tmp.unlink(missing_ok=True)
        self.downloads += 1
        log.info("cached %s -> %s", url, entry)

    def _evict(self, keep: Path) -> None:
        files = [
            f
            for f in self.cache_dir.iterdir()
            if f.is_file() and f.name != ".lock" and ".part" not in f.name and ".check" not in f.name
        ]
        total = sum(f.stat().st_size for f in files)
        for f in sorted(files, key=lambda f: f.stat().st_mtime):
            if total <= self.max_bytes:
                break
            if f == keep:
                continue
            size = f.stat().st_size
            f.unlink(missing_ok=True)
            total -= size
            self.evictions += 1
            log.info("evicted %s from the shard cache (%d bytes)", f, size)
