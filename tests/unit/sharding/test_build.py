"""The sharding job in-process (--workers 0): formats, manifest, failures, resume, relabel, PHI."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
import zarr
from support.cohort import SHARD_SET, make_cohort, write_labels
from support.phantoms import FAKE_PHI

from tte_scale.config import load_config
from tte_scale.errors import InputError
from tte_scale.sharding.codec import decode
from tte_scale.sharding.config import ShardConfig
from tte_scale.sharding.job import build
from tte_scale.sharding.labels import read_labels
from tte_scale.sharding.plan import make_plan, read_scans
from tte_scale.sharding.relabel import relabel

CFG = load_config(ShardConfig, None, SHARD_SET)


def tree_bytes(root: Path, skip=("_state",)) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] not in skip
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    scans, labels = make_cohort(root, dicom_phi=True)
    out = root / "out"
    summary = build(scans, labels, out, CFG, workers=0, progress=False)
    return scans, labels, out, summary


def test_plan_is_split_pure_and_patient_level(built):
    scans, labels, _, _ = built
    lab = read_labels(labels)
    plan = make_plan(read_scans(scans), lab, 2, 4)
    for rows, split in zip(plan.wds_shards, plan.wds_split):
        assert {plan.items[r].split for r in rows} == {split}
        assert rows == sorted(rows)
    subj_splits = {}
    for it in plan.items:
        subj_splits.setdefault(it.subject_id, set()).add(it.split)
    assert all(len(s) == 1 for s in subj_splits.values())
    assert plan.not_labelled == ["not-labelled"]
    bad = read_labels(labels)
    bad.split[1] = "held_out" if bad.split[0] != "held_out" else "train"
    bad.subject_id[1] = bad.subject_id[0]
    scan_table = read_scans(scans)
    scan_table["subject_id"][scan_table["scan_id"].index(bad.scan_id[1])] = int(bad.subject_id[0])
    with pytest.raises(InputError, match="is in splits"):
        make_plan(scan_table, bad, 2, 4)


def test_outputs_readable_by_stock_tools_and_consistent(built):
    scans, labels, out, summary = built
    lab = read_labels(labels)
    samples = pq.read_table(out / "manifest" / "samples.parquet").to_pylist()
    assert summary["ok"] == 12 and summary["failed"] == 1 and summary["not_labelled"] == 1
    failed = [s for s in samples if s["status"] == "failed"]
    assert [(s["scan_id"], s["reason"], s["wds_shard"]) for s in failed] == [("missing-file", "file_not_found", None)]
    root = zarr.open_group(str(out / "zarr"), mode="r")
    vols = root["volumes"]
    assert vols.shape == (len(samples), 12, 24, 24) and vols.chunks == (1, 12, 24, 24) and vols.dtype == np.int16
    assert root.attrs["bench_tasks"] == lab.bench_tasks and root.attrs["num_tasks"] == lab.time_NK.shape[1]
    np.testing.assert_array_equal(root["tte/time"][...], lab.time_NK)
    np.testing.assert_array_equal(root["bench/label"][...], lab.bench_label_NT)

    by_key = {}
    for tar in sorted((out / "wds").glob("*.tar")):
        names = tarfile.open(tar).getnames()  # plain tar can list it
        assert names[1].endswith(".volume.bin") and names[0].endswith(".header.json")
        for s in wds.WebDataset(str(tar), shardshuffle=False, empty_check=False):
            by_key[s["__key__"]] = s
    ok = [s for s in samples if s["status"] == "ok"]
    assert len(by_key) == len(ok)
    for s in ok:
        key = s["scan_id"].replace("%", "%25").replace(".", "%2E").replace("/", "%2F")
        sample = by_key[key]
        header = json.loads(sample["header.json"])
        assert header["scan_id"] == s["scan_id"] and header["row"] == s["row"] and header["orientation"] == "SAL"
        vol = decode(sample["volume.bin"], header["codec"], header["shape"])
        np.testing.assert_array_equal(vol, vols[s["row"]])  # WebDataset and Zarr hold the same volume
        assert hashlib.sha256(vol.tobytes()).hexdigest() == s["volume_sha256"]
        np.testing.assert_array_equal(np.load(io.BytesIO(sample["tte_time.npy"])), lab.time_NK[s["row"]])
        np.testing.assert_array_equal(np.load(io.BytesIO(sample["bench_label.npy"])), lab.bench_label_NT[s["row"]])
    assert (vols[failed[0]["row"]] == 0).all()  # hole at the fill value
    shards = pq.read_table(out / "manifest" / "shards.parquet").to_pylist()
    for sh in shards:
        assert hashlib.sha256((out / sh["path"]).read_bytes()).hexdigest() == sh["sha256"]


def test_no_phi_anywhere_in_the_output(built, capsys):
    _, _, out, _ = built
    blobs = [p.read_bytes() for p in out.rglob("*") if p.is_file()]
    # volumes are compressed: decode every WebDataset volume too
    for tar in (out / "wds").glob("*.tar"):
        for s in wds.WebDataset(str(tar), shardshuffle=False, empty_check=False):
            h = json.loads(s["header.json"])
            blobs.append(decode(s["volume.bin"], h["codec"], h["shape"]).tobytes())
    captured = capsys.readouterr()
    blobs += [captured.out.encode(), captured.err.encode()]
    for phi in FAKE_PHI:
        for blob in blobs:
            assert phi.encode() not in blob and phi.encode("utf-16-le") not in blob
    header = [
        json.loads(s["header.json"])
        for t in (out / "wds").glob("*.tar")
        for s in wds.WebDataset(str(t), shardshuffle=False, empty_check=False)
        if s["__key__"] == "dicom-phi"
    ]
    assert header[0]["scanner"] == {"manufacturer": "ACME", "kvp": 120.0, "slice_thickness_mm": 5.0}


def test_resume_redoes_partial_shards_only(built, tmp_path):
    scans, labels, out, _ = built
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    (copy / "_state" / "wds-000001.json").unlink()  # as if killed between rename and record
    (copy / "_state" / "zarr-000002.json").unlink()
    sorted((copy / "wds").glob("*.tar"))[-1].write_bytes(b"truncated")  # record now disagrees
    (copy / "wds" / "shard-000004.tar.tmp-deadbeef").write_bytes(b"partial")  # killed writer
    s = build(scans, labels, copy, CFG, workers=0, progress=False)
    assert s["resumed"] and s["processed"] < 14 and s["skipped_shards"] > 0
    assert tree_bytes(copy) == tree_bytes(out)


def test_rerun_with_other_config_refuses_without_overwrite(built, tmp_path):
    scans, labels, out, _ = built
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    other = load_config(ShardConfig, None, SHARD_SET + ["imaging.hu_max=2000"])
    with pytest.raises(InputError, match="--overwrite"):
        build(scans, labels, copy, other, workers=0, progress=False)


def test_relabel_keeps_volumes(built, tmp_path):
    scans, labels, out, _ = built
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    old = read_labels(labels)
    new_dir = write_labels(tmp_path / "new", old.scan_id, old.subject_id.tolist(), old.split, K=9, seed=7)
    before = tree_bytes(copy)
    relabel(copy, new_dir, progress=False)
    after = tree_bytes(copy)
    for name, digest in before.items():
        if name.startswith(("wds/", "zarr/volumes")):
            assert after[name] == digest, name
    new = read_labels(new_dir)
    root = zarr.open_group(str(copy / "zarr"), mode="r")
    np.testing.assert_array_equal(root["tte/time"][...], new.time_NK)
    assert root.attrs["num_tasks"] == 9
    build_json = json.loads((copy / "manifest" / "build.json").read_text())
    assert build_json["wds_labels"] == "sidecar"
    samples = pq.read_table(copy / "manifest" / "samples.parquet").to_pylist()
    for tar in sorted((copy / "wds-labels").glob("*.tar")):
        vol_keys = [
            s["__key__"] for s in wds.WebDataset(str(copy / "wds" / tar.name), shardshuffle=False, empty_check=False)
        ]
        side = list(wds.WebDataset(str(tar), shardshuffle=False, empty_check=False))
        assert [s["__key__"] for s in side] == vol_keys
        for s in side:
            row = next(
                r["row"]
                for r in samples
                if r["scan_id"].replace("%", "%25").replace(".", "%2E").replace("/", "%2F") == s["__key__"]
            )
            assert np.load(io.BytesIO(s["tte_time.npy"])).shape == (9,)
            np.testing.assert_array_equal(np.load(io.BytesIO(s["tte_time.npy"])), new.time_NK[row])
    with pytest.raises(InputError, match="rows differ"):
        relabel(
            copy,
            write_labels(tmp_path / "bad", old.scan_id[:-1], old.subject_id.tolist()[:-1], old.split[:-1]),
            progress=False,
        )


def test_zarr_volume_chunks_end_with_crc32c(built):
    _, _, out, _ = built
    meta = json.loads((out / "zarr" / "volumes" / "zarr.json").read_text())
    sharding_codec = meta["codecs"][0]
    assert sharding_codec["name"] == "sharding_indexed"
    assert sharding_codec["configuration"]["codecs"][-1]["name"] == "crc32c"


def test_zarr_store_readable_by_tensorstore(built):
    ts = pytest.importorskip("tensorstore")
    _, _, out, _ = built
    ref = zarr.open_group(str(out / "zarr"), mode="r")
    vols = ts.open(
        {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(out / "zarr" / "volumes")}}, read=True
    ).result()
    assert vols.dtype.numpy_dtype == np.int16 and tuple(vols.shape) == ref["volumes"].shape
    np.testing.assert_array_equal(vols.read().result(), ref["volumes"][...])
    time = ts.open(
        {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(out / "zarr" / "tte" / "time")}}, read=True
    ).result()
    np.testing.assert_array_equal(time.read().result(), ref["tte/time"][...])


def test_moved_cohort_and_absolute_paths_give_the_same_shards(tmp_path):
    """image_path is relative to the scans table's folder: a moved cohort still shards, and a
    table with absolute paths to the same files gives the same bytes."""
    scans, labels = make_cohort(tmp_path / "a", n_subjects=4, broken=False)
    first = build(scans, labels, tmp_path / "out-a", CFG, workers=0, progress=False)
    shutil.move(tmp_path / "a", tmp_path / "moved")
    moved = tmp_path / "moved"
    second = build(moved / "scans.parquet", moved / "labels", tmp_path / "out-moved", CFG, workers=0, progress=False)
    assert first["ok"] == second["ok"] == 6 and second["failed"] == 0
    assert tree_bytes(tmp_path / "out-moved") == tree_bytes(tmp_path / "out-a")

    table = pq.read_table(moved / "scans.parquet")
    absolute = [str((moved / p).resolve()) for p in table["image_path"].to_pylist()]
    elsewhere = tmp_path / "tables" / "scans.parquet"
    elsewhere.parent.mkdir()
    pq.write_table(
        table.set_column(table.schema.get_field_index("image_path"), "image_path", pa.array(absolute, pa.string())),
        elsewhere,
    )
    third = build(elsewhere, moved / "labels", tmp_path / "out-abs", CFG, workers=0, progress=False)
    assert third["ok"] == 6
    assert tree_bytes(tmp_path / "out-abs") == tree_bytes(tmp_path / "out-a")


def test_volume_encoding_is_byte_deterministic():
    """Blosc's threaded compressor stores blocks in completion order, so a multi-block volume
    could encode to different bytes run to run; shards must not (encoding is single-threaded)."""
    import numcodecs.blosc

    from tte_scale.sharding.codec import encode

    vol = np.random.default_rng(0).normal(0, 300, (32, 64, 64)).astype(np.int16)  # several Blosc blocks
    blobs = {encode(vol, CFG.codec) for _ in range(20)}
    assert numcodecs.blosc.use_threads is False
    assert len(blobs) == 1
    np.testing.assert_array_equal(decode(blobs.pop(), CFG.codec, vol.shape), vol)
