"""The Zarr stores are plain Zarr v3 hierarchies: every group has its metadata, so stock zarr
lists all of them without warnings (and a second implementation, tensorstore, reads them)."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import zarr
from support.cohort import SHARD_SET, make_cohort, write_labels

from tte_scale.config import load_config
from tte_scale.sharding.config import ShardConfig
from tte_scale.sharding.job import build
from tte_scale.sharding.labels import read_labels
from tte_scale.sharding.relabel import relabel

CFG = load_config(ShardConfig, None, SHARD_SET)
SHARD_STORE = ["bench", "bench/event", "bench/label", "bench/time", "tte", "tte/event", "tte/time", "volumes"]


def hierarchy(path) -> list[str]:
    """Every node stock zarr finds under ``path``; any warning (an unrecognized folder) fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        group = zarr.open_group(str(path), mode="r")
        return sorted(name for name, _ in group.members(max_depth=None))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("zc")
    scans, labels = make_cohort(root, n_subjects=3, broken=False)
    build(scans, labels, root / "out", CFG, workers=0, progress=False)
    return root, labels


def test_shard_store_lists_every_group_and_array(small):
    root, _ = small
    assert hierarchy(root / "out" / "zarr") == SHARD_STORE
    assert sorted(zarr.open_group(str(root / "out" / "zarr"), mode="r").keys()) == ["bench", "tte", "volumes"]


def test_relabelled_store_lists_every_group_and_array(small, tmp_path):
    root, labels = small
    out = tmp_path / "out"
    shutil.copytree(root / "out", out)
    old = read_labels(labels)
    new = write_labels(tmp_path / "new", old.scan_id, old.subject_id.tolist(), old.split, K=5, seed=3)
    relabel(out, new, progress=False)
    assert hierarchy(out / "zarr") == SHARD_STORE
    np.testing.assert_array_equal(
        zarr.open_group(str(out / "zarr"), mode="r")["tte/time"][...], read_labels(new).time_NK
    )


def test_tensorstore_opens_the_label_groups_arrays(small):
    ts = pytest.importorskip("tensorstore")
    root, _ = small
    ref = zarr.open_group(str(root / "out" / "zarr"), mode="r")
    for name in ("bench/label", "tte/event"):
        arr = ts.open(
            {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(root / "out" / "zarr" / name)}}, read=True
        ).result()
        np.testing.assert_array_equal(arr.read().result(), ref[name][...])


def test_labels_tte_zarr_lists_its_arrays(tmp_path):
    """The labels stage's store (written by tte_scale.ehr) has no intermediate groups to miss."""
    from tte_scale.ehr.store import open_tte_arrays

    time, event = open_tte_arrays(tmp_path / "tte.zarr", 4, 3, 2)
    time[...] = 1.0
    event[...] = True
    assert hierarchy(tmp_path / "tte.zarr") == ["event", "time"]
