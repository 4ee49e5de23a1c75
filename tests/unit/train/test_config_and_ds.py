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


@pytest.mark.parametrize(
    "bad, key",
    [
        (["zero.offload_params=true", "zero.stage=2"], "zero.offload_params"),
        (["optim.lr=-1"], "optim.lr"),
        (["zero.stage=4"], "zero.stage"),
        (["optim.warmpu_steps=3"], "did you mean 'warmup_steps'"),
    ],
)
def test_bad_values_name_the_key(bad, key):
    with pytest.raises(ConfigError, match=key):
        load_config(PretrainConfig, None, bad)


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_ds_config_per_stage(stage):
    cfg = load_config(
        PretrainConfig,
        None,
        [f"zero.stage={stage}", "optim.global_batch_size=16", "optim.grad_accum_steps=2", "optim.grad_clip=0.5"],
    )
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
    cfg = load_config(
        PretrainConfig, None, ["max_steps=110", "optim.warmup_steps=10", "optim.lr=1.0", "optim.min_lr_ratio=0.1"]
    )
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


def test_every_vitconfig_field_is_a_model_key():
    """The model section is derived from ViTConfig: `model.qk_norm` was an unknown key though the
    README says any model field can be set."""
    import dataclasses

    from tte_scale.models import ViTConfig
    from tte_scale.train.parts import encoder_overrides

    cfg = load_config(PretrainConfig, None, ["model.qk_norm=true", "model.mlp_ratio=2", "model.pos_embed=learned"])
    assert {f.name for f in dataclasses.fields(ViTConfig)} <= {f.name for f in dataclasses.fields(cfg.model)}
    over = encoder_overrides(cfg)
    assert over == {"qk_norm": True, "mlp_ratio": 2.0, "pos_embed": "learned"}  # null keeps the registry's
    with pytest.raises(ConfigError, match="model.pos_embed: 'rope' is not one of"):
        load_config(PretrainConfig, None, ["model.pos_embed=rope"])


def test_architecture_errors_name_the_model_key():
    from tte_scale.train.parts import check_model_config

    with pytest.raises(ConfigError, match=r"^model.num_heads: 5 must divide embed_dim"):
        check_model_config(load_config(PretrainConfig, None, ["model.num_heads=5", "model.embed_dim=64"]))


def test_loader_settings_are_settable_with_the_loaders_defaults():
    """data.max_bad_fraction & co. were unknown keys; they are LoaderSettings' fields, same defaults."""
    import dataclasses

    from tte_scale.data import LoaderConfig
    from tte_scale.data.config import LoaderSettings

    default = PretrainConfig().data
    for f in dataclasses.fields(LoaderSettings):
        assert getattr(default, f.name) == getattr(LoaderConfig(), f.name), f.name
    cfg = load_config(
        PretrainConfig,
        None,
        [
            "data.max_bad_fraction=0.2",
            "data.replacement_tries=3",
            "data.prefetch_factor=4",
            "data.verify_volume_sha256=true",
        ],
    )
    kw = cfg.data.loader_settings()
    assert kw["max_bad_fraction"] == 0.2 and kw["replacement_tries"] == 3 and kw["prefetch_factor"] == 4
    assert LoaderConfig(**kw, split="train").verify_volume_sha256 is True
    with pytest.raises(ConfigError, match="data.max_bad_fraction: must be in"):
        load_config(PretrainConfig, None, ["data.max_bad_fraction=1.5"])
    assert "augment" not in {f.name for f in dataclasses.fields(LoaderConfig)}  # it was never read


def test_overwrite_and_resume_exclude_each_other():
    with pytest.raises(ConfigError, match="checkpoint.overwrite"):
        load_config(PretrainConfig, None, ["checkpoint.resume=true", "checkpoint.overwrite=true"])


def test_img_size_follows_the_shards_or_is_refused():
    from tte_scale.train.parts import with_volume_shape

    cfg = load_config(PretrainConfig, None, [])
    assert cfg.model.img_size is None
    assert with_volume_shape(cfg, (12, 24, 24), "s").model.img_size == (12, 24, 24)
    fixed = load_config(PretrainConfig, None, ["model.img_size=[12,24,24]"])
    assert with_volume_shape(fixed, (12, 24, 24), "s").model.img_size == (12, 24, 24)
    with pytest.raises(ConfigError, match=r"model.img_size: \[16, 24, 24\] but the shards s hold volumes of shape"):
        with_volume_shape(load_config(PretrainConfig, None, ["model.img_size=[16,24,24]"]), (12, 24, 24), "s")
