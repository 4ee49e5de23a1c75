"""Local paths and fsspec URLs, and a size-bounded local cache for remote shards.

A path with a protocol other than `file` (`s3://`, `gs://`, `http://`, `memory://`) is remote:
the whole shard file is downloaded once into `cache_dir` (to a temporary name, then renamed, under
an fcntl lock so that the workers and ranks of one node download it once) and read locally by
offset afterwards. After each download the least recently used files are evicted until the cache
fits in `max_bytes` (the file just fetched is never evicted; a reader that already opened an
evicted file keeps reading it, since unlinking an open file is safe on POSIX).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
from pathlib import Path

__all__ = ["is_remote", "join", "read_bytes", "exists", "ShardCache"]

log = logging.getLogger("tte_scale.data")

_COPY_CHUNK = 8 * 2**20


def is_remote(path: str) -> bool:
    """True for an fsspec URL whose protocol is not the local filesystem."""
    path = str(path)
    return "://" in path and not path.startswith("file://")


def _local(path: str) -> str:
    path = str(path)
    return path[len("file://"):] if path.startswith("file://") else path


def join(base: str, *parts: str) -> str:
    """Join path parts with `/` for URLs and local paths alike."""
    out = str(base).rstrip("/")
    for part in parts:
        out = f"{out}/{part}"
    return out


def _fs(url: str):
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


def read_bytes(path: str) -> bytes:
    """Whole content of a small file (manifest tables, build.json)."""
    if is_remote(path):
        fs, p = _fs(path)
        return fs.cat_file(p)
    return Path(_local(path)).read_bytes()


def exists(path: str) -> bool:
    if is_remote(path):
        fs, p = _fs(path)
        return fs.exists(p)
    return os.path.exists(_local(path))


class ShardCache:
    """Maps a shard path to a local file path, downloading remote shards into a bounded cache."""

    def __init__(self, cache_dir: str | None, max_bytes: int):
        self.cache_dir = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "tte_scale_shard_cache"
        self.max_bytes = int(max_bytes)
        self.downloads = 0
        self.evictions = 0

    def _entry(self, url: str) -> Path:
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        return self.cache_dir / f"{digest}-{os.path.basename(url.rstrip('/'))}"

    def local_path(self, path: str) -> str:
        """A local file with the content of `path` (raises FileNotFoundError when it is missing)."""
        if not is_remote(path):
            local = _local(path)
            if not os.path.exists(local):
                raise FileNotFoundError(local)
            return local
        entry = self._entry(path)
        if entry.exists():
            os.utime(entry)  # mark as recently used for eviction
            return str(entry)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not entry.exists():  # another process may have fetched it while we waited
                    self._download(path, entry)
                    self._evict(keep=entry)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return str(entry)

    def _download(self, url: str, entry: Path) -> None:
        fs, p = _fs(url)
        if not fs.exists(p):
            raise FileNotFoundError(url)
        tmp = entry.with_name(entry.name + f".part{os.getpid()}")
        with fs.open(p, "rb") as src, open(tmp, "wb") as dst:
            while chunk := src.read(_COPY_CHUNK):
                dst.write(chunk)
        os.replace(tmp, entry)
        self.downloads += 1
        log.info("cached %s -> %s", url, entry)

    def _evict(self, keep: Path) -> None:
        files = [f for f in self.cache_dir.iterdir() if f.is_file() and f.name != ".lock" and ".part" not in f.name]
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
