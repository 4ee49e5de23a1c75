"""`tte-scale demo` on the sparse profile: the synth stage gets --profile, the default's
command line (and so its resume digest) is unchanged, and a bad profile names the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tte_scale.commands.demo import DemoConfig, _stages
from tte_scale.config import ConfigError, load_config


def _synth_argv(cfg: DemoConfig) -> list[str]:
    return next(argv for name, argv, _ in _stages(cfg, Path("out")) if name == "synth")


def test_sparse_demo_config_passes_the_profile_and_its_task_set():
    cfg = load_config(DemoConfig, "configs/demo_sparse.yaml", [])
    argv = _synth_argv(cfg)
    assert argv[argv.index("--profile") + 1] == "sparse"
    assert cfg.task_set == "configs/tasks/sparse.yaml"
    assert "--profile" not in _synth_argv(load_config(DemoConfig, "configs/demo.yaml", []))
    with pytest.raises(ConfigError, match="profile"):
        load_config(DemoConfig, "configs/demo.yaml", ["profile=dense"])


def test_sparse_demo_encoder_input_is_its_shards_shape():
    """The sparse demo trains at its own shard geometry (finer voxels than the demo's): the
    encoder's img_size override must be the shard config's shape, and patches must tile it."""
    from tte_scale.sharding.config import ShardConfig
    from tte_scale.train.config import PretrainConfig

    cfg = load_config(DemoConfig, "configs/demo_sparse.yaml", [])
    shard = load_config(ShardConfig, cfg.shard_config)
    train = load_config(PretrainConfig, cfg.pretrain_config, cfg.pretrain_overrides)
    assert tuple(train.model.img_size) == tuple(shard.imaging.shape) == (48, 112, 112)
    assert all(s % p == 0 for s, p in zip(train.model.img_size, train.model.patch_size))
    assert train.model.blob_sigmas_vox and train.model.pool == "max" and train.model.blob_gain == 30
