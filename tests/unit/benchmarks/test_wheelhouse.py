"""`make wheelhouse` and the offline install of `make gpu-check` (issue 15 section 1, offline nodes).

The plan is checked without network; the slow test builds a wheelhouse for *this* Python, makes
a fresh venv that sees only what a GPU node image has (torch, Triton, numpy, pyarrow, tensorstore
and their dependencies, linked in through a .pth file), installs the rest from the wheelhouse
with ``--no-index`` exactly as gpu_env does, and runs the CPU dry run of the check in it.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from tte_scale.benchmarks import wheelhouse
from tte_scale.benchmarks.gpu_env import install_offline

REPO = Path(__file__).resolve().parents[3]


def test_plan_leaves_out_what_the_node_has_and_pins_what_ran_here():
    pins = wheelhouse.plan("3.12")
    for name in ("deepspeed", "zarr", "numcodecs", "google-crc32c", "numba", "pytest", "setuptools", "pip"):
        assert pins[name] == metadata.version(name), name
    # Never torch, its CUDA libraries or its dependencies; nothing the check never imports.
    for name in ("torch", "triton", "numpy", "pyarrow", "tensorstore", "sympy", "jinja2", "filelock", "ray", "monai"):
        assert name not in pins, name
    assert not any(n.startswith("nvidia-") for n in pins)


def test_plan_follows_extras_and_markers():
    env = wheelhouse.marker_env("3.12")
    reqs = dict(wheelhouse.requirements_of(metadata.distribution("numcodecs"), env, frozenset({"crc32c"})))
    assert "crc32c" in reqs  # numcodecs[crc32c]'s own dependency
    assert "crc32c" not in dict(wheelhouse.requirements_of(metadata.distribution("numcodecs"), env))


def test_node_has_shrinks_the_plan():
    assert "llvmlite" in wheelhouse.plan("3.12") and "llvmlite" not in wheelhouse.plan("3.12", ("numba", "llvmlite"))


def test_bad_python_version_is_refused():
    with pytest.raises(SystemExit, match="expected major.minor"):
        wheelhouse.main(["--python-version", "312", "--plan-only"])


def _node_site(dest: Path) -> Path:
    """A folder of links to the distributions a GPU node image has (as installed in this venv)."""
    dest.mkdir()
    env = wheelhouse.marker_env(f"{sys.version_info.major}.{sys.version_info.minor}")
    for name in wheelhouse.node_provides(env):
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            src = Path(str(dist.locate_file(top)))
            if top.startswith("..") or top == "__pycache__" or not src.exists() or (dest / top).exists():
                continue
            (dest / top).symlink_to(src)
    return dest


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_offline_install_from_a_wheelhouse_runs_the_cpu_check(tmp_path):
    pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
    wh = tmp_path / "wheelhouse"
    try:
        wheelhouse.main(["--python-version", pyver, "--out", str(wh), "--results", str(tmp_path / "res")])
    except SystemExit as exc:
        missing = re.search(r"No matching distribution found for (\S+)", str(exc))
        if missing:  # the package index here lacks a pinned file: nothing to test offline with
            pytest.skip(f"the package index reachable here has no {pyver} wheel of {missing.group(1)}")
        raise
    size = json.loads((wh / "manifest.json").read_text())["total_bytes"]
    assert size > 0 and (wh / "requirements.txt").read_text().count("==") >= 20

    node = tmp_path / "node"
    subprocess.run([sys.executable, "-m", "venv", str(node)], check=True)
    py = str(node / "bin" / "python")
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    (Path(site) / "node_image.pth").write_text(str(_node_site(tmp_path / "node_site")) + "\n")
    probe = subprocess.run([py, "-c", "import torch, numpy, pyarrow; import deepspeed"], capture_output=True, text=True)
    assert "No module named 'deepspeed'" in probe.stderr  # the node has torch, not the rest

    env_no_index = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wh), "PIP_EXTRA_INDEX_URL": ""}
    old = dict(os.environ)
    os.environ.update(env_no_index)
    try:
        install_offline(py, wh, REPO)
    finally:
        os.environ.clear()
        os.environ.update(old)

    env = {**env_no_index, "TORCH_EXTENSIONS_DIR": str(Path(sys.prefix) / "torch_extensions")}
    res = subprocess.run(
        [py, "-m", "tte_scale.benchmarks.gpu_check", "--cpu-dry-run", "--out", str(tmp_path / "check"), "--budget", "1200"],
        env=env, capture_output=True, text=True, timeout=1300, cwd=REPO,
    )  # fmt: skip
    summary = (tmp_path / "check" / "cpu-dry-run" / "SUMMARY.md").read_text()
    assert res.returncode == 0, summary + res.stdout[-3000:] + res.stderr[-3000:]
    assert "5/5 steps passed" in summary and platform.python_version() in summary
