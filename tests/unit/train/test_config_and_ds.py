"""PretrainConfig loading/validation, the DeepSpeed dict, LR schedule, weight-decay groups."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tte_scale.config import ConfigError, load_config
from tte_scale.train import PretrainConfig, resolve_batch
from tte_scale.train.ds_config import build_ds_config, lr_at, param_groups

CONFIGS = sorted((Path(__file__).resolve().parents[3] / "configs" / "pretrain").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_load_and_build(path):
    cfg = load_config(PretrainConfig, path)
    world = cfg.cluster.nodes * cfg.cluster.gpus_per_node
    ds = build_ds_config(cfg, world, "cuda" if cfg.device == "cuda" else "cpu")
    assert ds["train_batch_size"] == ds["train_micro_batch_size_per_gpu"] * world * ds["gradient_accumulation_steps"]


def test_all_four_configs_exist():
    assert {p.stem for p in CONFIGS} >= {"demo", "vit_b_8gpu", "vit_l_8gpu", "vit_1b_64gpu"}


def test_batch_not_divisible_fails_naming_the_key():
    cfg = load_config(PretrainConfig, None, ["optim.global_batch_size=6", "optim.grad_accum_steps=2"])
    assert resolve_batch(cfg, 3) == 1
    with pytest.raises(ConfigError, match=r"optim.global_batch_size: 6 is not divisible by world size \(2\)"):
        resolve_batch(cfg, 2)


def test_unknown_model_fails_before_any_work():
    from tte_scale.train.parts import check_model_config

    cfg = load_config(PretrainConfig, None, ["model.name=vit3d_gigantic"])
    with pytest.raises(ConfigError, match="model.name: unknown model 'vit3d_gigantic'"):
        check_model_config(cfg)


def test_train_rejects_bad_config_before_starting_processes(monkeypatch):
    from tte_scale.train import train

    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    cfg = load_config(PretrainConfig, None, ["optim.global_batch_size=3", "optim.grad_accum_steps=2"])
    with pytest.raises(ConfigError, match="not divisible"):
        train(cfg)
    import torch.distributed as dist

    assert not dist.is_initialized()


@pytest.mark.parametrize("bad, key", [(["zero.offload_params=true", "zero.stage=2"], "zero.offload_params"),
                                      (["optim.lr=-1"], "optim.lr"), (["zero.stage=4"], "zero.stage"),
                                      (["optim.warmpu_steps=3"], "did you mean 'warmup_steps'")])
def test_bad_values_name_the_key(bad, key):
    with pytest.raises(ConfigError, match=key):
        load_config(PretrainConfig, None, bad)


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_ds_config_per_stage(stage):
    cfg = load_config(PretrainConfig, None, [f"zero.stage={stage}", "optim.global_batch_size=16",
                                             "optim.grad_accum_steps=2", "optim.grad_clip=0.5"])
    ds = build_ds_config(cfg, 4, "cpu")
    assert ds["zero_optimization"]["stage"] == stage
    assert ds["train_micro_batch_size_per_gpu"] == 2 and ds["gradient_accumulation_steps"] == 2
    assert ds["gradient_clipping"] == 0.5 and ds["bf16"]["enabled"] is False  # fp32 on CPU
    assert build_ds_config(cfg, 4, "cuda")["bf16"]["enabled"] is True


def test_ds_config_offload():
    cfg = load_config(PretrainConfig, None, ["zero.stage=3", "zero.offload_optimizer=true", "zero.offload_params=true"])
    z = build_ds_config(cfg, 1, "cuda")["zero_optimization"]
    assert z["offload_optimizer"]["device"] == "cpu" and z["offload_param"]["device"] == "cpu"


def test_lr_warmup_then_cosine():
    cfg = load_config(PretrainConfig, None, ["max_steps=110", "optim.warmup_steps=10", "optim.lr=1.0",
                                             "optim.min_lr_ratio=0.1"])
    lrs = [lr_at(s, cfg) for s in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10]))  # rising during warmup
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then decaying
    assert lr_at(110, cfg) == pytest.approx(0.1) and lrs[60] == pytest.approx(0.55)


def test_weight_decay_groups():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    model.pos_embed = torch.nn.Parameter(torch.zeros(1, 3, 4))
    groups = {g["name"]: g for g in param_groups(model, 0.05)}
    assert len(groups["decay"]["params"]) == 1 and groups["decay"]["weight_decay"] == 0.05
    assert len(groups["no_decay"]["params"]) == 4 and groups["no_decay"]["weight_decay"] == 0.0
