"""eval.embed: verified reads and an embedding cache keyed by everything it depends on."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from support.shards import write_shards

from tte_scale.data import DataIntegrityError
from tte_scale.eval.embed import embed_shards, embedding_key

SPLITS = ("train", "tuning", "held_out")


class Probe(torch.nn.Module):
    """A tiny 'encoder' that counts its calls: mean and std of the volume, times a weight."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([scale, 2.0 * scale]))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        flat = x.flatten(1)
        return torch.stack([flat.mean(1), flat.std(1)], 1) * self.w


@pytest.fixture
def shards(tmp_path):
    write_shards(
        tmp_path / "shards", n=9, shape=(4, 6, 5), splits=[s for s in SPLITS for _ in range(3)], zarr_shard_rows=1
    )
    return tmp_path / "shards"


def embed(enc, shards, cache, **kw):
    return embed_shards(enc, shards, SPLITS, batch_size=2, cache_dir=cache, name="m", progress=False, **kw)


def test_cache_hit_only_for_the_same_key(shards, tmp_path):
    cache = tmp_path / "emb"
    enc = Probe()
    a = embed(enc, shards, cache)
    calls = enc.calls
    b = embed(enc, shards, cache)
    assert enc.calls == calls  # read back, not recomputed
    for s in SPLITS:
        np.testing.assert_array_equal(a.features[s], b.features[s])
    other = Probe(scale=3.0)  # same class and name, other weights: another file
    c = embed(other, shards, cache)
    assert other.calls > 0 and not np.allclose(c.features["train"], a.features["train"])
    embed(enc, shards, cache, hu_window=(-500.0, 500.0))
    assert len(list(cache.glob("m-*.npz"))) == 3


def test_key_names_what_the_embeddings_depend_on(shards):
    key = embedding_key(Probe(), shards, SPLITS, (-1000, 1000), "cpu")
    assert set(key) == {"version", "encoder", "shards_manifest_sha256", "hu_window", "splits", "device_type"}
    assert key != embedding_key(Probe(scale=2.0), shards, SPLITS, (-1000, 1000), "cpu")


def test_a_cache_file_with_another_key_or_damaged_is_recomputed(shards, tmp_path, caplog):
    cache = tmp_path / "emb"
    enc = Probe()
    ref = embed(enc, shards, cache)
    (path,) = cache.glob("m-*.npz")
    with np.load(path) as z:  # a file whose stored key is not the one wanted (renamed, collided)
        arrays = dict(z)
    key = json.loads(str(arrays["key"]))
    key["hu_window"] = [0.0, 1.0]
    arrays["key"] = np.array(json.dumps(key, sort_keys=True))
    arrays["train/features"] = arrays["train/features"] + 1
    np.savez(path, **arrays)
    calls = enc.calls
    again = embed(enc, shards, cache)
    assert enc.calls > calls and "key differs" in caplog.text
    np.testing.assert_array_equal(again.features["train"], ref.features["train"])
    path.write_bytes(path.read_bytes()[:200])  # truncated
    calls = enc.calls
    embed(enc, shards, cache)
    assert enc.calls > calls and "unreadable cached embeddings" in caplog.text


def test_unreadable_volumes_are_excluded_or_stop_the_run(shards, tmp_path):
    (shards / "zarr" / "volumes" / "c" / "7" / "0" / "0" / "0").unlink()  # a held-out volume
    with pytest.raises(DataIntegrityError, match=r"1 corrupt or missing samples of split 'held_out'.*scan0007"):
        embed(Probe(), shards, None)
    emb = embed(Probe(), shards, None, max_bad_fraction=0.5)
    assert emb.scan_id["held_out"].tolist() == ["scan0006", "scan0008"]
    assert [(e["scan_id"], e["kind"]) for e in emb.excluded] == [("scan0007", "missing")]


def test_weights_digest_reads_zero_dim_buffers():
    """BatchNorm's num_batches_tracked is a 0-dim int64 (DenseNet, ResNet encoders): hashed, and
    a change in it changes the digest."""
    from tte_scale.eval.embed import weights_digest

    bn = torch.nn.BatchNorm3d(4)
    before = weights_digest(bn)
    bn.num_batches_tracked += 1
    assert weights_digest(bn) != before
