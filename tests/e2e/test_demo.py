"""The whole pipeline through `tte-scale demo` on a tiny cohort: every stage runs for real
(synth -> labels -> shard with local Ray -> DeepSpeed on the CPU, TTE and the supervised
baseline -> eval + report)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

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
    out = tmp_path / "demo"
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
