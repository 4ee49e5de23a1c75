"""The whole pipeline through `tte-scale demo` on a tiny cohort: every stage runs for real
(synth -> labels -> shard with local Ray -> DeepSpeed on the CPU, TTE and the supervised
baseline -> eval + report)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tte_scale.benchmarks import bench_demo

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_end_to_end_and_resume(tmp_path, cli_cmd):
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(
        "subjects: 64\nseed: 1\nworkers: 2\ntasks: 64\nbins: 4\nbootstrap: 20\n"
        f"shard_config: {REPO}/configs/shard/demo.yaml\npretrain_config: {REPO}/configs/pretrain/demo.yaml\n"
        f"task_set: {REPO}/configs/tasks/inspect.yaml\n"
        "pretrain_overrides: [max_steps=6, checkpoint.every_steps=3, eval.every_steps=3, data.num_workers=0, "
        "optim.warmup_steps=1, optim.global_batch_size=4]\n"
    )
    out = tmp_path / "runs" / "seed_1"  # bench_demo's layout, for the same-cohort seeds below
    cmd = cli_cmd + ["demo", "--out", str(out), "--config", str(cfg)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = (out / "eval" / "report.md").read_text()
    assert "oracle" in report and "random_init" in report and "tte" in report and "supervised" in report
    assert "Paired differences" in report
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert {d["model"] for d in summary["tte_minus"]} >= {"random_init", "supervised", "oracle"}
    sup = json.loads((out / "pretrain_supervised" / "encoder" / "config.json").read_text())
    assert sup["pretraining"]["objective"] == "supervised"
    assert sup["preprocessing"]["hu_window"] == [-1000.0, 1000.0]
    results = json.loads((out / "eval" / "results.json").read_text())
    assert results  # written by the report
    assert (out / "pretrain" / "encoder" / "model.safetensors").is_file()
    assert len((out / "pretrain" / "metrics.jsonl").read_text().splitlines()) >= 6
    assert list((out / "eval").glob("*.png")) or list((out / "eval").glob("**/*.png"))

    # A second run finds every stage up to date and redoes nothing.
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("up to date, skipped") == 6

    # Another training seed on that cohort, and the two seeds pooled: bench_demo --same-cohort
    # finds seed 1 up to date (train_seed=1 is what seed 1 trained with) and runs seed 2.
    stamps = {p.name: p.read_text() for p in (out / ".stages").iterdir()}
    results = tmp_path / "results"
    argv = ["--seeds", "1,2", "--same-cohort", "--runs-dir", str(out.parent), "--config", str(cfg)]
    assert bench_demo.main([*argv, "--pool-bootstrap", "50", "--out", str(results), "--tag", "t"]) == 0
    assert {p.name: p.read_text() for p in (out / ".stages").iterdir()} == stamps
    second = out.parent / "seed_2"
    assert not (second / "cohort").exists() and not (second / "shards").exists()
    train_argv = json.loads((second / ".stages" / "train.json").read_text())["argv"]
    assert "seed=2" in train_argv and f"data.shards_dir={out / 'shards'}" in train_argv
    res = json.loads((results / "demo_seeds_t.json").read_text())
    assert res["same_cohort"] and res["seeds"][1]["stage_seconds"]["synth"] is None
    assert [r["tte_minus"]["random_init/cox/c_index"]["diff"] is not None for r in res["seeds"]] == [True, True]
    # 13 held-out scans leave some tasks without positives: the mean over tasks is not pooled, and
    # the results say why (seed_pool's own tests cover the pooled figures).
    assert "undefined for some of the tasks" in res["pooled_refused"] and "pooled" not in res
    assert "Not pooled:" in (results / "demo_seeds_t.md").read_text()


def test_demo_bad_config_names_the_key(tmp_path, cli_cmd):
    cfg = tmp_path / "demo.yaml"
    cfg.write_text("subjectz: 10\n")
    res = subprocess.run(
        cli_cmd + ["demo", "--out", str(tmp_path / "o"), "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert res.returncode == 2
    assert "subjectz: unknown key (did you mean 'subjects'?)" in res.stderr
