"""Shared assertions of the loader tests."""

from __future__ import annotations

import numpy as np

from tte_scale.data import LoaderConfig, build_loader


def run_epoch(root, **cfg_kwargs):
    """(scan ids in order, batches, loader) of one epoch with a single-rank loader."""
    rank = cfg_kwargs.pop("rank", 0)
    world = cfg_kwargs.pop("world_size", 1)
    loader = build_loader(root, LoaderConfig(**cfg_kwargs), rank=rank, world_size=world)
    batches = list(loader)
    return [s for b in batches for s in b["scan_id"]], batches, loader


def assert_batches_true(batches, info):
    """Every delivered sample is exactly the fixture's volume and labels of the row it names."""
    for b in batches:
        for j, r in enumerate(b["row"].tolist()):
            assert b["scan_id"][j] == info["scan_ids"][r]
            np.testing.assert_array_equal(b["volume"][j, 0].numpy(), info["volumes"][r])
            for k in ("tte_time", "tte_event", "bench_label", "bench_time", "bench_event"):
                np.testing.assert_array_equal(b[k][j].numpy(), info["labels"][r][k])
