"""`tte-scale shard --out URL` in this process (--workers 0): a publish cut off half-way resumes,
and `--relabel` of a published build updates the URL; the loader reads the result."""

from __future__ import annotations

import json

import fsspec
import pytest
from support.cohort import SHARD_SET, make_cohort, write_labels

from tte_scale.remote import StorageError
from tte_scale.sharding import publish
from tte_scale.sharding.cli import main as shard_main
from tte_scale.sharding.labels import read_labels


def shard(scans, labels, out, staging, *extra):
    sets = [a for s in SHARD_SET for a in ("--set", s)]
    argv = ["--labels", str(labels), "--out", out, "--staging", str(staging), "--no-progress", *sets, *extra]
    if scans is not None:
        argv += ["--scans", str(scans), "--workers", "0"]
    return shard_main(argv)


@pytest.fixture
def cohort(tmp_path):
    return make_cohort(tmp_path / "cohort", n_subjects=8)


def test_interrupted_publish_resumes_with_what_was_uploaded(s3, bucket, cohort, tmp_path, monkeypatch, capsys):
    scans, labels = cohort
    out, staging = f"{bucket}/build", tmp_path / "staging"
    real_upload, done = publish.upload, []

    def cut_off(local, url, *a, **k):  # the network goes after 4 files (the transfers themselves are real)
        if len(done) == 4 and not url.endswith("published.json"):
            raise StorageError("transient", url, "failed 4 time(s), last: ConnectionResetError")
        if not url.endswith("published.json"):
            done.append(url)
        return real_upload(local, url, *a, **k)

    monkeypatch.setattr(publish, "upload", cut_off)
    assert shard(scans, labels, out, staging, "--set", "storage.concurrency=1") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"sharding: error: --out {out}/") and "a re-run uploads what is missing" in err
    fs = fsspec.filesystem("s3")
    ledger = json.loads(fs.cat_file(f"{bucket[5:]}/build/_state/published.json"))
    assert len(ledger["objects"]) == 4 and not fs.exists(f"{bucket[5:]}/build/manifest/samples.parquet")

    monkeypatch.setattr(publish, "upload", real_upload)
    assert shard(scans, labels, out, staging) == 0
    line = [ln for ln in capsys.readouterr().err.splitlines() if "published to" in ln][0]
    assert "4 already there" in line
    from tte_scale.data import LoaderConfig, build_loader

    batches = list(build_loader(out, LoaderConfig(format="wds", batch_size=1, num_workers=0, shuffle=False)))
    assert batches and all(b["volume"].shape[2:] == (12, 24, 24) for b in batches)


def test_relabel_of_a_published_build_updates_the_url(s3, bucket, cohort, tmp_path, capsys):
    scans, labels = cohort
    out, staging = f"{bucket}/build", tmp_path / "staging"
    assert shard(scans, labels, out, staging) == 0
    old = read_labels(labels)
    new = write_labels(tmp_path / "new", old.scan_id, old.subject_id.tolist(), old.split, K=9, seed=7)
    assert shard(None, new, out, staging, "--relabel") == 0
    assert "published to" in capsys.readouterr().err
    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    assert json.loads(fs.cat_file(f"{bucket[5:]}/build/manifest/build.json"))["wds_labels"] == "sidecar"
    assert fs.find(f"{bucket[5:]}/build/wds-labels")
    from tte_scale.data import LoaderConfig, build_loader

    for fmt in ("wds", "zarr"):
        loader = build_loader(out, LoaderConfig(format=fmt, batch_size=1, num_workers=0, shuffle=False))
        for b in loader:
            row = int(b["row"][0])
            assert b["tte_time"].shape == (1, 9)
            assert (b["tte_time"][0].numpy() == new_time(new)[row]).all()
        assert loader.stats()["replaced_corrupt"] == 0
    assert shard_main(["--relabel", "--labels", str(new), "--out", out]) == 2
    assert "a URL; give --staging DIR" in capsys.readouterr().err
    assert shard(None, new, out, tmp_path / "empty", "--relabel") == 2
    assert "holds no build" in capsys.readouterr().err


def new_time(labels_dir):
    return read_labels(labels_dir).time_NK


def test_staging_only_with_a_url_and_never_a_url(tmp_path, cohort, capsys):
    scans, labels = cohort
    argv = ["--scans", str(scans), "--labels", str(labels), "--workers", "0", "--no-progress"]
    assert shard_main([*argv, "--out", str(tmp_path / "o"), "--staging", str(tmp_path / "s")]) == 2
    assert "only with --out URL" in capsys.readouterr().err
    assert shard_main([*argv, "--out", "s3://b/o", "--staging", "s3://b/s"]) == 2
    assert "--staging s3://b/s: must be a local folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "s").exists()
