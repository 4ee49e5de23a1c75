"""tte_scale.remote against a real S3 server: error kinds, retries, whole-object transfers."""

from __future__ import annotations

import hashlib

import fsspec
import pytest

from tte_scale.remote import (
    StorageConfig,
    StorageError,
    classify,
    download,
    is_url,
    list_objects,
    object_info,
    read_bytes,
    retrying,
    upload,
)

QUICK = StorageConfig(attempts=2, backoff_s=0.0)


def test_urls_and_local_paths():
    assert is_url("s3://b/k") and is_url("gs://b/k") and is_url("memory://x")
    assert not is_url("/data/x.nii.gz") and not is_url("file:///data/x") and not is_url("rel/x")


def test_missing_object_missing_bucket_and_no_credentials_are_told_apart(s3, bucket):
    fsspec.filesystem("s3").pipe_file(f"{bucket[5:]}/a.bin", b"abc")
    assert read_bytes(f"{bucket}/a.bin", QUICK) == b"abc"
    with pytest.raises(StorageError) as missing:
        read_bytes(f"{bucket}/nope.bin", QUICK)
    assert missing.value.kind == "not_found" and f"{bucket}/nope.bin" in str(missing.value)
    with pytest.raises(StorageError) as no_bucket:
        read_bytes("s3://no-such-bucket-here/a.bin", QUICK)
    assert no_bucket.value.kind == "no_bucket" and "s3://no-such-bucket-here does not exist" in str(no_bucket.value)
    assert object_info(f"{bucket}/nope.bin", QUICK) is None
    with pytest.raises(StorageError, match="does not exist"):
        object_info("s3://no-such-bucket-here/a.bin", QUICK)
    with s3.environ(credentials=False):
        with pytest.raises(StorageError) as creds:
            read_bytes(f"{bucket}/a.bin", QUICK)
    assert creds.value.kind == "no_credentials" and "AWS_ACCESS_KEY_ID" in str(creds.value)


def test_unknown_protocol_is_one_clear_error():
    with pytest.raises(StorageError) as exc:
        read_bytes("nosuchproto://b/a.bin", QUICK)
    assert exc.value.kind == "no_backend" and "nosuchproto://" in str(exc.value)


def test_only_transient_errors_are_retried_and_the_tries_are_bounded():
    calls, waits = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("peer reset")
        return "ok"

    cfg = StorageConfig(attempts=3, backoff_s=0.5)
    assert retrying(flaky, "s3://b/k", cfg, sleep=waits.append) == "ok" and waits == [0.5, 1.0]

    calls.clear()

    def down():
        calls.append(1)
        raise TimeoutError("read timed out")

    with pytest.raises(StorageError, match=r"failed 3 time\(s\)") as exc:
        retrying(down, "s3://b/k", cfg, sleep=lambda s: None)
    assert exc.value.kind == "transient" and len(calls) == 3

    calls.clear()

    def gone():
        calls.append(1)
        raise FileNotFoundError("b/k")

    with pytest.raises(StorageError) as exc:
        retrying(gone, "s3://b/k", cfg, sleep=lambda s: None)
    assert exc.value.kind == "not_found" and len(calls) == 1  # a missing object is not retried
    assert classify(PermissionError("AccessDenied"), "s3://b/k").kind == "denied"


def test_upload_download_and_listing_round_trip(s3, bucket, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 1000 + b"y")
    got = upload(src, f"{bucket}/p/src.bin", QUICK, md5=hashlib.md5(src.read_bytes()).hexdigest())
    assert got == {"size": 1001, "etag": hashlib.md5(src.read_bytes()).hexdigest()}  # single part: ETag = MD5
    dest = tmp_path / "out" / "copy.bin"
    assert download(f"{bucket}/p/src.bin", dest, QUICK) == 1001 and dest.read_bytes() == src.read_bytes()
    assert not list(dest.parent.glob("*.part*"))
    fsspec.filesystem("s3").pipe({f"{bucket[5:]}/p/s/{i:04d}": b"z" for i in range(1005)})  # > one listing page
    listed = list_objects(f"{bucket}/p", QUICK)
    assert len(listed) == 1006 and listed["src.bin"]["size"] == 1001
    assert list_objects(f"{bucket}/nothing-here", QUICK) == {}
    with pytest.raises(StorageError) as exc:
        download(f"{bucket}/p/nope.bin", tmp_path / "nope.bin", QUICK)
    assert exc.value.kind == "not_found" and not (tmp_path / "nope.bin").exists()


def test_server_supports_multipart_uploads(s3, bucket, tmp_path):
    """What publishing relies on: a large file goes up in parts, and its ETag is then not an MD5."""
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * (11 * 4096))  # 11 MiB
    fs = fsspec.filesystem("s3")
    fs.put_file(str(big), f"{bucket[5:]}/big.bin", chunksize=5 * 2**20)
    info = object_info(f"{bucket}/big.bin", QUICK)
    assert info["size"] == big.stat().st_size and info["etag"].endswith("-3")
    assert fs.cat_file(f"{bucket[5:]}/big.bin") == big.read_bytes()
