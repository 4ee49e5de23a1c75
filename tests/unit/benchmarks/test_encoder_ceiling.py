"""benchmarks/encoder_ceiling.py: an encoder trained directly on a truth column, on real shards."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.shards import phantom, write_shards
from tte_scale.benchmarks import encoder_ceiling
from tte_scale.errors import InputError

TINY = [
    "model.img_size=null", "model.patch_size=[4,8,8]", "model.embed_dim=16", "model.depth=1", "model.num_heads=2",
    "model.drop_path_rate=0.0", "optim.global_batch_size=4", "optim.warmup_steps=2", "optim.lr=3e-3",
]  # fmt: skip


@pytest.fixture
def cohort(tmp_path):
    """36 scans whose brightness inside the body follows `glow`; `other` is unrelated to the images."""
    rng = np.random.default_rng(0)
    n = 36
    glow = rng.uniform(0, 1, n)
    vols = []
    for g in glow:
        v = phantom((8, 16, 16), rng).astype(np.float32)
        v[v > -900] += 400 * g
        vols.append(np.round(v).astype(np.int16))
    ids = [f"s{i:03d}" for i in range(n)]
    write_shards(tmp_path / "shards", n=n, shape=(8, 16, 16), splits=["train"] * 24 + ["held_out"] * 12,
                 volumes=vols, scan_ids=ids, samples_per_shard=12)  # fmt: skip
    (tmp_path / "truth").mkdir()
    table = {"scan_id": ids, "glow": glow, "other": rng.normal(size=n), "text": ["a"] * n}
    pq.write_table(pa.table(table), tmp_path / "truth" / "scans.parquet")
    return tmp_path


def _args(c, *extra):
    sets = [a for s in TINY for a in ("--set", s)]
    return ["--shards", str(c / "shards"), "--truth", str(c / "truth"), "--out", str(c / "out"), *sets, *extra]


def test_learns_a_target_the_images_show(cohort):
    assert encoder_ceiling.main(_args(cohort, "--target", "glow", "--steps", "120", "--eval-every", "60")) == 0
    r = json.loads((cohort / "out" / "encoder_ceiling_glow.json").read_text())
    assert [c["step"] for c in r["curve"]] == [0, 60, 120]
    assert r["scans"] == {"train": 24, "held_out": 12} and r["scans_left_out"] == {"train": 0, "held_out": 0}
    assert r["final_held_out_spearman"] > 0.7, r["curve"]
    assert r["curve"][-1]["train_mse_rel"] < 0.2  # it fits the train scans (1.0: the mean)
    assert "| 120 |" in (cohort / "out" / "encoder_ceiling_glow.md").read_text()


@pytest.mark.parametrize(
    ("target", "message"),
    [("missing", "no column 'missing'"), ("text", "row 0 (scan_id s000), field text: 'a' is not a number")],
)
def test_a_target_it_cannot_use_is_one_line(cohort, target, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        encoder_ceiling.main(_args(cohort, "--target", target, "--steps", "1"))
    assert not (cohort / "out").exists()


def test_a_scan_without_truth_is_named(cohort):
    t = pq.read_table(cohort / "truth" / "scans.parquet").slice(1)
    pq.write_table(t, cohort / "truth" / "scans.parquet")
    with pytest.raises(InputError, match="no row for scan_id s000"):
        encoder_ceiling.main(_args(cohort, "--target", "glow", "--steps", "1"))


def test_too_little_memory_is_refused_before_reading(cohort):
    with pytest.raises(InputError, match="over --max-gib"):
        encoder_ceiling.main(_args(cohort, "--target", "glow", "--steps", "1", "--max-gib", "0.00001"))


def test_augmentation_follows_the_pretraining_settings(cohort):
    sets = ["--set", "data.augmentation=true", "--set", "data.flip_axes=[0,2]"]
    assert encoder_ceiling.main(_args(cohort, "--target", "glow", "--steps", "4", "--tag", "aug", *sets)) == 0
    r = json.loads((cohort / "out" / "encoder_ceiling_glow_aug.json").read_text())
    assert r["augmentation"] == {"enabled": True, "flip_axes": [0, 2]}
    assert all(np.isfinite(c["held_out_spearman"]) for c in r["curve"])
