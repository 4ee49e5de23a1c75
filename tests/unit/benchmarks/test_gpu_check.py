"""`make gpu-check`'s step runner (benchmarks/gpu_check.py) on CPU: timeouts, failures recorded as
failures, SUMMARY.md and steps.json written, goals judged; the refusal without CUDA."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tte_scale.benchmarks import gpu_check
from tte_scale.benchmarks.gpu_check import Step, StepResult, goals, gpu_test_files, judge_pytest, run_steps

REPO = Path(__file__).resolve().parents[3]


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _writes(name: str, payload: dict) -> list[str]:
    return _py(f"import json, sys; open(sys.argv[1] + '/{name}.json', 'w').write(json.dumps({payload!r}))")


def _judge_value(out: Path, log: str):
    v = json.loads((out / "ok.json").read_text())["value"]
    return v > 0, {"value": v}, f"value {v}"


def _judge_missing(out: Path, log: str):
    return True, json.loads((out / "missing.json").read_text()), ""


def test_steps_pass_fail_timeout_and_budget(tmp_path):
    pid_file = tmp_path / "child.pid"
    # The timed-out step starts a child: the whole group must be killed, not only the step.
    hang = _py(
        "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pid_file)!r}, 'w').write(str(p.pid)); print('started', flush=True); time.sleep(60)"
    )
    steps = [
        Step("good", [*_writes("ok", {"value": 3}), str(tmp_path)], 60, _judge_value),
        Step("crash", _py("import sys; print('boom: bad thing'); sys.exit(3)"), 60, _judge_value),
        Step("hang", hang, 3, _judge_value),
        Step("bad-results", _py("pass"), 60, _judge_missing),  # exits 0 but wrote nothing
    ]
    results = run_steps(steps, tmp_path, budget_s=120)
    by = {r.name: r for r in results}
    assert by["good"].status == "pass" and by["good"].figures == {"value": 3}
    assert by["crash"].status == "fail" and by["crash"].rc == 3 and "boom: bad thing" in by["crash"].note
    assert by["hang"].status == "timeout" and by["hang"].seconds < 30 and "started" in by["hang"].note
    child = int(pid_file.read_text())
    assert not _alive(child), "the step's child process outlived its timeout"
    assert by["bad-results"].status == "fail" and "results unreadable" in by["bad-results"].note
    assert (tmp_path / "logs" / "crash.log").read_text().startswith("boom")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_spent_budget_leaves_later_steps_not_run(tmp_path):
    steps = [
        Step("slow", _py("import time; time.sleep(30)"), 60, _judge_value),
        Step("next", _py("pass"), 60, _judge_value),
    ]
    results = run_steps(steps, tmp_path, budget_s=6)
    assert [r.status for r in results] == ["timeout", "not run"]
    assert "budget" in results[1].note


def test_main_writes_summary_and_fails_on_a_failed_step(tmp_path, capsys):
    steps = [
        Step("good", [*_writes("ok", {"value": 3}), str(tmp_path / "cpu-dry-run")], 60, _judge_value),
        Step("crash", _py("raise SystemExit(4)"), 60, _judge_value),
    ]
    rc = gpu_check.main(["--cpu-dry-run", "--out", str(tmp_path)], steps=steps)
    assert rc == 1
    out = tmp_path / "cpu-dry-run"
    summary = (out / "SUMMARY.md").read_text()
    assert "1/2 steps passed" in summary and "| crash | **fail** |" in summary and "CPU DRY RUN" in summary
    data = json.loads((out / "steps.json").read_text())
    assert [s["status"] for s in data["steps"]] == ["pass", "fail"] and data["dry_run"] is True
    lines = capsys.readouterr().out.splitlines()
    assert any(ln.startswith("gpu-check [2/2] crash: fail") for ln in lines)


def test_all_steps_passing_exit_0(tmp_path):
    steps = [Step("good", [*_writes("ok", {"value": 1}), str(tmp_path / "cpu-dry-run")], 60, _judge_value)]
    assert gpu_check.main(["--cpu-dry-run", "--out", str(tmp_path)], steps=steps) == 0


def test_skipped_gpu_tests_fail_the_pytest_step(tmp_path):
    xml = '<testsuites><testsuite tests="4" failures="0" errors="0" skipped="{s}"/></testsuites>'
    (tmp_path / "pytest.xml").write_text(xml.format(s=4))
    ok, figs, note = judge_pytest(tmp_path, "")
    assert not ok and note == "0 passed, 0 failed, 0 errors, 4 skipped"
    (tmp_path / "pytest.xml").write_text(xml.format(s=0))
    assert judge_pytest(tmp_path, "")[0]


def test_goals_met_missed_and_not_measured():
    loss = StepResult("loss", "pass", 1, 0, "", {
        "K8192_fused_time_vs_eager": {8: 0.5, 32: 0.9},
        "K8192_fused_workspace_vs_eager": {8: 0.05, 32: 0.08},
    }, "")  # fmt: skip
    model = StepResult(
        "model", "pass", 1, 0, "", {"models": {"vit3d_large": {"mfu": 0.5, "sdpa_backend": ["flash"]}}}, ""
    )
    train = StepResult("train", "fail", 1, 1, "", {}, "")
    rows = goals({"loss": loss, "model": model, "train": train})
    assert [r[3] for r in rows] == ["**missed**", "met", "met", "not measured"]
    assert "B=32: 0.90x" in rows[0][2] and "SDPA flash" in rows[2][2]


def test_gpu_test_files_finds_the_marked_files():
    files = [Path(f).relative_to(REPO).as_posix() for f in gpu_test_files(REPO / "tests")]
    assert "tests/unit/loss/test_fused.py" in files and "tests/gpu/test_gpu_paths.py" in files
    marker = "pytest.mark." + "gpu"  # spelled apart: this file holds no gpu test
    assert all(marker in (REPO / f).read_text() for f in files)
    assert "tests/unit/benchmarks/test_gpu_check.py" not in files  # names the marker only in strings


def test_device_slug():
    assert gpu_check.device_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert gpu_check.device_slug("NVIDIA H200 NVL") == "nvidia-h200-nvl"


@pytest.mark.parametrize("driver", [None, "550.54.15"])
def test_check_without_cuda_exits_2_with_one_line(tmp_path, driver):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if driver:
        smi = bin_dir / "nvidia-smi"
        smi.write_text(f'#!/bin/sh\necho "{driver}, NVIDIA H100 80GB HBM3"\n')
        smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": str(bin_dir)}
    res = subprocess.run(
        [sys.executable, "-m", "tte_scale.benchmarks.gpu_check", "--out", str(tmp_path / "res")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    if driver:
        assert "driver 550.54.15 cannot run torch" in lines[0] and "CPU-only build" in lines[0]
    else:
        assert "no nvidia-smi on PATH" in lines[0]
    assert not (tmp_path / "res").exists()


@pytest.mark.slow
def test_cpu_dry_run_runs_every_step(tmp_path):
    """The CPU part of the check end to end: every step's real code at toy sizes."""
    env = {
        **os.environ,
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions")),
    }
    res = subprocess.run(
        [sys.executable, "-m", "tte_scale.benchmarks.gpu_check", "--cpu-dry-run", "--out", str(tmp_path), "--budget", "900"],
        env=env, capture_output=True, text=True, timeout=1000,
    )  # fmt: skip
    summary = (tmp_path / "cpu-dry-run" / "SUMMARY.md").read_text()
    assert res.returncode == 0, summary + res.stdout[-3000:]
    assert "5/5 steps passed" in summary


def test_matmul_step_on_cpu_writes_what_its_judge_reads(tmp_path):
    r = gpu_check.matmul_check(tmp_path, cpu=True)
    assert r["n"] == 512 and r["max_rel_err"] < 1e-4 and r["fraction_of_peak"] is None
    ok, figs, note = gpu_check.judge_matmul(tmp_path, "")
    assert ok and "TFLOP/s float32" in note and "512^3 product" in (tmp_path / "matmul.md").read_text()
