"""`shard --out URL`: publishing a staged build, against a real S3 server.

What is checked: a re-run uploads only what the URL lacks (size and checksum), objects this
command did not upload are never deleted, a URL holding something else is refused before any
work, and readers never meet a manifest naming data not uploaded yet.
"""

from __future__ import annotations

import json

import fsspec
import pytest

from tte_scale.errors import InputError
from tte_scale.outputs import mark
from tte_scale.remote import StorageConfig
from tte_scale.sharding import publish
from tte_scale.sharding.publish import LEDGER, RemoteOut, digests, is_current

QUICK = StorageConfig(attempts=2, backoff_s=0.0, concurrency=3)
PLAN = {"fingerprint": "a" * 64}
FILES = {
    "wds/shard-000000.tar": b"tar zero" * 100,
    "wds/shard-000001.tar": b"tar one" * 90,
    "zarr/zarr.json": b'{"zarr_format": 3}',
    "zarr/volumes/c/0/0/0/0": b"zarr shard" * 50,
    "manifest/samples.parquet": b"samples",
    "manifest/build.json": b"{}",
}


def stage(root, plan=PLAN, files=FILES):
    root.mkdir(parents=True, exist_ok=True)
    mark(root, "shard")
    (root / "_state").mkdir(exist_ok=True)
    (root / "_state" / "plan.json").write_text(json.dumps(plan))
    (root / "_state" / "wds-000000.json").write_text("{}")  # resume records stay local
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "zarr" / ".relabel-staging").mkdir(parents=True, exist_ok=True)
    (root / "zarr" / ".relabel-staging" / "x").write_bytes(b"hidden")
    (root / "wds").mkdir(exist_ok=True)
    (root / "wds" / "shard-000002.tar.tmp-1234abcd").write_bytes(b"partial")
    return root


def remote_tree(url):
    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    base = url[5:]
    return {p[len(base) + 1 :]: fs.cat_file(p) for p in fs.find(base)}


def test_publish_uploads_the_build_then_a_rerun_only_what_changed(s3, bucket, tmp_path):
    staging = stage(tmp_path / "stage")
    out = RemoteOut(f"{bucket}/build", QUICK)
    out.check(PLAN)
    first = out.publish(staging)
    tree = remote_tree(f"{bucket}/build")
    assert {k: v for k, v in tree.items() if k in FILES} == FILES
    assert set(tree) == set(FILES) | {".tte_scale_output.json", "_state/plan.json", LEDGER}
    assert first["uploaded"] == len(FILES) + 2 and first["kept"] == 0

    again = RemoteOut(f"{bucket}/build", QUICK).publish(staging)
    assert again["uploaded"] == 0 and again["kept"] == len(FILES) + 2 and again["deleted"] == 0

    # an object replaced behind our back by one of the same size: the checksum tells, it is uploaded again
    fs = fsspec.filesystem("s3")
    fs.pipe_file(f"{bucket[5:]}/build/wds/shard-000001.tar", b"TAR ONE" * 90)
    fixed = RemoteOut(f"{bucket}/build", QUICK).publish(staging)
    assert (
        fixed["uploaded"] >= 1
        and remote_tree(f"{bucket}/build")["wds/shard-000001.tar"] == FILES["wds/shard-000001.tar"]
    )


def test_data_before_manifest_and_manifest_removed_first_when_data_changes(s3, bucket, tmp_path, monkeypatch):
    staging = stage(tmp_path / "stage")
    RemoteOut(f"{bucket}/b", QUICK).publish(staging)
    (staging / "wds" / "shard-000000.tar").write_bytes(b"rebuilt shard")
    (staging / "manifest" / "samples.parquet").write_bytes(b"samples v2")
    events = []
    real_upload, real_delete = publish.upload, publish.delete
    # spies around the real transfers (the server still does every one of them)
    monkeypatch.setattr(
        publish, "upload", lambda local, url, *a, **k: events.append(("put", url)) or real_upload(local, url, *a, **k)
    )
    monkeypatch.setattr(publish, "delete", lambda url, *a: events.append(("del", url)) or real_delete(url, *a))
    RemoteOut(f"{bucket}/b", QUICK).publish(staging)
    names = [(op, url.split("/b/", 1)[1]) for op, url in events if not url.endswith(LEDGER)]
    assert names.index(("del", "manifest/samples.parquet")) < names.index(("put", "wds/shard-000000.tar"))
    assert names.index(("put", "wds/shard-000000.tar")) < names.index(("put", "manifest/samples.parquet"))
    assert ("put", "wds/shard-000001.tar") not in names  # unchanged: kept
    assert remote_tree(f"{bucket}/b")["manifest/samples.parquet"] == b"samples v2"


