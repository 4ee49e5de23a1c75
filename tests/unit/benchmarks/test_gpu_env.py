"""`make gpu-check`'s environment step (benchmarks/gpu_env.py): the driver -> torch build choice, and
the refusal without a usable GPU: exit 2 with one line, never a silent CPU run or skip."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tte_scale.benchmarks.gpu_env import CU128_INDEX, NoGpu, driver_runs, parse_driver, torch_build_for_driver

REPO = Path(__file__).resolve().parents[3]
GPU_ENV = REPO / "benchmarks" / "gpu_env.py"


@pytest.mark.parametrize(
    "driver, cuda, index",
    [
        ("580.65.06", "13.0", None),
        ("590.44.01", "13.0", None),
        ("580.65.05", "12.8", CU128_INDEX),  # just below CUDA 13's floor
        ("570.124.06", "12.8", CU128_INDEX),
        ("535.183.01", "12.8", CU128_INDEX),  # minor-version compatibility
        ("525.60.13", "12.8", CU128_INDEX),
    ],
)
def test_torch_build_for_driver(driver, cuda, index):
    build = torch_build_for_driver(driver)
    assert (build.cuda, build.index_url) == (cuda, index) and driver in build.why


def test_too_old_driver_is_refused_naming_it():
    with pytest.raises(NoGpu, match=r"driver 470\.82\.01 is too old .*525\.60\.13"):
        torch_build_for_driver("470.82.01")


def test_driver_runs():
    assert driver_runs("13.0", "580.65.06") is None and driver_runs("12.8", "550.54.15") is None
    assert driver_runs("13.0", "550.54.15") == "CUDA 13.0 needs driver >= 580.65.06"
    assert driver_runs("12.1", "515.65.01") == "CUDA 12.1 needs driver >= 525.60.13"
    assert driver_runs(None, "580.65.06") == "it is a CPU-only build"


def test_parse_driver():
    assert parse_driver("570.124.06") == (570, 124, 6) and parse_driver("550.54") == (550, 54, 0)
    with pytest.raises(ValueError):
        parse_driver("N/A")


# -- the command, as `make gpu-check` runs it -------------------------------------------------------


def _bin_with(tmp: Path, **scripts: str) -> Path:
    """A PATH folder holding ``scripts`` (name -> sh body) and nothing else."""
    d = tmp / "bin"
    d.mkdir(exist_ok=True)
    for name, body in scripts.items():
        p = d / name
        p.write_text("#!/bin/sh\n" + body + "\n")
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return d


def fake_nvidia_smi(driver: str, name: str = "NVIDIA H100 80GB HBM3") -> str:
    return f'echo "{driver}, {name}"'


def _run(args: list[str], path: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PATH"}
    env["PATH"] = path
    return subprocess.run(args, env=env, capture_output=True, text=True, cwd=cwd, timeout=300)


def _one_line(res: subprocess.CompletedProcess) -> str:
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, (res.returncode, res.stdout, res.stderr)
    return lines[0]


def test_no_nvidia_smi_exits_2_with_one_line(tmp_path):
    res = _run([sys.executable, str(GPU_ENV), "--venv", str(tmp_path / "v")], str(_bin_with(tmp_path)))
    assert "no nvidia-smi on PATH" in _one_line(res)
    assert not (tmp_path / "v").exists()  # nothing installed for a machine that cannot use it


def test_old_driver_exits_2_naming_it(tmp_path):
    path = _bin_with(tmp_path, **{"nvidia-smi": fake_nvidia_smi("470.82.01")})
    res = _run([sys.executable, str(GPU_ENV), "--venv", str(tmp_path / "v")], str(path))
    line = _one_line(res)
    assert "driver 470.82.01 is too old" in line and not (tmp_path / "v").exists()


def test_failing_nvidia_smi_exits_2_with_its_message(tmp_path):
    body = 'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver."; exit 9'
    path = _bin_with(tmp_path, **{"nvidia-smi": body})
    line = _one_line(_run([sys.executable, str(GPU_ENV), "--venv", str(tmp_path / "v")], str(path)))
    assert "nvidia-smi failed (exit 9): NVIDIA-SMI has failed" in line


def _wheelhouse(tmp: Path) -> Path:
    wh = tmp / "wheelhouse"
    wh.mkdir()
    (wh / "requirements.txt").write_text("zarr==3.1.6\n")
    return wh


def test_offline_node_torch_too_new_for_the_driver_exits_2(tmp_path):
    """The node's torch 2.11.0+cu130 under a 550 driver: named, nothing installed."""
    probe = {"torch": "2.11.0+cu130", "cuda": "13.0", "available": False, "devices": 0}
    path = _bin_with(
        tmp_path, **{"nvidia-smi": fake_nvidia_smi("550.54.15"), "nodepython": f"echo '{json.dumps(probe)}'"}
    )
    args = [sys.executable, str(GPU_ENV), "--venv", str(tmp_path / "v"), "--wheelhouse", str(_wheelhouse(tmp_path))]
    line = _one_line(_run([*args, "--python", str(path / "nodepython")], str(path)))
    assert line.endswith("driver 550.54.15 cannot run torch 2.11.0+cu130: CUDA 13.0 needs driver >= 580.65.06")
    assert not (tmp_path / "v").exists()


def test_offline_cpu_torch_exits_2(tmp_path):
    path = _bin_with(tmp_path, **{"nvidia-smi": fake_nvidia_smi("580.65.06")})
    args = [sys.executable, str(GPU_ENV), "--venv", str(tmp_path / "v"), "--wheelhouse", str(_wheelhouse(tmp_path))]
    line = _one_line(_run(args, str(path)))  # --python: this venv's interpreter, a CPU torch
    assert "cannot run torch" in line and "CPU-only build" in line


def test_make_gpu_check_on_this_machine_exits_2_with_the_reason(tmp_path):
    """The issue's acceptance: `make gpu-check` on a machine without a GPU stops with its one line."""
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "nvidia-smi").exists())
    res = _run(
        ["make", "--no-print-directory", "gpu-check", f"PYTHON={sys.executable}", f"WHEELHOUSE={tmp_path}/none"], path
    )
    assert res.returncode == 2
    ours = [ln for ln in res.stderr.splitlines() if ln.startswith("gpu-check:")]
    assert ours == [
        "gpu-check: no usable CUDA device: no nvidia-smi on PATH: this machine has no NVIDIA driver, so no CUDA device"
    ]
