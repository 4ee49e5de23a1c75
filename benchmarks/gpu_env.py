"""The environment `make gpu-check` runs in: a CUDA torch that fits the driver, or one line why not.

Run by the Makefile with the machine's own Python *before* any venv exists, so this file uses
the standard library only (it is also importable as ``tte_scale.benchmarks.gpu_env`` for tests):

    python3 benchmarks/gpu_env.py --venv .venv [--wheelhouse wheelhouse] [--torch-pin torch==X]

1. The driver: ``nvidia-smi --query-gpu=driver_version,name --format=csv,noheader``. No
   nvidia-smi, or one that fails, means no usable GPU: exit 2 with one line saying so.
2. Two ways to get the packages:

   * **online** (no ``WHEELHOUSE/requirements.txt``): create or update the venv with a torch
     build the driver can run (``torch_build_for_driver``): the PyPI wheel (CUDA 13.0) needs
     driver >= 580.65.06; older drivers get the CUDA 12.8 build from the PyTorch index (native
     from 570.26, through CUDA's minor-version compatibility from 525.60.13); older still is
     refused. A torch already in the venv is kept when its CUDA fits the driver and replaced
     otherwise (a CPU build, or CUDA 13 under a driver older than 580).
   * **offline** (``make wheelhouse`` output present, e.g. a cluster node without a package
     index): the venv is made with ``--system-site-packages`` from ``--python`` (the node's
     interpreter), so its own CUDA torch and Triton are used; the rest comes from the wheelhouse
     with ``pip install --no-index --find-links``. A torch whose CUDA the driver cannot run is
     refused here, since nothing can be downloaded instead.

3. The check: the venv's torch must see a device (``torch.cuda.is_available()``), else exit 2
   with the driver, torch and CUDA versions in the line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

EXIT_NO_GPU = 2
PREFIX = "gpu-check:"

# Minimum Linux driver of each CUDA runtime (CUDA toolkit release notes, table 3).
CUDA13_DRIVER = (580, 65, 6)
CUDA128_DRIVER = (570, 26, 0)
CUDA12_COMPAT_DRIVER = (525, 60, 13)  # CUDA 12.x minor-version compatibility floor
CU128_INDEX = "https://download.pytorch.org/whl/cu128"


class NoGpu(Exception):
    """No usable CUDA device; the message is the one line printed."""


def parse_driver(text: str) -> tuple[int, ...]:
    """'570.124.06' -> (570, 124, 6); ValueError on anything else."""
    parts = text.strip().split(".")
    if not parts or not all(p.isdigit() for p in parts):
        raise ValueError(f"not a driver version: {text!r}")
    return tuple(int(p) for p in parts) + (0,) * (3 - len(parts))


def _fmt(v: tuple[int, ...]) -> str:
    return f"{v[0]}.{v[1]:02d}.{v[2]:02d}" if v[2] else f"{v[0]}.{v[1]:02d}"


@dataclass(frozen=True)
class TorchBuild:
    """Which torch to install for a driver: ``cuda`` '13.0' or '12.8'; ``index_url`` None = PyPI."""

    cuda: str
    index_url: str | None
    why: str


def torch_build_for_driver(driver: str) -> TorchBuild:
    """The torch build a driver runs (pure); raises NoGpu for a driver too old for any."""
    v = parse_driver(driver)
    if v >= CUDA13_DRIVER:
        return TorchBuild("13.0", None, f"driver {driver} >= {_fmt(CUDA13_DRIVER)}: the PyPI wheel (CUDA 13.0)")
    if v >= CUDA128_DRIVER:
        return TorchBuild(
            "12.8", CU128_INDEX, f"driver {driver} < {_fmt(CUDA13_DRIVER)} (CUDA 13): the CUDA 12.8 build"
        )
    if v >= CUDA12_COMPAT_DRIVER:
        return TorchBuild(
            "12.8",
            CU128_INDEX,
            f"driver {driver} < {_fmt(CUDA128_DRIVER)}: the CUDA 12.8 build through CUDA minor-version compatibility",
        )
    raise NoGpu(
        f"driver {driver} is too old for any current torch CUDA build (CUDA 12.x needs >= "
        f"{_fmt(CUDA12_COMPAT_DRIVER)}, CUDA 13.0 >= {_fmt(CUDA13_DRIVER)}): update the NVIDIA driver"
    )


def driver_runs(torch_cuda: str | None, driver: str) -> str | None:
    """None when a torch built for CUDA ``torch_cuda`` runs under ``driver``, else why not (pure)."""
    if not torch_cuda:
        return "it is a CPU-only build"
    major = int(torch_cuda.split(".")[0])
    need = CUDA13_DRIVER if major >= 13 else CUDA12_COMPAT_DRIVER if major == 12 else (450, 80, 2)
    if parse_driver(driver) < need:
        return f"CUDA {torch_cuda} needs driver >= {_fmt(need)}"
    return None


def read_driver(nvidia_smi: str | None = None) -> tuple[str, list[str]]:
    """(driver version, GPU names) from nvidia-smi; NoGpu when it is missing or fails."""
    exe = nvidia_smi or shutil.which("nvidia-smi")
    if exe is None:
        raise NoGpu("no nvidia-smi on PATH: this machine has no NVIDIA driver, so no CUDA device")
    try:
        res = subprocess.run(
            [exe, "--query-gpu=driver_version,name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NoGpu(f"nvidia-smi did not answer ({exc})") from None
    lines = [ln.strip() for ln in res.stdout.splitlines() if ln.strip()]
    if res.returncode != 0 or not lines:
        said = (res.stderr or res.stdout).strip().splitlines()
        raise NoGpu(f"nvidia-smi failed (exit {res.returncode}): {said[0] if said else 'no output'}")
    rows = [[c.strip() for c in ln.split(",", 1)] for ln in lines]
    driver = rows[0][0]
    try:
        parse_driver(driver)
    except ValueError:
        raise NoGpu(f"nvidia-smi gave no driver version: {lines[0]!r}") from None
    return driver, [r[1] if len(r) > 1 else "?" for r in rows]


# -- probing an interpreter -----------------------------------------------------------------------

PROBE = (
    "import json, torch\n"
    "ok = torch.cuda.is_available()\n"
    "print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, 'available': ok,\n"
    "                  'devices': torch.cuda.device_count() if ok else 0}))\n"
)


def probe_torch(python: str) -> dict | None:
    """torch version, its CUDA and whether it sees a device, as ``python`` reports; None without torch."""
    res = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def refuse_unusable(info: dict | None, driver: str, python: str) -> None:
    """Raise NoGpu unless ``info`` (probe_torch) is a CUDA torch that sees a device under ``driver``."""
    if info is None:
        raise NoGpu(f"{python} has no torch: install a CUDA build of torch there or make the venv online")
    why = driver_runs(info["cuda"], driver)
    if why:
        raise NoGpu(f"driver {driver} cannot run torch {info['torch']}: {why}")
    if not info["available"]:
        raise NoGpu(
            f"torch {info['torch']} (CUDA {info['cuda']}) with driver {driver}: torch.cuda.is_available() is "
            "False (no device visible: check CUDA_VISIBLE_DEVICES, the container's GPU access, nvidia-smi)"
        )


# -- setting up the venv --------------------------------------------------------------------------


def _run(cmd: list[str], what: str) -> None:
    print(f"{PREFIX} env: {what}: {' '.join(cmd)}", flush=True)
    res = subprocess.run(cmd)
    if res.returncode != 0:
        raise SystemExit(f"{PREFIX} env: {what} failed (exit {res.returncode})")


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def setup_offline(venv: Path, python: str, wheelhouse: Path, driver: str) -> None:
    """A --system-site-packages venv over ``python`` (its torch) + the wheelhouse, installed offline."""
    refuse_unusable(probe_torch(python), driver, python)
    cfg = venv / "pyvenv.cfg"
    if cfg.exists() and "include-system-site-packages = true" not in cfg.read_text():
        raise SystemExit(
            f"{PREFIX} env: {venv} exists without --system-site-packages (not made by an offline gpu-check): "
            f"move it away or set VENV=<another folder>"
        )
    if not venv_python(venv).exists():
        args = [python, "-m", "venv", "--system-site-packages", str(venv)]
        print(f"{PREFIX} env: venv over the node's python: {' '.join(args)}", flush=True)
        if subprocess.run(args).returncode != 0:  # e.g. Debian's python3 without python3-venv (ensurepip)
            _run([*args, "--without-pip"], "venv without pip (pip comes from the wheelhouse)")
    install_offline(str(venv_python(venv)), wheelhouse)


def install_offline(py: str, wheelhouse: Path, project: Path = Path(".")) -> None:
    """Into interpreter ``py``: the wheelhouse's requirements, then tte-scale itself, with no index."""
    if subprocess.run([py, "-m", "pip", "--version"], capture_output=True).returncode != 0:
        wheels = sorted(wheelhouse.glob("pip-*.whl"))
        if not wheels:
            raise SystemExit(f"{PREFIX} env: {py} has no pip and {wheelhouse} no pip wheel")
        # pip runs from its own wheel (a zip on sys.path) to install itself.
        _run([py, f"{wheels[-1]}/pip", "install", "--no-index", "--find-links", str(wheelhouse), "pip"], "pip itself")
    pip = [py, "-m", "pip", "install", "--no-index", "--find-links", str(wheelhouse), "--disable-pip-version-check"]
    reqs = wheelhouse / "requirements.txt"
    # DeepSpeed is an sdist, built here against the node's torch (--no-build-isolation; ops are JIT-built
    # later): with the wheelhouse's setuptools, installed first (an old one has no bdist_wheel).
    tools = [ln.strip() for ln in reqs.read_text().splitlines() if ln.startswith("setuptools==")]
    if tools:
        _run([*pip, *tools], "build tools")
    _run([*pip, "--no-build-isolation", "-r", str(reqs)], "the wheelhouse's packages")
    _run([*pip, "--no-deps", "--no-build-isolation", "-e", str(project)], "tte-scale itself (editable, no deps)")


