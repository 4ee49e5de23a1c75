"""`tte-scale shard --out URL`: the build is made in a local staging folder, then published.

Why a staging folder rather than writing through fsspec: every rule of a build relies on a local
filesystem (one writer per file that writes a temporary name and renames it, resume records
checked by size and sha256 of the file, the owner marker, zarr's LocalStore). Object stores
have no rename, and checking the shards a re-run keeps would mean downloading them. So the job
runs unchanged in ``--staging DIR`` (resumable, byte-identical to a local build) and this module
mirrors the finished folder to the URL, keeping the three rules there too:

- **Checked before any work** (:meth:`RemoteOut.check`, read-only): the bucket exists, the
  credentials work, and the URL holds no shard outputs (``wds/``, ``zarr/``, ...) but those of a
  build of the same plan marked by this command. A URL holding another plan's build is refused
  unless ``--overwrite``; one holding shard outputs without this command's marker is refused.
- **A re-run checks what it keeps** (:func:`is_current`): a file is not uploaded again when the
  object has its size and checksum: an ETag that is a plain MD5 (a single-part upload) must equal
  the file's MD5; any other ETag (multipart, server-side encryption) must be the one the ledger
  recorded right after this command uploaded a file of the same sha256.
- **Never deletes what it did not write**: the ledger ``_state/published.json`` lists every object
  this command uploaded (size, sha256, ETag). Only those may be deleted: by ``--overwrite`` when
  the URL holds another plan's build, and at the end when a ledger object is no longer part of the
  build. Any other object under the URL stays, whatever its name.
- **Readers never meet a manifest naming shards not uploaded yet**: the marker and plan go first,
  then the data (WebDataset tars, Zarr), the manifest last; when data must be uploaded again, the
  manifest (a ledger object) is deleted first.

Uploads run ``storage.concurrency`` at a time, each retried on transient errors; the ledger is
written as they complete, so an interrupted publish resumes.
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tte_scale.errors import InputError
from tte_scale.formats.shards import MANIFEST_DIR, WDS_DIR, WDS_LABELS_DIR, ZARR_DIR
from tte_scale.outputs import MARKER
from tte_scale.remote import (
    StorageConfig,
    StorageError,
    delete,
    is_plain_md5,
    list_objects,
    read_bytes,
    upload,
)
from tte_scale.sharding.resume import COMMAND, OUTPUT_DIRS, verify_threads
from tte_scale.sharding.state import STATE_DIR, write_json_atomic
from tte_scale.sharding.writers import TMP_MARK

PUBLISHED_DIRS = (WDS_DIR, WDS_LABELS_DIR, ZARR_DIR, MANIFEST_DIR)
PLAN = f"{STATE_DIR}/plan.json"
LEDGER = f"{STATE_DIR}/published.json"
LEDGER_VERSION = 1
_LEDGER_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class LocalFile:
    size: int
    md5: str
    sha256: str


def digests(path: Path) -> LocalFile:
    """Size, MD5 (what S3 reports as the ETag of a single-part upload) and sha256, in one read."""
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            md5.update(block)
            sha.update(block)
            size += len(block)
    return LocalFile(size, md5.hexdigest(), sha.hexdigest())


def is_current(local: LocalFile, remote: dict | None, recorded: dict | None) -> bool:
    """Whether the object ``remote`` (``{"size", "etag"}``, None when absent) already holds the file."""
    if remote is None or remote["size"] != local.size:
        return False
    if is_plain_md5(remote["etag"]):
        return remote["etag"] == local.md5
    expected = {"bytes": local.size, "sha256": local.sha256, "etag": remote["etag"]}
    return remote["etag"] is not None and recorded == expected


def publishable(staging: Path) -> list[str]:
    """The files of a finished build that readers need, as relative POSIX paths: the marker, the
    plan, and the outputs (no resume records, temporary or hidden files)."""
    files = [MARKER, PLAN]
    for d in PUBLISHED_DIRS:
        for p in sorted((staging / d).rglob("*")):
            rel = p.relative_to(staging)
            if p.is_file() and not any(part.startswith(".") for part in rel.parts) and TMP_MARK not in p.name:
                if not p.name.endswith(".partial"):
                    files.append(rel.as_posix())
    return files


class RemoteOut:
    """The URL a build is published to (see the module doc)."""

    def __init__(self, url: str, storage: StorageConfig, overwrite: bool = False) -> None:
        self.url = url.rstrip("/")
        self.storage = storage
        self.overwrite = overwrite

    def _at(self, rel: str) -> str:
        return f"{self.url}/{rel}"

    def _listing(self) -> dict[str, dict]:
        try:
            return list_objects(self.url, self.storage)
        except StorageError as exc:
            if exc.kind == "not_found":
                return {}
            raise InputError(f"--out {exc}") from None

    def _json(self, rel: str, objects: dict) -> dict | None:
        if rel not in objects:
            return None
        try:
            data = json.loads(read_bytes(self._at(rel), self.storage))
        except (StorageError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _refusal(self, objects: dict, fp: dict | None) -> str | None:
        """Why the URL may not take this build (None: it may)."""
        present = sorted({rel.split("/", 1)[0] for rel in objects} & set(OUTPUT_DIRS))
        if not present:
            return None
        marker = self._json(MARKER, objects)
        if marker is None or marker.get("command") != COMMAND:
            who = "no" if marker is None else f"`tte-scale {marker.get('command')}`'s"
            return (
                f"--out {self.url}: holds {', '.join(d + '/' for d in present)} with {who} {MARKER}, not a build "
                f"marked by `tte-scale {COMMAND}`; refusing to write there (choose another URL, or delete those "
                "objects yourself if they are an old build)"
            )
        if self._json(PLAN, objects) != fp and not self.overwrite:
            return (
                f"--out {self.url}: holds a build of different scans/labels/config; pass --overwrite to replace it "
                "(it deletes only the objects this command uploaded)"
            )
        return None

    def check(self, fp: dict | None) -> None:
        """Before any work, read-only: the URL can be listed and may take the build of plan ``fp``."""
        objects = self._listing()
        if (why := self._refusal(objects, fp)) is not None:
            raise InputError(why)

    def _ledger(self, objects: dict) -> dict[str, dict]:
        data = self._json(LEDGER, objects) or {}
        entries = data.get("objects") if data.get("format_version") == LEDGER_VERSION else None
        return dict(entries) if isinstance(entries, dict) else {}

    def _write_ledger(self, staging: Path, ledger: dict) -> None:
        local = staging / LEDGER
        write_json_atomic(local, {"format_version": LEDGER_VERSION, "url": self.url, "objects": ledger})
        upload(local, self._at(LEDGER), self.storage)

    def _delete(self, rels, ledger: dict) -> int:
        n = 0
        for rel in sorted(rels):
            if rel in ledger:  # the one rule: only objects this command uploaded
                delete(self._at(rel), self.storage)
                del ledger[rel]
                n += 1
        return n

    def publish(self, staging: Path) -> dict:
        """Upload the finished build in ``staging``; return counts. Raises InputError (one line)
        when the URL refuses, or an upload fails after its retries (the build stays in ``staging``:
        a re-run uploads what is missing)."""
        staging = Path(staging)
        try:
            return self._publish(staging)
        except StorageError as exc:
            raise InputError(
                f"--out {exc}; the build is complete in --staging {staging}, a re-run uploads what is missing"
            ) from None

    def _publish(self, staging: Path) -> dict:
        plan = json.loads((staging / PLAN).read_text())
        objects = self._listing()
        ledger = self._ledger(objects)
        deleted = 0
        if (why := self._refusal(objects, plan)) is not None:  # the URL changed while the build ran
            raise InputError(why)
        if self._json(PLAN, objects) not in (None, plan):  # --overwrite of another plan's build
            deleted += self._delete(list(ledger), ledger)
            self._write_ledger(staging, ledger)
            objects = self._listing()

        rels = publishable(staging)
        with ThreadPoolExecutor(max_workers=verify_threads()) as pool:
            files = dict(zip(rels, pool.map(lambda rel: digests(staging / rel), rels)))
        todo = {rel for rel, f in files.items() if not is_current(f, objects.get(rel), ledger.get(rel))}
        kept = len(files) - len(todo)
        manifest = [rel for rel in rels if rel.startswith(MANIFEST_DIR + "/")]
        claim = [MARKER, PLAN]
        data = [rel for rel in rels if rel not in manifest and rel not in claim]
        if any(rel in todo for rel in data):
            gone = [rel for rel in manifest if rel in objects and rel in ledger]
            deleted += self._delete(gone, ledger)
            todo.update(gone)
            kept -= len(gone)

        sent = {"files": 0, "bytes": 0}
        for group in (claim, data, manifest):
            self._upload_all(staging, [rel for rel in group if rel in todo], files, ledger, sent)
        stale = [rel for rel in ledger if rel not in files and rel != LEDGER]
        deleted += self._delete(stale, ledger)
        self._write_ledger(staging, ledger)
        return {
            "url": self.url,
            "uploaded": sent["files"],
            "uploaded_bytes": sent["bytes"],
            "kept": kept,
            "deleted": deleted,
        }

    def _upload_all(self, staging: Path, rels: list[str], files: dict, ledger: dict, sent: dict) -> None:
        if not rels:
            return
        last = time.monotonic()

        def put(rel: str) -> dict:
            return upload(staging / rel, self._at(rel), self.storage, md5=files[rel].md5)

        with ThreadPoolExecutor(max_workers=self.storage.concurrency) as pool:
            futures = {pool.submit(put, rel): rel for rel in rels}
            try:
                for fut in as_completed(futures):
                    rel, got = futures[fut], fut.result()
                    ledger[rel] = {"bytes": files[rel].size, "sha256": files[rel].sha256, "etag": got["etag"]}
                    sent["files"] += 1
                    sent["bytes"] += files[rel].size
                    if time.monotonic() - last > _LEDGER_EVERY_S:
                        self._write_ledger(staging, ledger)
                        last = time.monotonic()
            except BaseException:
                for fut in futures:
                    fut.cancel()
                # what did complete is recorded, so that a re-run need not upload it again
                try:
                    self._write_ledger(staging, ledger)
                except StorageError:
                    pass  # the failure being raised says more
                raise
        self._write_ledger(staging, ledger)
