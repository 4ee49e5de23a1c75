"""Across epochs: the workers live as long as the loader, and batches (augmented) and the trainer's
own random draws are bitwise the same whatever the number of workers."""

from __future__ import annotations

import multiprocessing as mp

import pytest
import torch
from loader_helpers import assert_batches_true

from tte_scale.data import AugmentConfig, LoaderConfig, augment_batch, build_loader

AUG = AugmentConfig(
    enabled=True, crop_size=(6, 8, 8), flip_axes=(0, 1, 2), flip_prob=0.5, intensity_scale=0.1, intensity_shift=0.1
)
LABELS = ("tte_time", "tte_event", "bench_label", "bench_time", "bench_event", "row")


def _train_like(root: str, fmt: str, workers: int, epochs: int = 2) -> list[dict]:
    """What a training loop sees: each batch augmented with its generator, plus a draw from the
    global torch RNG per step (as dropout / drop-path draw), over `epochs` epochs."""
    torch.manual_seed(123)
    gen = torch.Generator().manual_seed(7)
    loader = build_loader(root, LoaderConfig(format=fmt, batch_size=2, num_workers=workers, seed=4, shuffle_window=5))
    seen = []
    try:
        for _ in range(epochs):
            for b in loader:
                seen.append(
                    {
                        **{k: b[k] for k in (*LABELS, "scan_id", "volume")},
                        "augmented": augment_batch(b, AUG, gen)["volume"],
                        "dropout": torch.rand(8),
                    }
                )
    finally:
        loader.close()
    assert len(seen) == epochs * 6
    return seen


@pytest.mark.parametrize("fmt,workers", [("wds", (0, 1, 2)), ("zarr", (0, 2))])
def test_batches_and_random_draws_bitwise_equal_for_any_worker_count(shards, fmt, workers):
    runs = {w: _train_like(shards["root"], fmt, w) for w in workers}
    ref = runs[0]
    assert_batches_true(ref, shards)
    for w in workers[1:]:
        for step, (a, b) in enumerate(zip(ref, runs[w])):
            assert a["scan_id"] == b["scan_id"], (w, step)
            for key in (*LABELS, "volume", "augmented", "dropout"):
                assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), (w, step, key)


def _children() -> set[int]:
    return {p.pid for p in mp.active_children()}


def test_workers_persist_across_epochs_and_partial_passes(shards):
    root = shards["root"]
    ref_loader = build_loader(root, LoaderConfig(batch_size=2, num_workers=0, seed=9, shuffle_window=5))
    reference = [[s for b in ref_loader for s in b["scan_id"]] for _ in range(3)]  # 3 epochs of 6 steps
    flat_ref = [s for e in reference for s in e]

    before = _children()
    loader = build_loader(root, LoaderConfig(batch_size=2, num_workers=2, seed=9, shuffle_window=5, prefetch_factor=2))
    got, states = [], []
    # epoch 0 in two passes (the caller stops after 4 steps: prefetched batches must not be lost)
    for i, b in enumerate(loader):
        got += b["scan_id"]
        if i == 3:
            break
    workers = _children() - before
    assert len(workers) == 2
    got += [s for b in loader for s in b["scan_id"]]
    assert loader.epoch == 1 and got == reference[0]
    for b in loader:  # epoch 1 whole, epoch 2 up to a saved cursor
        got += b["scan_id"]
    for i, b in enumerate(loader):
        got += b["scan_id"]
        states.append(loader.state_dict())
        if i == 2:
            break
    assert got == flat_ref[: len(got)]
    assert _children() - before == workers  # no worker was restarted at the epoch boundaries

    loader.load_state_dict(states[0])  # a jump back restarts the feed at the cursor
    rest = [s for b in loader for s in b["scan_id"]]
    assert rest == reference[2][2:]  # states[0]: saved after the first batch of epoch 2
    assert _children() - before != workers
    loader.set_epoch(0)
    assert [s for b in loader for s in b["scan_id"]] == reference[0]
    loader.close()
    assert not (_children() - before)


def test_worker_error_closes_the_feed_and_a_new_pass_restarts(shards_copy):
    import os

    root = shards_copy["root"]
    before = _children()
    loader = build_loader(
        root, LoaderConfig(batch_size=2, num_workers=1, seed=9, max_bad_fraction=1.0, replacement_tries=1)
    )
    for tar in os.listdir(os.path.join(root, "wds")):
        os.remove(os.path.join(root, "wds", tar))  # nothing readable: no substitute sample either
    with pytest.raises(Exception, match="no readable sample") as err:
        next(iter(loader))
    assert not (_children() - before)  # the failed feed's worker is gone, while the error is still held
    assert "no readable sample" in str(err.getrepr())  # the traceback still tells where it failed
    assert loader.state_dict()["consumed"] == 0
    with pytest.raises(Exception, match="no readable sample"):  # a new pass, not a dead iterator
        next(iter(loader))
    loader.close()
