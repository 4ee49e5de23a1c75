from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from tte_scale.config import ConfigError, check, from_dict, load_config, parse_overrides, to_dict


@dataclass(kw_only=True, slots=True)
class ModelCfg:
    name: str = "vit3d_tiny"
    """registered model name"""
    depth: int = 2
    """number of blocks"""
    drop_path: float = 0.0
    """stochastic depth rate"""
    pool: Literal["cls", "mean"] = "cls"
    """pooling"""
    patch: tuple[int, int, int] = (16, 16, 16)
    """patch size"""

    def __post_init__(self):
        check(self.depth > 0, "depth", f"must be > 0, got {self.depth}")


@dataclass(kw_only=True, slots=True)
class RunCfg:
    model: ModelCfg = field(default_factory=ModelCfg)
    """the model"""
    steps: int = 10
    """optimizer steps"""
    out: Path | None = None
    """output folder"""


def test_defaults_and_roundtrip():
    cfg = from_dict(RunCfg, {})
    assert cfg.model.depth == 2 and cfg.steps == 10
    again = from_dict(RunCfg, to_dict(cfg))
    assert again == cfg


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("model:\n  depth: 4\n  patch: [8, 8, 4]\nsteps: 3\n")
    cfg = load_config(RunCfg, p, ["model.depth=12", "model.pool=mean", "out=/tmp/x", "model.drop_path=1e-1"])
    assert cfg.model.depth == 12
    assert cfg.model.patch == (8, 8, 4)
    assert cfg.model.pool == "mean"
    assert cfg.out == Path("/tmp/x")
    assert cfg.model.drop_path == pytest.approx(0.1)
    assert cfg.steps == 3


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["model.dept=3"], r"model\.dept: unknown key \(did you mean 'depth'\?\)"),
        (["stepz=3"], r"stepz: unknown key"),
        (["model.depth=abc"], r"model\.depth: expected an integer"),
        (["model.pool=max"], r"model\.pool: 'max' is not one of"),
        (["model.patch=[1,2]"], r"model\.patch: expected 3 items"),
        (["model.depth=0"], r"model\.depth: must be > 0"),
        (["model.depth"], r"expected KEY=VALUE"),
        (["steps.x=1"], r"steps: expected an integer"),
        (["steps=3", "steps.x=1"], r"steps: is a value, not a section"),
    ],
)
def test_bad_keys_and_values_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(RunCfg, None, overrides)


def test_missing_and_malformed_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(RunCfg, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(RunCfg, bad)


def test_parse_overrides_yaml_values():
    assert parse_overrides(["a.b=true", "c=[1, 2]", "d=null", "e=hello"]) == [
        (["a", "b"], True),
        (["c"], [1, 2]),
        (["d"], None),
        (["e"], "hello"),
    ]
