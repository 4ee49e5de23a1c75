"""A build records image paths as the scans table writes them, so moving the cohort folder (or
spelling --scans differently) changes neither the build fingerprint nor anything written."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from support.cohort import SHARD_SET, make_cohort

from tte_scale.config import load_config
from tte_scale.sharding import executor as sharding_executor
from tte_scale.sharding.config import ShardConfig
from tte_scale.sharding.job import build

CFG = load_config(ShardConfig, None, SHARD_SET)
RUN_ONLY = "_state/last_run.json"  # timings and worker count: differ run to run by design


def tree_bytes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).as_posix() != RUN_ONLY
    }


def interrupt_after(monkeypatch, n: int) -> None:
    """Stop the in-process build after ``n`` scans, as a kill would (no cleanup of its own)."""
    real = sharding_executor.process_scan
    calls = []

    def scan(*args, **kwargs):
        if len(calls) == n:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sharding_executor, "process_scan", scan)


def test_interrupted_build_resumes_after_the_cohort_moves(tmp_path, monkeypatch):
    scans, labels = make_cohort(tmp_path / "a", n_subjects=6, broken=False, corrupt=True)
    ref = build(scans, labels, tmp_path / "ref", CFG, workers=0, progress=False)
    assert ref["failed"] == 1 and ref["ok"] == 8

    out = tmp_path / "a" / "shards"  # inside the cohort: the partial build moves with it
    with monkeypatch.context() as m:
        interrupt_after(m, 5)
        with pytest.raises(KeyboardInterrupt):
            build(scans, labels, out, CFG, workers=0, progress=False)
    done = [p.name for p in (out / "_state").glob("*.json") if p.name.startswith(("wds-0", "zarr-0"))]
    assert done and not (out / "manifest").exists(), done  # some shards complete, the build is not

    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")
    moved = tmp_path / "b"
    s = build(moved / "scans.parquet", moved / "labels", moved / "shards", CFG, workers=0, progress=False)
    assert s["resumed"] and 0 < s["processed"] < ref["ok"] + ref["failed"] and s["skipped_shards"] > 0

    # same manifest, same shards, same resume state as an uninterrupted build of the unmoved cohort
    assert tree_bytes(moved / "shards") == tree_bytes(tmp_path / "ref")
    failures = json.loads((moved / "shards" / "manifest" / "build.json").read_text())["failures"]
    assert [(f["scan_id"], f["reason"]) for f in failures] == [("corrupt", "unreadable_file")]
    assert failures[0]["detail"].startswith("img/corrupt.nii.gz: "), failures[0]
    for p in (moved / "shards").rglob("*"):
        if p.is_file():
            assert str(tmp_path).encode() not in p.read_bytes(), f"{p} records where the cohort lies"

    # --scans spelled another way (through a link to the folder): the same build, nothing to redo
    (tmp_path / "link").symlink_to(moved)
    again = build(
        tmp_path / "link" / "scans.parquet",
        tmp_path / "link" / "labels",
        moved / "shards",
        CFG,
        workers=0,
        progress=False,
    )
    assert again["resumed"] and again["processed"] == 0
    assert tree_bytes(moved / "shards") == tree_bytes(tmp_path / "ref")


def test_unmoved_rebuild_is_byte_identical(tmp_path):
    scans, labels = make_cohort(tmp_path / "a", n_subjects=4, corrupt=True)
    out = tmp_path / "out"
    build(scans, labels, out, CFG, workers=0, progress=False)
    first = tree_bytes(out)
    build(scans, labels, out, CFG, workers=0, progress=False, overwrite=True)
    assert tree_bytes(out) == first
    failures = json.loads((out / "manifest" / "build.json").read_text())["failures"]
    assert [(f["scan_id"], f["reason"]) for f in failures] == [
        ("missing-file", "file_not_found"),
        ("corrupt", "unreadable_file"),
    ]
    assert failures[0]["detail"] == "img/nope.nii.gz" and failures[1]["detail"].startswith("img/corrupt.nii.gz: ")


def test_failure_details_name_dicom_files_as_written(tmp_path):
    """A file inside a DICOM series folder is named under the folder's image_path."""
    from tte_scale.sharding.samples import as_written

    folder = tmp_path / "cohort" / "dicom" / "s1"
    assert (
        as_written(f"{folder}/IM0003.dcm: InvalidDicomError", folder, "dicom/s1/")
        == "dicom/s1/IM0003.dcm: InvalidDicomError"
    )
    assert as_written(f"{folder}: 2 series", folder, "dicom/s1") == "dicom/s1: 2 series"
    assert as_written(str(folder), folder, "dicom/s1") == "dicom/s1"
    # a sibling whose name only starts the same is not this scan's path
    assert as_written(f"{folder}0/x.dcm: E", folder, "dicom/s1") == f"{folder}0/x.dcm: E"
