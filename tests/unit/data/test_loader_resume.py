"""Exact mid-epoch resumption, including with another world size, batch size or worker count."""

from __future__ import annotations

import copy

import pytest

from tte_scale.data import LoaderConfig, build_loader
from tte_scale.data.order import epoch_order


def _loaders(root, world, batch, workers=0, **kw):
    cfg = LoaderConfig(batch_size=batch, num_workers=workers, seed=11, shuffle_window=5, **kw)
    return [build_loader(root, cfg, rank=r, world_size=world) for r in range(world)]


def _global_stream(loaders, max_steps=None):
    """The global sample order: per step, rank 0's batch then rank 1's ... (ranks run in lockstep)."""
    out, states = [], []
    iters = [iter(ld) for ld in loaders]
    step = 0
    while max_steps is None or step < max_steps:
        try:
            batches = [next(it) for it in iters]
        except StopIteration:
            break
        out += [s for b in batches for s in b["scan_id"]]
        states.append([ld.state_dict() for ld in loaders])
        step += 1
    for it in iters:
        it.close()
    return out, states


@pytest.mark.parametrize(
    "old,new", [((2, 2, 0), (1, 2, 0)), ((1, 2, 0), (2, 2, 0)), ((2, 2, 0), (1, 4, 2)), ((1, 2, 2), (3, 1, 0))]
)
def test_resume_continues_the_global_stream(shards, old, new):
    (w0, b0, nw0), (w1, b1, nw1) = old, new
    reference, _ = _global_stream(_loaders(shards["root"], w0, b0, nw0))
    stop_after = 1  # steps 0 and 1 done; stop
    seen, states = _global_stream(_loaders(shards["root"], w0, b0, nw0), max_steps=stop_after + 1)
    saved = states[-1]
    assert all(s == saved[0] for s in saved)  # every rank holds the same world-size-free cursor
    assert saved[0]["consumed"] == (stop_after + 1) * w0 * b0

    resumed = _loaders(shards["root"], w1, b1, nw1)
    for ld in resumed:
        ld.load_state_dict(copy.deepcopy(saved[0]))
    rest, _ = _global_stream(resumed)
    consumed = saved[0]["consumed"]
    # exactly what the uninterrupted run served from step stop_after+1 on: no duplicate, no skip
    # (the new run only drops its own remainder: 12 - consumed mod its global batch)
    expected_len = (12 - consumed) // (w1 * b1) * (w1 * b1)
    assert consumed + expected_len <= len(reference)
    assert seen == reference[:consumed]
    assert rest == reference[consumed : consumed + expected_len]
    # and that stream is the world-size-free global order of (seed, epoch)
    ld = resumed[0]
    order = epoch_order(ld.index.stream_sizes, 11, 0, 5)
    assert reference == [ld.index.scan_ids[k] for k in order[: len(reference)]]


def test_resume_next_epoch_and_mid_epoch_stats(shards):
    (ld,) = _loaders(shards["root"], 1, 3)
    full = [s for b in ld for s in b["scan_id"]]
    ld2 = _loaders(shards["root"], 1, 3)[0]
    it = iter(ld2)
    next(it)
    state = ld2.state_dict()
    it.close()
    ld3 = _loaders(shards["root"], 1, 3)[0]
    ld3.load_state_dict(state)
    ld3.set_epoch(0)  # a train loop calling set_epoch with the current epoch keeps the cursor
    assert [s for b in ld3 for s in b["scan_id"]] == full[3:]
    assert ld3.stats()["batches"] == 4 and ld3.epoch == 1
    nxt = [s for b in ld3 for s in b["scan_id"]]
    ref = _loaders(shards["root"], 1, 3)[0]
    ref.set_epoch(1)
    assert nxt == [s for b in ref for s in b["scan_id"]]


def test_incompatible_state_is_refused(shards):
    (ld,) = _loaders(shards["root"], 1, 2)
    state = ld.state_dict()
    other = build_loader(shards["root"], LoaderConfig(batch_size=2, num_workers=0, seed=12, shuffle_window=5))
    with pytest.raises(ValueError, match="seed=11 but this loader has seed=12"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="version"):
        ld.load_state_dict({**state, "version": 99})
    with pytest.raises(ValueError, match="fingerprint"):
        ld.load_state_dict({**state, "fingerprint": "0" * 16})
    with pytest.raises(ValueError, match="not a TTELoader state"):
        ld.load_state_dict({"epoch": 1})
