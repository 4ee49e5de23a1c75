"""`make wheelhouse`: what an offline GPU node needs for `make gpu-check`, as one folder of wheels.

A typical cluster GPU node reaches no package index but has Python with a CUDA torch, Triton,
numpy, pyarrow and tensorstore. This builds, on a connected machine, the rest of what the
check imports, for the node's Python (``--python-version``, manylinux x86_64):

* ``NEEDED``: the project's runtime dependencies that the check's steps import (not Ray,
  MONAI, submitit, pydicom, ... which it never loads) plus the test tools of ``pytest -m gpu``
  and the build tools of the offline install (setuptools, wheel, pip);
* their dependencies, found in this venv's installed metadata with markers evaluated for the
  target Python, stopping at what the node already has (``NODE_HAS``: torch and everything it
  depends on, Triton, numpy, pyarrow, tensorstore), so torch's GBs of CUDA wheels never travel;
* each pinned to the version installed here (the one the tests ran with), downloaded as a
  binary wheel with ``pip download --only-binary=:all: --no-deps``; DeepSpeed, published as an
  sdist only, as its sdist (built on the node with ``--no-build-isolation`` against its torch).

Writes ``OUT/requirements.txt`` (what `make gpu-check` installs offline), ``OUT/manifest.json``
(files and sizes) and ``RESULTS/wheelhouse.{json,md}`` (the size, for the record).

    python -m tte_scale.benchmarks.wheelhouse --python-version 3.12 --out wheelhouse
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from tte_scale.benchmarks.common import RESULTS, md_table, write_results

# What the check imports beyond the node's own packages (see benchmarks/gpu_check.py's steps).
NEEDED = (
    "deepspeed",  # the trainer (ZeRO-2, NCCL)
    "zarr",  # labels store (tte.zarr), shard manifests
    "numcodecs",  # the shards' blosc/zstd codec
    "google-crc32c",  # volume checksums, written by sharding, checked by the loader
    "numba",  # `tte-scale labels` kernels
    "nibabel",  # synth writes NIfTI, `tte-scale shard` reads it
    "pyyaml",
    "tqdm",
    "safetensors",
    "torchmetrics",  # evaluation code the trainer imports
    "pytest",  # pytest -m gpu
    "pytest-timeout",
    "hypothesis",
    "setuptools",  # the editable install and DeepSpeed's sdist build, offline
    "pip",  # a venv made where ensurepip is missing bootstraps pip from here
)
# A GPU node image has these (and torch's own dependencies, added from torch's metadata).
NODE_HAS = ("torch", "triton", "numpy", "pyarrow", "tensorstore")
SDIST_ONLY = ("deepspeed",)
MANYLINUX = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "linux_x86_64")


def norm(name: str) -> str:
    """PEP 503 normalized name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def marker_env(python_version: str) -> dict[str, str]:
    """Marker environment of a CPython ``python_version`` ('3.12') on Linux x86_64."""
    return {
        "python_version": python_version,
        "python_full_version": python_version + ".0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "extra": "",
    }


def requirements_of(dist: metadata.Distribution, env: dict[str, str], extras: frozenset = frozenset()) -> list:
    """(name, extras) of ``dist``'s dependencies that apply under ``env``, with those of ``extras``
    (zarr may need ``numcodecs[crc32c]``: an extra's own dependencies must travel too)."""
    from packaging.requirements import Requirement

    out = []
    for spec in dist.requires or []:
        req = Requirement(spec)
        if req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in ("", *extras)):
            out.append((norm(req.name), frozenset(req.extras)))
    return out


def closure(roots: tuple[str, ...], stop: set[str], env: dict[str, str]) -> dict[str, str]:
    """{name: installed version} of ``roots`` and their dependencies, not descending into ``stop``.

    Raises SystemExit naming a package this venv lacks (its version is what gets pinned).
    """
    found: dict[str, str] = {}
    seen: set = set()
    todo = [(norm(r), frozenset()) for r in roots]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen or name in stop:
            continue
        seen.add((name, extras))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(
                f"wheelhouse: {name} is not installed in this venv ({sys.prefix}): run `make venv`"
            ) from None
        found[name] = dist.version
        todo.extend(requirements_of(dist, env, extras))
    return found


def node_provides(env: dict[str, str]) -> set[str]:
    """NODE_HAS and everything they depend on (torch brings filelock, sympy, jinja2, fsspec, ...)."""
    have = set()
    for root in NODE_HAS:
        try:
            have |= set(closure((root,), set(), env))
        except SystemExit:
            have.add(norm(root))
    return have | {norm(n) for n in NODE_HAS}