def test_objects_this_command_did_not_upload_are_never_deleted(s3, bucket, tmp_path):
    fs = fsspec.filesystem("s3")
    fs.pipe({f"{bucket[5:]}/b/README.txt": b"theirs", f"{bucket[5:]}/b/wds/notes.tar": b"theirs too"})
    staging = stage(tmp_path / "stage")
    with pytest.raises(InputError, match=r"holds wds/ with no \.tte_scale_output\.json.*refusing"):
        RemoteOut(f"{bucket}/b", QUICK).check(PLAN)  # shard outputs someone else put there
    fs.rm_file(f"{bucket[5:]}/b/wds/notes.tar")
    RemoteOut(f"{bucket}/b", QUICK).publish(staging)
    fs.pipe_file(f"{bucket[5:]}/b/wds/notes.tar", b"theirs too")  # put beside our build later
    # a shard no longer part of the build is deleted (it is in the ledger); the user's files stay
    (staging / "wds" / "shard-000001.tar").unlink()
    res = RemoteOut(f"{bucket}/b", QUICK).publish(staging)
    tree = remote_tree(f"{bucket}/b")
    assert res["deleted"] == 1 and "wds/shard-000001.tar" not in tree
    assert tree["README.txt"] == b"theirs" and tree["wds/notes.tar"] == b"theirs too"

    # another plan: refused without --overwrite; with it, only the ledger's objects are deleted
    other = stage(tmp_path / "other", plan={"fingerprint": "b" * 64}, files={"wds/shard-000005.tar": b"new"})
    with pytest.raises(InputError, match="holds a build of different scans/labels/config; pass --overwrite"):
        RemoteOut(f"{bucket}/b", QUICK).check({"fingerprint": "b" * 64})
    RemoteOut(f"{bucket}/b", QUICK, overwrite=True).check({"fingerprint": "b" * 64})
    RemoteOut(f"{bucket}/b", QUICK, overwrite=True).publish(other)
    tree = remote_tree(f"{bucket}/b")
    assert tree["README.txt"] == b"theirs" and tree["wds/notes.tar"] == b"theirs too"
    assert (
        tree["wds/shard-000005.tar"] == b"new" and "wds/shard-000000.tar" not in tree and "zarr/zarr.json" not in tree
    )
    assert json.loads(tree["_state/plan.json"]) == {"fingerprint": "b" * 64}


def test_missing_bucket_and_missing_credentials_refused_in_one_line(s3, tmp_path):
    with pytest.raises(InputError) as exc:
        RemoteOut("s3://no-such-bucket-zz/shards", QUICK).check(PLAN)
    assert str(exc.value).startswith("--out s3://no-such-bucket-zz/shards") and "does not exist" in str(exc.value)
    with s3.environ(credentials=False), pytest.raises(InputError, match=r"^--out .*no credentials found"):
        RemoteOut("s3://any-bucket/shards", QUICK).check(PLAN)


def test_multipart_objects_are_checked_through_the_ledger(s3, bucket, tmp_path):
    """A multipart ETag is no MD5 of the file: kept only when the ledger recorded that ETag for a
    file of the same sha256 right after uploading it."""
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * (11 * 4096))
    fs = fsspec.filesystem("s3")
    fs.put_file(str(big), f"{bucket[5:]}/big.bin", chunksize=5 * 2**20)
    info = fs.info(f"{bucket[5:]}/big.bin")
    remote = {"size": info["size"], "etag": info["ETag"].strip('"')}
    local = digests(big)
    assert not is_current(local, remote, None)  # nothing recorded: uploaded again
    assert is_current(local, remote, {"bytes": local.size, "sha256": local.sha256, "etag": remote["etag"]})
    assert not is_current(local, remote, {"bytes": local.size, "sha256": "0" * 64, "etag": remote["etag"]})
    assert not is_current(local, {**remote, "etag": "f" * 32}, None)  # a plain MD5 that differs
    assert is_current(local, {**remote, "etag": local.md5}, None)
