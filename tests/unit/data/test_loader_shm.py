"""/dev/shm too small for the slot ring: one line with the need and the remedy, before any worker starts."""

from __future__ import annotations

import shutil
from collections import namedtuple

import numpy as np
import pytest

from tte_scale.data import LoaderConfig, build_loader
from tte_scale.data.shm import SharedMemoryTooSmall, check_shm, ring_bytes

Usage = namedtuple("Usage", "total used free")


def fake_usage(free: int):
    def usage(path):
        assert path == "/dev/shm"
        return Usage(10 * free + 1, 0, free)

    return usage


def test_ring_bytes_is_workers_x_slots_x_batch_volumes():
    # ViT-B config: 160x224x224 int16, micro-batch 4, 2 workers, prefetch 2 -> 3 slots each.
    need = ring_bytes(2, 2, 4, (160, 224, 224))
    assert need == 2 * 3 * 4 * 160 * 224 * 224 * 2
    assert round(need / 2**30, 2) == 0.36
    assert ring_bytes(0, 2, 4, (160, 224, 224)) == 0  # in-process reads use no shared memory


def test_check_shm_message_names_need_and_remedy(monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", fake_usage(64 * 2**20))  # Docker's default
    need = ring_bytes(2, 2, 4, (160, 224, 224))
    with pytest.raises(SharedMemoryTooSmall) as err:
        check_shm(need, ranks_on_node=8)
    msg = str(err.value)
    assert "\n" not in msg
    assert "/dev/shm: 0.06 GiB free" in msg and "0.36 GiB per rank x 8 ranks on this node = 2.87 GiB" in msg
    assert "--shm-size=4g" in msg and "data.num_workers" in msg and "data.prefetch_factor" in msg
    monkeypatch.setattr(shutil, "disk_usage", fake_usage(need * 8))
    check_shm(need, ranks_on_node=8)  # exactly enough: passes


def test_loader_with_workers_refuses_before_starting_them(shards, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", fake_usage(1000))
    loader = build_loader(shards["root"], LoaderConfig(batch_size=2, num_workers=2, shuffle=False))
    with pytest.raises(SharedMemoryTooSmall, match="'train' loader's worker slots"):
        next(iter(loader))
    # without workers nothing goes through /dev/shm: the same loader reads in-process
    loader = build_loader(shards["root"], LoaderConfig(batch_size=2, num_workers=0, shuffle=False))
    batch = next(iter(loader))
    assert batch["volume"].shape[0] == 2 and np.isfinite(batch["tte_time"].numpy()).all()
