"""The wheel, as a user without a checkout gets it: built from this checkout, installed into a fresh
virtual environment, and used from a folder outside the checkout.

Dependencies are not downloaded again: the fresh environment reaches this environment's
site-packages through a ``.pth`` line (which does not load this checkout's editable finder),
so everything ``tte_scale`` imports must come from the wheel itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as the tomli backport (dev extra)
    import tomli as tomllib

from tte_scale.cli import COMMANDS

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)]
    res = subprocess.run(build, capture_output=True, text=True, timeout=600, cwd=out)
    assert res.returncode == 0, res.stderr[-3000:]
    (whl,) = out.glob("tte_scale-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    py = root / "bin" / "python"
    res = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    ).stdout.strip()
    (Path(site) / "_tte_scale_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return root


def _run(venv: Path, cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def test_wheel_holds_one_import_name_and_the_configs(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"tte_scale"}, tops
    for cfg in (
        "demo.yaml",
        "pretrain/demo.yaml",
        "pretrain/vit_b_8gpu.yaml",
        "shard/default.yaml",
        "tasks/inspect.yaml",
    ):
        assert f"tte_scale/configs/{cfg}" in names, cfg
    assert "tte_scale/sharding/job.py" in names and "tte_scale/launch/slurm.py" in names
    assert "tte_scale/benchmarks/bench_loss.py" in names
    assert not [n for n in names if "/results/" in n or "/testing/" in n or n.startswith("tests/")]
    # Every package folder of the source tree is listed in pyproject (find cannot see through package-dir).
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    shipped = {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    # configs/<kind>/ are YAML-only folders: listed so that they ship as data, no __init__.py.
    data_only = {p for p in listed if p.startswith("tte_scale.configs.")}
    assert data_only == {
        "tte_scale.configs." + d.name for d in (REPO / "configs").iterdir() if d.is_dir() and d.name != "__pycache__"
    }
    assert shipped == listed - data_only
    on_disk = {
        "tte_scale." + str(p.parent.relative_to(REPO / "tte_scale")).replace("/", ".")
        for p in (REPO / "tte_scale").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert {p.replace("tte_scale..", "tte_scale") for p in on_disk} <= listed


def test_commands_run_from_outside_the_checkout(venv, tmp_path):
    res = _run(venv, tmp_path, str(venv / "bin" / "python"), "-c", "import tte_scale; print(tte_scale.__file__)")
    assert res.returncode == 0 and res.stdout.startswith(str(venv)), (res.stdout, res.stderr)
    for sub in ("", *COMMANDS):
        res = _run(venv, tmp_path, "tte-scale", *([sub] if sub else []), "--help", timeout=300)
        assert res.returncode == 0 and "usage: tte-scale" in res.stdout, (sub, res.stderr[-2000:])

    res = _run(
        venv, tmp_path, "tte-scale", "synth", "--out", "cohort", "--subjects", "8", "--workers", "1", "--no-progress"
    )
    assert res.returncode == 0, res.stderr[-3000:]
    # labels reads its default benchmark task set (configs/tasks/inspect.yaml) from the wheel.
    res = _run(
        venv, tmp_path, "tte-scale", "labels", "--meds", "cohort", "--scans", "cohort/scans.parquet",
        "--out", "labels", "--tasks", "16", "--no-progress",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "labels" / "bench.parquet").is_file() and (tmp_path / "labels" / "tte.zarr").is_dir()
    # A shipped pretraining config, named as in the README, read without a checkout.
    res = _run(
        venv, tmp_path, "tte-scale", "train", "--config", "configs/pretrain/vit_b_8gpu.yaml", "--estimate-memory",
        timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
