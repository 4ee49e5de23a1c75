"""Images in a bucket -> shards in a bucket -> training reads them, through the CLI, against a real
S3 server on localhost (moto's server mode, tests/support/s3_server.py; the clients are the real
s3fs/botocore, configured by AWS_ENDPOINT_URL and the credential variables only).

Also each bad input of the round trip: one line naming the scan or URL, exit 2, nothing written.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.cohort import SHARD_SET, make_cohort
from support.phantoms import FAKE_PHI
from support.s3_server import S3Server

pytestmark = [pytest.mark.slow, pytest.mark.dist]

IMAGES = "cohort-images"
TRAIN_SET = [
    "data.num_workers=1", "data.shuffle_window=8", "model.name=vit3d_tiny", "model.img_size=[12,24,24]",
    "model.patch_size=[4,8,8]", "model.embed_dim=32", "model.depth=2", "model.num_heads=2", "head.rank=8",
    "head.bias_prefit=false", "optim.global_batch_size=4", "optim.warmup_steps=1", "max_steps=3",
    "eval.every_steps=3", "eval.max_batches=1", "checkpoint.every_steps=3", "telemetry.progress_bar=false",
    "telemetry.tensorboard=false", "zero.precision=fp32", "device=cpu",
]  # fmt: skip


@pytest.fixture(scope="module")
def s3():
    with S3Server() as server:
        yield server


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, s3):
    """A cohort (NIfTI phantoms, a DICOM series full of fake PHI, one missing file) whose images
    are uploaded to a bucket; ``scans_url`` names them by URL, ``scans`` by local path."""
    root = tmp_path_factory.mktemp("objstore")
    scans, labels = make_cohort(root / "cohort", n_subjects=12, dicom_phi=True)
    with s3.environ():
        fs = fsspec.filesystem("s3")
        fs.mkdir(IMAGES)
        for p in sorted((root / "cohort" / "img").rglob("*")):
            if p.is_file():
                fs.put_file(str(p), f"{IMAGES}/{p.relative_to(root / 'cohort').as_posix()}")
    table = pq.read_table(scans)
    urls = [f"s3://{IMAGES}/{p}" for p in table.column("image_path").to_pylist()]
    scans_url = root / "tables" / "scans.parquet"  # elsewhere: nothing of the images is local to it
    scans_url.parent.mkdir()
    pq.write_table(
        table.set_column(table.schema.get_field_index("image_path"), "image_path", pa.array(urls)), scans_url
    )
    return {"root": root, "scans": scans, "scans_url": scans_url, "labels": labels}


def cli(cli_cmd, env, *args, timeout=600):
    return subprocess.run([*cli_cmd, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)


def shard_args(scans, labels, out, *extra):
    sets = [a for s in SHARD_SET for a in ("--set", s)]
    return ["shard", "--scans", scans, "--labels", labels, "--out", out, "--no-progress", *sets, *extra]


def tree(root: Path, dirs=("wds", "zarr")) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for d in dirs
        for p in sorted((root / d).rglob("*"))
        if p.is_file()
    }


def remote_tree(url: str) -> dict[str, str]:
    fs = fsspec.filesystem("s3")
    base = url[len("s3://") :]
    return {p[len(base) + 1 :]: hashlib.sha256(fs.cat_file(p)).hexdigest() for p in fs.find(base)}


def test_images_in_a_bucket_to_shards_in_a_bucket_to_training(s3, cohort, cli_cmd, tmp_path):
    env = {**s3.env(), "RAY_USAGE_STATS_ENABLED": "0"}
    out, staging = "s3://shards-out/build", tmp_path / "staging"
    with s3.environ():
        fsspec.filesystem("s3").mkdir("shards-out")
    # Ray workers read the images: the endpoint and credentials reach them through the environment
    res = cli(
        cli_cmd, env, *shard_args(cohort["scans_url"], cohort["labels"], out, "--staging", staging, "--workers", 1)
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "failed 1" in res.stdout and f"published to {out}" in res.stderr
    assert f"in object storage, under s3://{IMAGES}/img" in res.stderr
    for phi in FAKE_PHI:
        assert phi not in res.stdout + res.stderr
    build = json.loads((staging / "manifest" / "build.json").read_text())
    assert [(f["reason"], f["detail"]) for f in build["failures"]] == [
        ("file_not_found", f"s3://{IMAGES}/img/nope.nii.gz")
    ]

    # the same images read from disk give byte-identical shards and samples table
    from tte_scale.config import load_config
    from tte_scale.sharding.config import ShardConfig
    from tte_scale.sharding.job import build as build_local

    local = tmp_path / "local"
    build_local(
        cohort["scans"], cohort["labels"], local, load_config(ShardConfig, None, SHARD_SET), workers=0, progress=False
    )
    assert tree(staging) == tree(local) and tree(local)
    for table in ("samples.parquet", "shards.parquet"):
        assert (staging / "manifest" / table).read_bytes() == (local / "manifest" / table).read_bytes()
    with s3.environ():
        remote = remote_tree(out)
    staged = tree(staging, ("wds", "zarr", "manifest"))
    assert {k: v for k, v in remote.items() if k in staged} == staged
    assert (
        {".tte_scale_output.json", "_state/plan.json", "_state/published.json"}
        <= set(remote)
        <= set(staged)
        | {
            ".tte_scale_output.json",
            "_state/plan.json",
            "_state/published.json",
        }
    )

    # a re-run keeps everything: the staged build verified by sha256, the objects by size and checksum
    res = cli(
        cli_cmd, env, *shard_args(cohort["scans_url"], cohort["labels"], out, "--staging", staging, "--workers", 0)
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert ": 0 file(s) uploaded" in res.stderr and f"{len(staged) + 2} already there" in res.stderr

    # training reads the WebDataset shards from the bucket (one DataLoader worker, forked)
    pre = tmp_path / "pretrain"
    sets = [f"out_dir={pre}", f"data.shards_dir={out}", f"data.labels_dir={cohort['labels']}", "data.format=wds"]
    sets += [f"data.cache_dir={tmp_path / 'cache'}", *TRAIN_SET]
    res = cli(cli_cmd, env, "train", "--config", "configs/pretrain/demo.yaml", *[a for s in sets for a in ("--set", s)])
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = [json.loads(line) for line in (pre / "metrics.jsonl").read_text().splitlines()]
    assert max(m.get("step", 0) for m in metrics) == 3
    assert (pre / "encoder" / "model.safetensors").is_file()
    assert any(p.name.endswith(".tar") for p in (tmp_path / "cache").iterdir())

    # evaluation's embeddings read the Zarr copy from the bucket: the same features as from disk
    from tte_scale.eval.embed import embed_shards
    from tte_scale.models import load_pretrained

    encoder = load_pretrained(pre / "encoder")
    with s3.environ():
        remote_emb = embed_shards(encoder, out, ("train", "tuning"), batch_size=2, progress=False)
    local_emb = embed_shards(encoder, str(local), ("train", "tuning"), batch_size=2, progress=False)
    for split in ("train", "tuning"):
        assert list(remote_emb.scan_id[split]) == list(local_emb.scan_id[split])
        np.testing.assert_array_equal(remote_emb.features[split], local_emb.features[split])


@pytest.mark.parametrize(
    "case",
    ["image_bucket_missing", "no_credentials", "out_bucket_missing", "no_staging", "out_holds_foreign_shards"],
)
def test_bad_inputs_one_line_exit_2_nothing_written(s3, cohort, cli_cmd, tmp_path, case):
    env = {**s3.env(), "RAY_USAGE_STATS_ENABLED": "0"}
    scans, out, extra = cohort["scans_url"], "s3://shards-bad/build", ["--staging", tmp_path / "staging"]
    with s3.environ():
        fs = fsspec.filesystem("s3")
        if not fs.exists("shards-bad"):
            fs.mkdir("shards-bad")
    expect = []
    if case == "image_bucket_missing":
        table = pq.read_table(scans)
        paths = [p.replace(f"s3://{IMAGES}/", "s3://no-such-images/") for p in table.column("image_path").to_pylist()]
        scans = tmp_path / "scans.parquet"
        pq.write_table(
            table.set_column(table.schema.get_field_index("image_path"), "image_path", pa.array(paths)), scans
        )
        expect = ["row 0 (scan_id 's00.scan0/a%')", "s3://no-such-images/img/0_0.nii.gz", "does not exist"]
    elif case == "no_credentials":
        env = {**s3.env(credentials=False), "RAY_USAGE_STATS_ENABLED": "0"}
        expect = ["row 0 (scan_id 's00.scan0/a%')", f"s3://{IMAGES}/img/0_0.nii.gz", "no credentials found"]
    elif case == "out_bucket_missing":
        out = "s3://no-such-out/build"
        expect = ["--out s3://no-such-out/build", "does not exist"]
    elif case == "no_staging":
        extra = []
        expect = [f"--out {out}: a URL; give --staging DIR"]
    elif case == "out_holds_foreign_shards":
        with s3.environ():
            fsspec.filesystem("s3").pipe_file("shards-bad/build/wds/shard-000000.tar", b"someone else's")
        expect = ["--out s3://shards-bad/build: holds wds/ with no .tte_scale_output.json", "refusing"]
    with s3.environ():
        before = remote_tree(out) if fsspec.filesystem("s3").exists(out.split("://")[1].split("/")[0]) else {}
    res = cli(cli_cmd, env, *shard_args(scans, cohort["labels"], out, "--workers", 0, *extra))
    assert res.returncode == 2, res.stderr[-3000:]
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tte-scale shard: error: "), res.stderr[-3000:]
    for part in expect:
        assert part in lines[0], lines[0]
    assert not (tmp_path / "staging").exists()
    with s3.environ():
        after = remote_tree(out) if fsspec.filesystem("s3").exists(out.split("://")[1].split("/")[0]) else {}
    assert after == before
