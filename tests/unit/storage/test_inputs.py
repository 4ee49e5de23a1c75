"""Where images in object storage are, --image-root with URLs, the per-bucket check before any
work, and the input signature of an object (what makes a re-run read a failed scan again)."""

from __future__ import annotations

import fsspec
import pytest

from tte_scale.errors import InputError
from tte_scale.remote import StorageConfig
from tte_scale.sharding.inputs import (
    check_image_roots,
    check_remote_inputs,
    describe_locations,
    input_locations,
    input_signature,
)
from tte_scale.sharding.plan import PlanItem

QUICK = StorageConfig(attempts=2, backoff_s=0.0)


def items(table, paths):
    return [
        PlanItem(
            row=i,
            scan_id=f"s{i}",
            subject_id=i,
            split="train",
            image_path=p,
            modality="CT",
            wds_shard=0,
            zarr_shard=0,
            scans_table=str(table),
        )
        for i, p in enumerate(paths)
    ]


def test_locations_count_urls_apart(tmp_path):
    table = tmp_path / "cohort" / "scans.parquet"
    its = items(table, ["img/a.nii.gz", "s3://bkt/ct/x/b.nii.gz", "s3://bkt/ct/y/series", str(tmp_path / "c.nii")])
    loc = input_locations(its)
    assert (loc["inside"], loc["outside"], loc["remote"], loc["remote_under"]) == (1, 1, 2, "s3://bkt/ct")
    assert "2 in object storage, under s3://bkt/ct" in describe_locations(loc)
    assert input_locations(items(table, ["s3://bkt/ct/b.nii.gz"]))["remote_under"] == "s3://bkt/ct"
    assert input_locations(items(table, ["s3://a/1.nii", "s3://b/2.nii"]))["remote_under"] == "s3://"


def test_image_root_urls_are_prefixes_and_never_match_local_folders(tmp_path):
    table = tmp_path / "cohort" / "scans.parquet"
    its = items(table, ["s3://bkt/ct/a.nii.gz", "s3://bkt/ct2/b.nii.gz", "img/c.nii.gz"])
    rows = {it.scan_id: it.row for it in its}
    check_image_roots(its, ["s3://bkt/ct", "s3://bkt/ct2/", tmp_path / "cohort"], rows)
    with pytest.raises(InputError, match=r"row 1 \(scan_id 's1'\): image_path 's3://bkt/ct2/b.nii.gz' is outside"):
        check_image_roots(its, ["s3://bkt/ct", tmp_path / "cohort"], rows)  # ct2 is not under ct
    with pytest.raises(InputError, match=r"row 0 .*outside --image-root /.*\(2 of 3"):
        check_image_roots(its, [tmp_path], rows)  # a local root never covers a URL
    with pytest.raises(InputError, match=r"row 2 .*resolves to"):
        check_image_roots(its, ["s3://bkt"], rows)  # nor a URL root a local file


def test_bucket_checked_once_before_any_work(s3, bucket, tmp_path):
    table = tmp_path / "scans.parquet"
    fsspec.filesystem("s3").pipe_file(f"{bucket[5:]}/ct/a.nii.gz", b"x")
    ok = items(table, [f"{bucket}/ct/missing.nii.gz", f"{bucket}/ct/a.nii.gz", f"{bucket}/ct/series"])
    check_remote_inputs(ok, {it.scan_id: it.row for it in ok}, QUICK)  # a missing object: quarantined later
    bad = items(table, [f"{bucket}/ct/a.nii.gz", "s3://no-such-bucket-zz/ct/b.nii.gz", "s3://no-such-bucket-zz/c"])
    rows = {it.scan_id: it.row for it in bad}
    with pytest.raises(InputError) as exc:
        check_remote_inputs(bad, rows, QUICK)
    msg = str(exc.value)
    assert "row 1 (scan_id 's1')" in msg and "s3://no-such-bucket-zz/ct/b.nii.gz" in msg and "does not exist" in msg
    assert "2 labelled scan(s) in s3://no-such-bucket-zz" in msg and "\n" not in msg
    with s3.environ(credentials=False), pytest.raises(InputError, match=r"row 0 .*no credentials found"):
        check_remote_inputs(ok, {it.scan_id: it.row for it in ok}, QUICK)


def test_signature_of_an_object_and_of_a_prefix_changes_with_their_content(s3, bucket):
    fs = fsspec.filesystem("s3")
    assert input_signature(f"{bucket}/a.nii.gz") is None
    fs.pipe_file(f"{bucket[5:]}/a.nii.gz", b"one")
    first = input_signature(f"{bucket}/a.nii.gz")
    fs.pipe_file(f"{bucket[5:]}/a.nii.gz", b"two")  # same size, other bytes: the ETag tells
    assert first[0] == 3 and input_signature(f"{bucket}/a.nii.gz") not in (None, first)
    fs.pipe({f"{bucket[5:]}/series/{n}": b"slice" for n in ("1.dcm", "2.dcm")})
    before = input_signature(f"{bucket}/series/")
    assert before[:2] == [2, 10] and input_signature(f"{bucket}/series") == before
    fs.pipe_file(f"{bucket[5:]}/series/2.dcm", b"SLICE")
    assert input_signature(f"{bucket}/series")[:2] == [2, 10] and input_signature(f"{bucket}/series") != before
