"""The loader on what `sharding/` itself writes (not the test writer of tests/support/shards.py).

A small NIfTI cohort (tests/support/cohort.py: scan ids with `.`, `/`, `%`, one
unreadable file) goes through the real sharding job in-process; the loader must serve every `ok`
scan of the split exactly once, the same voxels from WebDataset and Zarr, labels row-aligned with
the labels folder, the fast CRC check on the real manifest, and the relabelled sidecars.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr
from loader_helpers import run_epoch  # noqa: E402
from support.cohort import SHARD_SET, make_cohort, write_labels

from tte_scale.config import load_config  # noqa: E402
from tte_scale.data.tarindex import index_tar  # noqa: E402
from tte_scale.formats.shards import sample_key  # noqa: E402
from tte_scale.sharding.config import ShardConfig  # noqa: E402
from tte_scale.sharding.job import build  # noqa: E402
from tte_scale.sharding.labels import read_labels  # noqa: E402
from tte_scale.sharding.relabel import relabel  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    scans, labels = make_cohort(root, dicom_phi=False, broken=True)
    out = root / "out"
    build(scans, labels, out, load_config(ShardConfig, None, SHARD_SET), workers=0, progress=False)
    samples = pq.read_table(out / "manifest" / "samples.parquet").to_pylist()
    return {"out": out, "labels": labels, "samples": samples}


def _stock_tar_volumes(out: Path) -> dict[str, np.ndarray]:
    """scan id -> volume, read with Python's tarfile and the header's numcodecs codec (not our reader)."""
    import json

    import numcodecs

    vols = {}
    for path in sorted((out / "wds").glob("*.tar")):
        with tarfile.open(path) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
        for name, data in members.items():
            if name.endswith(".header.json"):
                head = json.loads(data)
                enc = members[name.removesuffix("header.json") + "volume.bin"]
                raw = numcodecs.get_codec(head["codec"]).decode(enc)
                vols[head["scan_id"]] = np.frombuffer(raw, dtype=np.int16).reshape(head["shape"])
    return vols


def _assert_true(batches, built, labels_dir):
    labels = read_labels(labels_dir)
    stock = _stock_tar_volumes(built["out"])
    for b in batches:
        for j, (scan_id, row) in enumerate(zip(b["scan_id"], b["row"].tolist())):
            assert labels.scan_id[row] == scan_id
            np.testing.assert_array_equal(b["volume"][j, 0].numpy(), stock[scan_id])
            np.testing.assert_array_equal(b["tte_time"][j].numpy(), labels.time_NK[row])
            np.testing.assert_array_equal(b["tte_event"][j].numpy(), labels.event_NK[row])
            np.testing.assert_array_equal(b["bench_label"][j].numpy(), labels.bench_label_NT[row])


@pytest.mark.parametrize("fmt,workers", [("wds", 0), ("wds", 2), ("zarr", 0), ("zarr", 1)])
def test_every_ok_scan_served_once_with_its_labels(built, fmt, workers):
    ok_train = {s["scan_id"] for s in built["samples"] if s["split"] == "train" and s["status"] == "ok"}
    failed = {s["scan_id"] for s in built["samples"] if s["status"] != "ok"}
    assert failed == {"missing-file"} and len(ok_train) >= 4
    assert all(s["volume_crc32c"] is not None for s in built["samples"] if s["status"] == "ok")
    ids, batches, loader = run_epoch(str(built["out"]), format=fmt, batch_size=1, num_workers=workers, seed=4)
    assert sorted(ids) == sorted(ok_train)  # batch 1: no remainder, every ok scan once, the failed one never
    assert loader.stats()["replaced_corrupt"] == loader.stats()["replaced_missing"] == 0
    _assert_true(batches, built, built["labels"])


def test_wds_and_zarr_agree_and_zarr_matches_the_store(built):
    w_ids, w_b, _ = run_epoch(str(built["out"]), format="wds", split="tuning", batch_size=1, num_workers=0, seed=9)
    z_ids, z_b, _ = run_epoch(str(built["out"]), format="zarr", split="tuning", batch_size=1, num_workers=0, seed=9)
    assert w_ids == z_ids
    store = zarr.open_group(str(built["out"] / "zarr"), mode="r")["volumes"]
    for wb, zb in zip(w_b, z_b):
        assert wb["row"].tolist() == zb["row"].tolist()
        np.testing.assert_array_equal(wb["volume"].numpy(), zb["volume"].numpy())
        np.testing.assert_array_equal(zb["volume"][0, 0].numpy(), store[int(zb["row"][0])])


def test_flipped_volume_byte_caught_by_the_manifest_crc(built, tmp_path, caplog):
    out = tmp_path / "out"
    shutil.copytree(built["out"], out)
    victim = next(s for s in built["samples"] if s["split"] == "train" and s["status"] == "ok")
    tar = out / "wds" / f"shard-{victim['wds_shard']:06d}.tar"
    off, size = index_tar(str(tar)).members[sample_key(victim["scan_id"])]["volume.bin"]
    with open(tar, "r+b") as f:
        f.seek(off + size // 2)
        byte = f.read(1)
        f.seek(off + size // 2)
        f.write(bytes([byte[0] ^ 0x01]))
    with caplog.at_level("WARNING", logger="tte_scale.data"):
        ids, _, loader = run_epoch(str(out), batch_size=1, num_workers=0, max_bad_fraction=0.5)
    assert victim["scan_id"] not in ids and loader.stats()["replaced_corrupt"] == 1
    assert "volume.bin crc32c differs" in caplog.text


def test_relabelled_sidecars_are_served(built, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(built["out"], out)
    old = read_labels(built["labels"])
    new_dir = write_labels(tmp_path / "new", old.scan_id, old.subject_id.tolist(), old.split, K=9, seed=7)
    relabel(out, new_dir, progress=False)
    for fmt in ("wds", "zarr"):
        ids, batches, _ = run_epoch(str(out), format=fmt, batch_size=1, num_workers=0)
        assert batches[0]["tte_time"].shape == (1, 9) and len(ids) == len(set(ids)) >= 4
        new = read_labels(new_dir)
        for b in batches:
            np.testing.assert_array_equal(b["tte_time"][0].numpy(), new.time_NK[int(b["row"][0])])
