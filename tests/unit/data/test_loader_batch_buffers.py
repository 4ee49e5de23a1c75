"""Unpinned batch volumes come from a few recycled buffers (issue 17: a fresh 64 MiB tensor per
batch cost 7 of the main process's 9 CPU ms per volume in page faults); a batch, or any view of
it, that the caller still holds is never written again."""

from __future__ import annotations

import gc

import numpy as np
from loader_helpers import assert_batches_true

from tte_scale.data import LoaderConfig, build_loader
from tte_scale.data.loader import _POOL_MAX


def _loader(root, **kw):
    return build_loader(root, LoaderConfig(format="wds", batch_size=2, num_workers=1, pin_memory=False, **kw))


def test_dropped_batches_are_recycled(shards):
    loader = _loader(shards["root"])
    buffers = []
    for batch in loader:
        pool = loader._feed._pool
        (owner,) = [i for i, buf in enumerate(pool) if np.shares_memory(buf, batch["volume"].numpy())]
        buffers.append(owner)
        assert_batches_true([batch], shards)
        del batch
        gc.collect()
    loader.close()
    assert len(buffers) == loader.steps_per_epoch and len(set(buffers)) <= _POOL_MAX
    assert len(set(buffers)) < len(buffers)  # reused, not one fresh tensor per batch


def test_held_batches_and_views_keep_their_volumes(shards):
    loader = _loader(shards["root"])
    held, views = [], []
    for i, batch in enumerate(loader):
        if i % 2 == 0:
            held.append(batch)  # the whole batch
        else:
            # only a view of the volume, and the rows it shows: the batch dict itself is dropped
            views.append((batch["volume"][1:], batch["row"][1:].clone()))
    loader.close()
    assert_batches_true(held, shards)
    for vol, rows in views:
        for j, r in enumerate(rows.tolist()):
            np.testing.assert_array_equal(vol[j, 0].numpy(), shards["volumes"][r])


def test_a_worker_decodes_blosc_on_one_thread(shards, monkeypatch):
    """In a DataLoader worker Blosc must not thread: N workers would run N x cores threads."""
    import numcodecs.blosc
    import torch

    from tte_scale.data.split_index import read_split_index
    from tte_scale.data.stream import BatchStream, StreamSpec

    class Info:
        id, num_workers = 0, 1

    monkeypatch.setattr(numcodecs.blosc, "use_threads", None)
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: Info())
    spec = StreamSpec(
        index=read_split_index(shards["root"], "train", "wds"),
        cfg=LoaderConfig(format="wds", batch_size=2),
        epoch=0,
        consumed=0,
        rank=0,
        world_size=1,
    )
    it = iter(BatchStream(spec))
    next(it)
    it.close()
    assert numcodecs.blosc.use_threads is False
