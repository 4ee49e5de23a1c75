"""Rank set-up for real clusters: the CUDA device index, process-group timeouts, /dev/shm room."""

from __future__ import annotations

import shutil
from collections import namedtuple
from datetime import timedelta

import pytest
import torch

from tte_scale.config import ConfigError, load_config
from tte_scale.train import loop
from tte_scale.train.config import PretrainConfig
from tte_scale.train.dist import DistEnv, cuda_device_index, dist_env


@pytest.mark.parametrize(
    ("local_rank", "visible", "index"),
    [(0, 8, 0), (5, 8, 5), (5, 1, 0), (3, 1, 0), (0, 1, 0)],
)
def test_device_index_all_gpus_or_one_bound_gpu(local_rank, visible, index):
    assert cuda_device_index(local_rank, visible) == index


def test_device_index_refuses_more_ranks_than_gpus():
    with pytest.raises(ConfigError, match="LOCAL_RANK=4 and only 2 CUDA"):
        cuda_device_index(4, 2)
    with pytest.raises(ConfigError, match="no CUDA device"):
        cuda_device_index(0, 0)


def _fake_cuda(monkeypatch, count: int) -> list[int]:
    chosen: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    return chosen


def test_pick_device_one_gpu_per_slurm_task(monkeypatch):
    """SLURM --gpus-per-task=1: CUDA_VISIBLE_DEVICES holds one id and SLURM_LOCALID=3."""
    env = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "3", "MASTER_ADDR": "n", "MASTER_PORT": "1"}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    chosen = _fake_cuda(monkeypatch, 1)
    device = loop._pick_device(PretrainConfig(device="cuda"), dist_env(env))
    assert device == torch.device("cuda", 0) and chosen == [0]


def test_pick_device_all_gpus_visible(monkeypatch):
    chosen = _fake_cuda(monkeypatch, 4)
    device = loop._pick_device(PretrainConfig(device="cuda"), DistEnv(rank=2, world_size=4, local_rank=2))
    assert device == torch.device("cuda", 2) and chosen == [2]


def test_local_world_size_from_launchers():
    base = {"MASTER_ADDR": "n", "MASTER_PORT": "1"}
    assert dist_env({**base, "RANK": "1", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}).local_world_size == 4
    slurm = {**base, "SLURM_PROCID": "1", "SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4(x2)"}
    assert dist_env(slurm).local_world_size == 4
    assert dist_env({}).local_world_size == 1


# -- timeouts -------------------------------------------------------------------------------------


def test_timeouts_are_validated_config_values():
    cfg = load_config(PretrainConfig, None, ["dist.timeout_minutes=45", "dist.rank0_work_timeout_minutes=600"])
    assert (cfg.dist.timeout_minutes, cfg.dist.rank0_work_timeout_minutes) == (45, 600)
    for key in ("dist.timeout_minutes", "dist.rank0_work_timeout_minutes"):
        with pytest.raises(ConfigError, match=key):
            load_config(PretrainConfig, None, [f"{key}=0"])


def test_set_up_passes_both_timeouts(monkeypatch, tmp_path):
    """init_distributed gets dist.timeout_minutes; the gloo group that waits for rank 0 gets the longer one."""
    import deepspeed
    import torch.distributed as dist

    seen = {}
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(deepspeed, "init_distributed", lambda **kw: seen.update(init=kw))
    monkeypatch.setattr(dist, "new_group", lambda **kw: seen.update(group=kw) or "group")
    cfg = load_config(
        PretrainConfig,
        None,
        [f"out_dir={tmp_path / 'run'}", "device=cpu", "dist.timeout_minutes=45", "dist.rank0_work_timeout_minutes=600"],
    )
    monkeypatch.setattr(loop, "_start_run", lambda *a: None)
    monkeypatch.setattr(loop, "_CPU_GROUP", None)  # restored after the test
    setup = loop._set_up(cfg, check_data=False)
    assert seen["init"]["timeout"] == timedelta(minutes=45) and seen["init"]["dist_backend"] == "gloo"
    assert seen["group"] == {"backend": "gloo", "timeout": timedelta(minutes=600)}
    assert loop._cpu_group() == "group" and setup.device == torch.device("cpu")


# -- /dev/shm ------------------------------------------------------------------------------------

Usage = namedtuple("Usage", "total used free")


def test_set_up_refuses_a_small_dev_shm_before_anything_starts(monkeypatch):
    cfg = load_config(
        PretrainConfig, None, ["data.num_workers=2", "data.prefetch_factor=2", "model.img_size=[160,224,224]"]
    )
    env = DistEnv(rank=0, world_size=8, local_rank=0, local_world_size=8)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(2**26, 0, 2**26))  # Docker's 64 MiB
    with pytest.raises(
        Exception,
        match=r"/dev/shm: 0.06 GiB free, but the train and eval loaders' worker slots "
        r"need 0.36 GiB per rank x 8 ranks",
    ):
        loop._check_shared_memory(cfg, 2, env)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(2**40, 0, 2**40))
    loop._check_shared_memory(cfg, 2, env)
