"""A small build pinned by digest: the bytes of every shard file, and the manifest's content.

Pinned on the code before the formats module, the Zarr group metadata and the job refactor
(issue 22): those changes must leave every file that existed byte-identical. New files (group
metadata of `tte/`, `bench/`) may appear; none may change. The file bytes depend on the codec
libraries, so they are compared only under the versions they were pinned with; the decoded
content (manifest tables, which hold the sha256 of every decoded volume) is compared always.
"""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import version
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support.cohort import SHARD_SET, make_cohort

from tte_scale.config import load_config
from tte_scale.sharding.config import ShardConfig
from tte_scale.sharding.job import build

PINNED_WITH = {"numcodecs": "0.16.6", "zarr": "3.1.6"}
PINNED_FILES = {
    "wds/shard-000000.tar": "fe2820c2b68dfcfdb3732973d3b87e36178d1f183be2056cb05bf89bdd70a24a",
    "wds/shard-000001.tar": "cd71dca528bf919648ee5f7aa9b01c33742935152b3e4ee28ae06ab565a04bbe",
    "wds/shard-000002.tar": "381dfef2a9c8941a9ae1e33206615b731b1eb42b49cda8c5b7e54cf944342a77",
    "wds/shard-000004.tar": "e262945ab8a4527fcb67b0277a8445a28b722d6f1104f38839875989c014e1d9",
    "wds/shard-000005.tar": "124d2783954d104f7d00969e2f56d6996437b58dc48c3daf4400a1d05724120f",
    "zarr/bench/event/c/0/0": "ee3d74455000a3ffc531b316c2469b7d7d497ee2bb5d2b644877323cd050a212",
    "zarr/bench/event/zarr.json": "da7fcc9b16c391e9b3c3e638cb52cf2e4d1371e40d142628e5808fc4ff9e2f7a",
    "zarr/bench/label/c/0/0": "52504bee7c4f9c6f3db59ec58dcbe80626060a313f35f24bb8ce6bf258dcfc62",
    "zarr/bench/label/zarr.json": "135727aab2d7bbad995d99b7a4ba5685e7fac8f8e9cefb86d5ce006d6de5dcb4",
    "zarr/bench/time/c/0/0": "2d2497bbb3db89eddbc1ca1c04d20cdccf7a3d78282487826534af7e66a4fbf0",
    "zarr/bench/time/zarr.json": "fa9bed37518f7e93074573208fc4a2d0e74487eed9dd3932f5f7e0447bc0b411",
    "zarr/tte/event/c/0/0": "36dab9870b83839e4914bdfbdacc1a66b75c998a3a81c192238d441bfdc97f65",
    "zarr/tte/event/zarr.json": "61a3a95a54452ae1ae8a6d64ea01125db430af97e849da921f23e9337d0739e2",
    "zarr/tte/time/c/0/0": "8ebc727a828046166f2c7d86849c8cc9e8bc4b51b73edb4fa903f810f7fef138",
    "zarr/tte/time/zarr.json": "a363fb8db154e5c947b15baa56de69576e46c825f09dac921900c46133cb35c6",
    "zarr/volumes/c/0/0/0/0": "f0361016d351d5e2e54958fe8f9a3957feb51c004057008c0a6e8cf40b22bac2",
    "zarr/volumes/c/1/0/0/0": "90a78c07becfc5522d821d0e0f70956ae6b174b0b8072625c29583a50003cbfd",
    "zarr/volumes/c/2/0/0/0": "9ff107372d67460808d8a72bf5d2a3bab1938e524380655892b6f42bc8867cbc",
    "zarr/volumes/zarr.json": "b6e13fee235863cbee054a2f447ca3f4c309e49f95f50db4ede06af92c3a55a5",
    "zarr/zarr.json": "c31e21ba5c2bd74b786e2a1cce56b14337381cd874530260d110c689556bce5d",
}
# sha256 of json.dumps(table.to_pylist(), sort_keys=True): content, not Parquet bytes (those
# carry the pyarrow version that wrote them)
PINNED_TABLES = {
    "samples": "caa9329398f23e550e75b90295a49212acd46a6f6a055f926226dc5fbc9bc848",
    "shards": "41a1928b6e3a97e64b4fca3a4371cf302c9301aa5368e9b62eb793cb12856db0",
}
PINNED_COUNTS = {
    "compression_ratio": 32.3242,
    "failed": 2,
    "labelled": 11,
    "not_labelled": 1,
    "ok": 9,
    "scans_in_table": 12,
    "wds_shards": 5,
    "zarr_shard_files": 3,
}


@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("golden")
    scans, labels = make_cohort(root, n_subjects=6, dicom_phi=True, broken=True, corrupt=True)
    out = root / "out"
    build(scans, labels, out, load_config(ShardConfig, None, SHARD_SET), workers=0, progress=False)
    return out


def table_digest(path: Path) -> str:
    return hashlib.sha256(json.dumps(pq.read_table(path).to_pylist(), sort_keys=True).encode()).hexdigest()


def test_manifest_content_is_pinned(small_build):
    out = small_build
    assert {n: table_digest(out / "manifest" / f"{n}.parquet") for n in PINNED_TABLES} == PINNED_TABLES
    b = json.loads((out / "manifest" / "build.json").read_text())
    assert b["counts"] == PINNED_COUNTS
    assert [(f["row"], f["scan_id"], f["reason"], f["detail"]) for f in b["failures"]] == [
        (9, "missing-file", "file_not_found", "img/nope.nii.gz"),
        (10, "corrupt", "unreadable_file", "img/corrupt.nii.gz: ImageFileError"),
    ]


def test_shard_files_are_byte_identical_to_the_pinned_build(small_build):
    got = {lib: version(lib) for lib in PINNED_WITH}
    if got != PINNED_WITH:
        pytest.skip(f"file bytes pinned with {PINNED_WITH}, this environment has {got}")
    out = small_build
    digests = {
        name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in PINNED_FILES if (out / name).is_file()
    }
    assert digests == PINNED_FILES
