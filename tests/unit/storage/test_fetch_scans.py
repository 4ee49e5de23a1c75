"""Scans read from a bucket (image_path URLs): the same volumes and reason codes as from disk."""

from __future__ import annotations

from pathlib import Path

import fsspec
import numpy as np
import pytest
from support.cohort import phantom_nifti
from support.phantoms import axial_geometry, write_series

from tte_scale.imaging import ImagingConfig, ScanReadError, read_scan, resolve_image_path
from tte_scale.remote import StorageConfig

CFG = ImagingConfig(min_slices=8)
QUICK = StorageConfig(attempts=2, backoff_s=0.0, concurrency=3)


def put_tree(local, url):
    """Upload every file under ``local`` to the prefix ``url``."""
    fs = fsspec.filesystem("s3")
    for p in sorted(local.rglob("*")):
        if p.is_file():
            fs.put_file(str(p), f"{url[5:]}/{p.relative_to(local).as_posix()}")


@pytest.fixture
def images(tmp_path):
    phantom_nifti(tmp_path / "img" / "a.nii.gz")
    iop, ipps, ps = axial_geometry(n=12, step=10.0, size=32, ps=10.0)
    write_series(tmp_path / "img" / "series", iop, ipps, ps, size=32)
    return tmp_path / "img"


def same(a, b):
    assert np.array_equal(a.hu_IJK, b.hu_IJK) and np.array_equal(a.affine_ras, b.affine_ras)
    assert a.scanner == b.scanner and a.ignored_files == b.ignored_files


def test_nifti_object_and_dicom_prefix_read_like_local_files(s3, bucket, images):
    put_tree(images, f"{bucket}/img")
    same(read_scan(f"{bucket}/img/a.nii.gz", "CT", CFG, QUICK), read_scan(images / "a.nii.gz", "CT", CFG))
    local = read_scan(images / "series", "CT", CFG)
    same(read_scan(f"{bucket}/img/series", "CT", CFG, QUICK), local)
    same(read_scan(f"{bucket}/img/series/", "CT", CFG, StorageConfig(concurrency=1)), local)  # trailing slash


def test_url_failures_name_the_url_with_reason_codes(s3, bucket, images):
    put_tree(images, f"{bucket}/img")
    fs = fsspec.filesystem("s3")
    with pytest.raises(ScanReadError) as exc:
        read_scan(f"{bucket}/img/nope.nii.gz", "CT", CFG, QUICK)
    assert exc.value.reason == "file_not_found" and exc.value.detail == f"{bucket}/img/nope.nii.gz"
    with pytest.raises(ScanReadError) as exc:
        read_scan(f"{bucket}/img/no-series", "CT", CFG, QUICK)
    assert exc.value.reason == "file_not_found"
    fs.pipe_file(f"{bucket[5:]}/img/scan.mha", b"not a series folder")
    with pytest.raises(ScanReadError) as exc:
        read_scan(f"{bucket}/img/scan.mha", "CT", CFG, QUICK)
    assert exc.value.reason == "unsupported_path" and exc.value.detail == f"{bucket}/img/scan.mha"
    fs.pipe_file(f"{bucket[5:]}/img/bad.nii.gz", b"not gzip, not NIfTI" * 10)
    with pytest.raises(ScanReadError) as exc:
        read_scan(f"{bucket}/img/bad.nii.gz", "CT", CFG, QUICK)
    assert exc.value.reason == "unreadable_file" and exc.value.detail.startswith(f"{bucket}/img/bad.nii.gz: ")
    # a damaged file inside a series folder is named by its URL, not by the temporary copy
    name = sorted(p.name for p in (images / "series").iterdir())[3]
    fs.pipe_file(f"{bucket[5:]}/img/series/{name}", (images / "series" / name).read_bytes()[:-999])  # cut pixels
    with pytest.raises(ScanReadError) as exc:
        read_scan(f"{bucket}/img/series", "CT", CFG, QUICK)
    assert exc.value.reason == "pixel_decode_failed" and exc.value.detail.startswith(f"{bucket}/img/series/{name}: ")
    assert "tte_scale_scan_" not in exc.value.detail


def test_other_files_in_a_series_prefix_are_ignored_and_named(s3, bucket, images):
    (images / "series" / "README.txt").write_text("exported by a viewer\n")
    put_tree(images, f"{bucket}/img")
    raw = read_scan(f"{bucket}/img/series", "CT", CFG, QUICK)
    assert raw.ignored_files == ["README.txt"]


def test_object_names_that_leave_the_folder_are_refused(s3, bucket, images):
    put_tree(images / "series", f"{bucket}/evil/series")
    fsspec.filesystem("s3").pipe_file(f"{bucket[5:]}/evil/series/x/../../escape.dcm", b"x")
    with pytest.raises(ScanReadError) as exc:
        read_scan(f"{bucket}/evil/series", "CT", CFG, QUICK)
    assert exc.value.reason == "unsupported_path" and "'..'" in exc.value.detail


def test_urls_pass_through_path_resolution_untouched(tmp_path):
    table = tmp_path / "cohort" / "scans.parquet"
    assert resolve_image_path("s3://bkt/ct//a.nii.gz", table) == "s3://bkt/ct//a.nii.gz"
    assert resolve_image_path("gs://bkt/series/", table) == "gs://bkt/series/"
    assert resolve_image_path("img/a.nii.gz", table) == tmp_path / "cohort" / "img" / "a.nii.gz"
    assert resolve_image_path("file:///data/a.nii.gz", table) == Path("/data/a.nii.gz")