def setup_online(venv: Path, python: str, build: TorchBuild, torch_pin: str, driver: str) -> None:
    """Create or update ``venv`` from the package index with a torch of ``build``."""
    if not venv_python(venv).exists():
        _run([python, "-m", "venv", str(venv)], "new venv")
    py = str(venv_python(venv))
    have = probe_torch(py)
    if have is not None and driver_runs(have["cuda"], driver) is None:
        print(f"{PREFIX} env: keeping torch {have['torch']} (CUDA {have['cuda']}): driver {driver} runs it", flush=True)
    else:
        if have is not None:
            _run([py, "-m", "pip", "uninstall", "-y", "torch"], f"remove torch {have['torch']} (CUDA {have['cuda']})")
        if build.index_url is None:
            _run([py, "-m", "pip", "install", torch_pin], f"torch for CUDA {build.cuda} ({build.why})")
        else:
            # The dev pin may not exist for older CUDA builds: the newest build of that index.
            _run([py, "-m", "pip", "install", "torch", "--index-url", build.index_url], f"torch ({build.why})")
    _run([py, "-m", "pip", "install", "-e", ".", "pytest", "pytest-timeout", "hypothesis"], "tte-scale + test tools")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--venv", type=Path, default=Path(".venv"), help="the venv to create or update (default .venv)")
    ap.add_argument("--python", default=sys.executable, help="interpreter the venv is made from (default: this one)")
    ap.add_argument(
        "--wheelhouse",
        type=Path,
        default=Path("wheelhouse"),
        help="offline mode when WHEELHOUSE/requirements.txt exists (made by `make wheelhouse`)",
    )
    ap.add_argument("--torch-pin", default="torch", help="requirement of the PyPI (CUDA 13) torch, online mode")
    ap.add_argument("--nvidia-smi", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        driver, gpus = read_driver(args.nvidia_smi)
        print(f"{PREFIX} env: driver {driver}, {len(gpus)} GPU(s): {', '.join(sorted(set(gpus)))}", flush=True)
        if (args.wheelhouse / "requirements.txt").is_file():
            print(f"{PREFIX} env: offline, {args.python}'s own torch + {args.wheelhouse}/", flush=True)
            setup_offline(args.venv, args.python, args.wheelhouse, driver)
        else:
            setup_online(args.venv, args.python, torch_build_for_driver(driver), args.torch_pin, driver)
        info = probe_torch(str(venv_python(args.venv)))
        refuse_unusable(info, driver, str(venv_python(args.venv)))
    except NoGpu as exc:
        print(f"{PREFIX} no usable CUDA device: {exc}", file=sys.stderr, flush=True)
        return EXIT_NO_GPU
    print(f"{PREFIX} env: ready: torch {info['torch']} (CUDA {info['cuda']}), {info['devices']} device(s)", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    raise SystemExit(main())