def plan(python_version: str, node_has: tuple[str, ...] = ()) -> dict[str, str]:
    """{name: version} to put in the wheelhouse for ``python_version``; ``node_has``: more
    packages the node already has (e.g. numba, whose llvmlite is most of the size)."""
    env = marker_env(python_version)
    stop = node_provides(env) | {norm(n) for n in node_has}
    # setuptools is a torch dependency on 3.12 but the offline install needs >= 77 (PEP 639 license).
    stop -= {"setuptools", "pip"}
    return dict(sorted(closure(NEEDED, stop, env).items()))


def download(pins: dict[str, str], out: Path, python_version: str) -> None:
    """pip download each pin (binary wheels for the target; sdists for SDIST_ONLY) into ``out``."""
    abi = "cp" + python_version.replace(".", "")
    plat = [a for p in MANYLINUX for a in ("--platform", p)]
    wheels = [f"{n}=={v}" for n, v in pins.items() if n not in SDIST_ONLY]
    sdists = [f"{n}=={v}" for n, v in pins.items() if n in SDIST_ONLY]
    base = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(out), "--disable-pip-version-check"]
    cmds = [
        [
            *base,
            "--only-binary=:all:",
            "--python-version",
            python_version,
            "--implementation",
            "cp",
            "--abi",
            abi,
            "--abi",
            "abi3",
            "--abi",
            "none",
            *plat,
            *wheels,
        ],  # fmt: skip
    ]
    if sdists:
        cmds.append([*base, "--no-binary=:all:", *sdists])
    for cmd in cmds:
        print("wheelhouse: " + " ".join(cmd[3:8]) + f" ... ({len(cmd)} args)", flush=True)
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"wheelhouse: pip download failed (exit {res.returncode}):\n{res.stderr[-3000:]}")


def manifest(out: Path) -> dict:
    files = sorted(p for p in out.iterdir() if p.suffix in (".whl", ".gz", ".zip"))
    sizes = {p.name: p.stat().st_size for p in files}
    return {"files": sizes, "total_bytes": sum(sizes.values())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python-version", default="3.12", help="the GPU node's Python, major.minor (default 3.12)")
    ap.add_argument("--out", type=Path, default=Path("wheelhouse"), help="the wheelhouse folder (default wheelhouse/)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where wheelhouse.json/.md record its size")
    ap.add_argument(
        "--node-has",
        nargs="+",
        default=[],
        metavar="NAME",
        help="more packages the node already has, left out (e.g. numba llvmlite: 61 of the ~87 MiB)",
    )
    ap.add_argument("--plan-only", action="store_true", help="print the pins, download nothing")
    args = ap.parse_args(argv)
    if not re.fullmatch(r"3\.\d+", args.python_version):
        raise SystemExit(f"wheelhouse: --python-version {args.python_version!r}: expected major.minor, e.g. 3.12")
    pins = plan(args.python_version, tuple(args.node_has))
    if args.plan_only:
        print("\n".join(f"{n}=={v}" for n, v in pins.items()))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    download(pins, args.out, args.python_version)
    (args.out / "requirements.txt").write_text(
        "# `make wheelhouse` for Python " + args.python_version + ": what an offline `make gpu-check` installs.\n"
        + "".join(f"{n}=={v}\n" for n, v in pins.items())
    )  # fmt: skip
    man = manifest(args.out)
    man.update(
        python_version=args.python_version,
        pins=pins,
        node_has=[*NODE_HAS, *args.node_has],
        seconds=time.perf_counter() - t0,
    )
    (args.out / "manifest.json").write_text(json.dumps(man, indent=1) + "\n")
    mib = man["total_bytes"] / 2**20
    big = sorted(man["files"].items(), key=lambda kv: -kv[1])
    md = "\n".join(
        [
            f"# Wheelhouse for an offline GPU node (Python {args.python_version}, manylinux x86_64)",
            "",
            f"{len(man['files'])} files, {mib:.1f} MiB in all; the node provides {', '.join(man['node_has'])} "
            "and their dependencies. Largest files:",
            "",
            *md_table(["file", "MiB"], [[n, f"{b / 2**20:.2f}"] for n, b in big[:12]]),
        ]
    )
    write_results(args.results, "wheelhouse", {k: v for k, v in man.items()}, md)
    print(f"wheelhouse: {len(man['files'])} files, {mib:.1f} MiB in {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
