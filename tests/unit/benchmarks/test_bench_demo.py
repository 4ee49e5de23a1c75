"""benchmarks/bench_demo.py: collecting finished demo runs over seeds into demo_seeds.{json,md}."""

from __future__ import annotations

import json

import pytest

from tte_scale.benchmarks import bench_demo
from tte_scale.errors import InputError


def _fake_run(run_dir, seed, tte_auc, stages=bench_demo.STAGES):
    (run_dir / "eval").mkdir(parents=True)
    (run_dir / "eval" / "summary.json").write_text(
        json.dumps(
            {
                "mean_over_tasks": {
                    "tte/logistic/auroc": [tte_auc, tte_auc - 0.05, tte_auc + 0.05],
                    "tte/cox/c_index": [0.7, 0.66, 0.74],
                    "random_init/logistic/auroc": [0.55, 0.5, 0.6],
                    "random_init/cox/c_index": [0.56, 0.5, 0.61],
                    "oracle/oracle/auroc": [0.9, 0.86, 0.93],
                    "oracle/oracle/c_index": [0.83, 0.8, 0.86],
                    "tte/pem/c_index": [None, None, None],
                },
                "tte_minus": [
                    {
                        "model": "random_init",
                        "probe": "logistic",
                        "metric": "auroc",
                        "diff": tte_auc - 0.55,
                        "ci_low": 0.1,
                        "ci_high": 0.3,
                    },
                    {
                        "model": "random_init",
                        "probe": "cox",
                        "metric": "c_index",
                        "diff": 0.14,
                        "ci_low": 0.08,
                        "ci_high": 0.2,
                    },
                ],
                "scans_evaluated": {"held_out": 180},
            }
        )
    )
    (run_dir / bench_demo.STAMPS).mkdir()
    for i, stage in enumerate(stages):
        argv = ["synth", "--out", "x", "--seed", str(seed)] if stage == "synth" else [stage]
        (run_dir / bench_demo.STAMPS / f"{stage}.json").write_text(
            json.dumps({"digest": "d", "seconds": 10.0 + i, "argv": argv})
        )


def test_collects_seeds_into_results(tmp_path):
    runs = tmp_path / "runs"
    _fake_run(runs / "seed_0", 0, 0.78)
    _fake_run(runs / "seed_1", 1, 0.74)
    out = tmp_path / "out"
    assert bench_demo.main(["--seeds", "0,1", "--runs-dir", str(runs), "--collect", "--out", str(out)]) == 0
    res = json.loads((out / "demo_seeds.json").read_text())
    assert [r["seed"] for r in res["seeds"]] == [0, 1]
    auc = res["across_seeds"]["tte/logistic/auroc"]
    assert auc == pytest.approx({"mean": 0.76, "min": 0.74, "max": 0.78})
    assert res["seeds"][0]["total_seconds"] == pytest.approx(sum(10.0 + i for i in range(6)))
    assert "tte/pem/c_index" not in res["across_seeds"]  # a model without a value is left out, not zero
    assert res["tte_minus_across_seeds"]["random_init/logistic/auroc"]["max"] == pytest.approx(0.23)
    md = (out / "demo_seeds.md").read_text()
    assert "0.760 [0.740, 0.780]" in md and "tte - random_init/logistic/auroc" in md


def test_unfinished_or_foreign_runs_are_refused(tmp_path):
    runs = tmp_path / "runs"
    _fake_run(runs / "seed_0", 0, 0.78, stages=bench_demo.STAGES[:-1])
    with pytest.raises(InputError, match="eval stage did not finish"):
        bench_demo.read_run(runs / "seed_0", 0)
    _fake_run(runs / "seed_1", 1, 0.78)
    with pytest.raises(InputError, match="not made with seed 2"):
        bench_demo.read_run(runs / "seed_1", 2)
    with pytest.raises(InputError, match="has not finished"):
        bench_demo.read_run(runs / "seed_9", 9)


def test_same_cohort_runs_are_read_by_their_training_seed(tmp_path):
    """--same-cohort: a run that took its cohort from another folder has no data stages of its own,
    and what identifies it is the seed its training used; a missing supervised stage is no error."""
    run = tmp_path / "seed_4"
    _fake_run(run, 0, 0.7, stages=("train", "eval"))
    (run / bench_demo.STAMPS / "train.json").write_text(
        json.dumps({"digest": "d", "seconds": 30.0, "argv": ["train", "--set", "seed=0", "--set", "seed=4"]})
    )
    (run / bench_demo.STAMPS / "eval.json").write_text(
        json.dumps({"digest": "d", "seconds": 5.0, "argv": ["eval", "--labels", "first/labels", "--tasks", "t.yaml"]})
    )
    r = bench_demo.read_run(run, 4, same_cohort=True)
    assert r["stage_seconds"] == {
        "synth": None,
        "labels": None,
        "shard": None,
        "train": 30.0,
        "supervised": None,
        "eval": 5.0,
    }
    assert r["total_seconds"] == 35.0 and (r["labels"], r["tasks"]) == ("first/labels", "t.yaml")
    with pytest.raises(InputError, match="not trained with seed 3"):
        bench_demo.read_run(run, 3, same_cohort=True)
    with pytest.raises(InputError, match="synth stage did not finish"):  # without --same-cohort its cohort is required
        bench_demo.read_run(run, 4)
    md = bench_demo.render(
        {"command": "c", "machine": "m", "meta": {"load_avg_1m": 0.1}, "same_cohort": True, "seeds": [r],
         "across_seeds": {}, "tte_minus_across_seeds": {}, "pooled_refused": "x: undefined"}
    )  # fmt: skip
    assert "| 4 | - | - | - | 30 | - | 5 | 35 |" in md and "Not pooled: x: undefined" in md


def test_seeds_and_cohort_keys_are_the_scripts_own(tmp_path, capsys):
    for bad in (["--set", "seed=3"], ["--set", "cohort_from=x"], ["--seeds", "1,1"]):
        with pytest.raises(SystemExit) as exc:
            bench_demo.main(["--collect", "--runs-dir", str(tmp_path), "--out", str(tmp_path / "o"), *bad])
        assert exc.value.code == 2
    assert not (tmp_path / "o").exists()
