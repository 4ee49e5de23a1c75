"""CLI plumbing and config validation of the sharding job (no scans are read here)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tte_scale.config import ConfigError, load_config
from tte_scale.sharding.cli import main
from tte_scale.sharding.config import ShardConfig


def test_python_m_sharding_help():
    res = subprocess.run(
        [sys.executable, "-m", "tte_scale.sharding", "--help"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0
    for opt in (
        "--scans",
        "--labels",
        "--out",
        "--format",
        "--workers",
        "--ray-address",
        "--relabel",
        "--overwrite",
        "--config",
        "--set",
    ):
        assert opt in res.stdout


def test_bad_inputs_are_clear_errors(tmp_path, capsys):
    assert (
        main(
            [
                "--scans",
                str(tmp_path / "none.parquet"),
                "--labels",
                str(tmp_path),
                "--out",
                str(tmp_path / "o"),
                "--workers",
                "0",
            ]
        )
        == 2
    )
    assert "rows.parquet is missing" in capsys.readouterr().err
    assert main(["--labels", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "--scans FILE is required" in capsys.readouterr().err


def test_config_validation_and_samples_per_shard():
    cfg = load_config(ShardConfig, "configs/shard/demo.yaml")
    assert cfg.imaging.shape == (32, 64, 64) and cfg.samples_per_wds_shard >= 1
    assert load_config(ShardConfig, "configs/shard/default.yaml").samples_per_wds_shard == 1073741824 // (
        160 * 224 * 224 * 2 / cfg_ratio()
    )
    with pytest.raises(ConfigError, match="codec"):
        load_config(ShardConfig, None, ["codec={id: nope}"])
    with pytest.raises(ConfigError, match="shape"):
        load_config(ShardConfig, None, ["imaging.shape=[1, 2, 3]"])


def cfg_ratio() -> float:
    return load_config(ShardConfig, "configs/shard/default.yaml").assumed_compression_ratio


def test_cli_progress_bar_and_summary(tmp_path, capsys):
    """The bar counts volumes with a volumes/s rate; the summary gives in, out, failed and the
    compression ratio (figures from the manifest)."""
    import json
    import re

    from support.cohort import SHARD_SET, make_cohort

    scans, labels = make_cohort(tmp_path, n_subjects=3)
    argv = ["--scans", str(scans), "--labels", str(labels), "--out", str(tmp_path / "out"), "--workers", "0"]
    for s in SHARD_SET:
        argv += ["--set", s]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert re.search(r"shard: 100%.* 5/5 \[.*vol/s\]", err), err
    counts = json.loads((tmp_path / "out" / "manifest" / "build.json").read_text())["counts"]
    assert counts["ok"] == 4 and counts["failed"] == 1
    m = re.search(
        r"in (\d+) scans \((\d+) not labelled, skipped\), out (\d+), failed (\d+), compression ([\d.]+)x", out
    )
    assert m, out
    assert [int(g) for g in m.groups()[:4]] == [6, 1, 4, 1]
    assert float(m.group(5)) == pytest.approx(counts["compression_ratio"], abs=0.01) and float(m.group(5)) > 1
    assert "failed scan(s) with reasons in" in err
