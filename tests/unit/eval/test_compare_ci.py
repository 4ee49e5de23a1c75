"""CIs of the task means and paired model differences, from the shared bootstrap replicates."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from tte_scale.eval import bootstrap as bs
from tte_scale.eval import compare_models, format_differences, paired_differences

TASKS = ["mortality_12m", "ph_12m"]


@pytest.fixture(scope="module")
def models(oracle_and_noisy):
    return oracle_and_noisy(bootstrap=60, noise_sd=3)


def test_mean_row_ci_is_the_percentile_of_replicate_means(models):
    res = models["oracle"]
    rows = compare_models(models)
    mean = next(r for r in rows if r["task"] == "mean" and r["model"] == "oracle" and r["metric"] == "c_index")
    reps = np.stack([res.replicates[(t, "oracle", "c_index")] for t in TASKS]).mean(0)
    lo, hi, n = bs.percentile_ci(reps, 0.95)
    assert (mean["ci_low"], mean["ci_high"], mean["n_boot"]) == (lo, hi, n) and n == 60
    assert lo < mean["value"] < hi
    assert "_replicates" not in res.rows[0] and "replicates" not in res.to_json()


def test_paired_difference_of_a_model_with_itself_is_zero(models):
    same = {"a": models["oracle"], "b": models["oracle"]}
    (d,) = paired_differences(same, "a", [("oracle", "auroc")])
    assert d["diff"] == 0.0 and d["ci_low"] == 0.0 and d["ci_high"] == 0.0 and d["p_le_0"] == 1.0


def test_paired_difference_detects_the_better_model(models):
    diffs = paired_differences(models, "oracle", [("oracle", "c_index"), ("oracle", "auroc")])
    assert [d["model"] for d in diffs] == ["noisy", "noisy"]
    for d in diffs:
        vals = {m: np.mean([models[m].value(t, d["metric"]) for t in TASKS]) for m in models}
        assert d["diff"] == pytest.approx(vals["oracle"] - vals["noisy"])
        assert d["ci_low"] <= d["diff"] <= d["ci_high"]
        assert d["diff"] > 0 and d["p_le_0"] < 0.05  # noise of sd 3 on log-hazards of sd ~1 loses clearly
    text = format_differences(diffs)
    assert text.splitlines()[0].startswith("| oracle minus |") and "noisy" in text


def test_eval_cli_baselines_and_hu_window(tmp_path):
    from tte_scale.commands.eval import _baseline
    from tte_scale.config import ConfigError
    from tte_scale.errors import InputError
    from tte_scale.eval.run import EvalRun, _hu_window
    from tte_scale.models import create_model, save_pretrained

    assert _baseline("random") == ("random_init", None)
    assert _baseline("supervised=runs/x/encoder") == ("supervised", "runs/x/encoder")
    with pytest.raises(argparse.ArgumentTypeError, match="expected 'random' or NAME=PATH"):
        _baseline("supervised")
    with pytest.raises(ConfigError, match="reserved"):
        EvalRun(checkpoint="c", shards="s", labels="l", out="o", baselines=[_baseline("tte=x")])
    enc = create_model("vit3d_tiny", img_size=(8, 16, 16), patch_size=(4, 8, 8), embed_dim=16, depth=1, num_heads=2)
    save_pretrained(enc, tmp_path / "new", hu_window=(-1100, 500))
    save_pretrained(enc, tmp_path / "old")
    assert _hu_window(tmp_path / "new", None) == (-1100.0, 500.0)
    assert _hu_window(tmp_path / "new", [-1100, 500]) == (-1100.0, 500.0)
    with pytest.raises(InputError, match="differs from the window -1100 500 stored in"):
        _hu_window(tmp_path / "new", [-1000, 1000])
    assert _hu_window(tmp_path / "old", None) == (-1000.0, 1000.0)
    assert _hu_window(tmp_path / "old", [-500, 500]) == (-500.0, 500.0)
