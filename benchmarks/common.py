"""Helpers shared by the benchmark scripts: timing with warm-up, machine info, tables, output.

Every script in this folder keeps ``main(argv=None) -> int`` with ``--out DIR`` and
``--machine NAME`` so that ``tte-scale bench`` can call it in-process; the helpers here keep
their timing rules and results files alike:

* timings: ``warmup`` untimed calls, then ``repeats`` timed ones; the median is the figure,
  the spread is reported as min/max and the interquartile range relative to the median. The
  dev machine is shared, so several callables are timed interleaved (one call of each per
  round) and only ratios between them are quoted.
* results: ``DIR/<name>.json`` (with a ``meta`` block naming the machine and software) and
  ``DIR/<name>.md`` (a markdown table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

# The checkout this package was installed from (editable install), or None for a wheel install.
_ROOT = Path(__file__).resolve().parents[1]
REPO: Path | None = _ROOT if (_ROOT / "pyproject.toml").is_file() and (_ROOT / "benchmarks").is_dir() else None
#: Default results folder: the committed figures in a checkout, else ``runs/bench`` under the cwd.
RESULTS = REPO / "benchmarks" / "results" if REPO is not None else Path("runs") / "bench"


# -- timing ---------------------------------------------------------------------------------------


def summarize(seconds: Sequence[float]) -> dict[str, float]:
    """Median and spread of repeated timings (seconds)."""
    if not seconds:
        raise ValueError("summarize: no timings")
    xs = sorted(seconds)
    med = statistics.median(xs)
    if len(xs) >= 4:
        q1, _, q3 = statistics.quantiles(xs, n=4)
    else:
        q1, q3 = xs[0], xs[-1]
    return {
        "median_s": med,
        "min_s": xs[0],
        "max_s": xs[-1],
        "iqr_rel": (q3 - q1) / med if med > 0 else 0.0,
        "n": len(xs),
    }


def time_fn(fn: Callable[[], Any], *, warmup: int, repeats: int, sync: Callable[[], None] | None = None) -> dict:
    """Time ``fn`` after ``warmup`` untimed calls; ``sync`` (e.g. cuda synchronize) ends each call."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return summarize(times)


def time_interleaved(
    fns: dict[str, Callable[[], Any]], *, warmup: int, repeats: int, sync: Callable[[], None] | None = None
) -> dict[str, dict]:
    """Time several callables in alternation, so load from other processes on a shared machine
    hits all of them alike; returns ``summarize`` of each."""
    sync = sync or (lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t0)
    return {k: summarize(v) for k, v in times.items()}


# -- machine --------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # not installed
        return None


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """What the figures were measured on: CPU, memory, GPUs, software, load at the start."""
    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "mem_gib": _mem_gib(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "software": {
            m: _version(m)
            for m in (
                "torch",
                "deepspeed",
                "numpy",
                "numcodecs",
                "zarr",
                "ray",
                "webdataset",
                "monai",
                "triton",
                "tte-scale",
            )
        },
        "device": device,
    }
    if device == "cuda":
        import torch

        if torch.cuda.is_available():
            props = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
            info["gpus"] = [{"name": p.name, "mem_gib": round(p.total_memory / 2**30, 1)} for p in props]
            info["cuda"] = torch.version.cuda
    return info


def machine_name(device: str = "cpu") -> str:
    """A short name for tables: the GPU on cuda, the CPU and its core count otherwise."""
    if device == "cuda":
        import torch

        if torch.cuda.is_available():
            n = torch.cuda.device_count()
            return f"{torch.cuda.get_device_name()} ({n} GPU{'s' if n > 1 else ''})"
    return f"{_cpu_model()}, {os.cpu_count()} cores"


def add_output_args(ap: argparse.ArgumentParser, default_out: Path = RESULTS) -> None:
    """The ``--out DIR`` / ``--machine NAME`` pair every benchmark script takes."""
    ap.add_argument(
        "--out",
        type=Path,
        default=default_out,
        help=f"folder for NAME.json and NAME.md (default {display_path(default_out)})",
    )
    ap.add_argument(
        "--machine", default=None, help="machine name written into the results (default: the CPU model / GPU name)"
    )


def display_path(p: Path) -> str:
    """``p`` relative to the checkout when it lies inside one (for help texts and recorded commands)."""
    p = Path(p)
    return str(p.relative_to(REPO)) if REPO is not None and p.is_absolute() and p.is_relative_to(REPO) else str(p)


# -- output ---------------------------------------------------------------------------------------


def md_table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Markdown table lines; cells are str()-ed, so format numbers before."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if len(r) != len(head):
            raise ValueError(f"md_table: row of {len(r)} cells under {len(head)} columns: {r}")
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    return lines


def write_results(out_dir: Path, name: str, result: dict[str, Any], md: str) -> tuple[Path, Path]:
    """Write ``out_dir/name.json`` and ``out_dir/name.md``; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    js, mdp = out_dir / f"{name}.json", out_dir / f"{name}.md"
    js.write_text(json.dumps(result, indent=1, default=str) + "\n")
    mdp.write_text(md if md.endswith("\n") else md + "\n")
    return js, mdp


def write_stamped(args, name: str, result: dict[str, Any], device: str, markdown) -> None:
    """``name``.json / .md under ``args.out`` with the machine recorded (``result["meta"]``;
    ``args.machine`` names it, else the CPU model / GPU name); ``markdown(result, machine)``."""
    machine = args.machine or machine_name(device)
    result["meta"] = {**machine_info(device), "machine": machine}
    js, md = write_results(args.out, name, result, markdown(result, machine))
    print(f"wrote {js} and {md}")


def fmt_spread(s: dict[str, float], scale: float = 1e3) -> str:
    """'12.3 (±4%)': median in ms by default, with the interquartile range relative to it."""
    return f"{s['median_s'] * scale:.2f} (±{50 * s['iqr_rel']:.0f}%)"


def script_exit(main: Callable[[], int], prog: str) -> NoReturn:
    """``raise SystemExit(main())`` for a script run on its own, with the CLI's rule for bad input:
    one line naming what is wrong and exit status 2, not a traceback."""
    from tte_scale.cli import EXIT_USER_ERROR
    from tte_scale.config import ConfigError
    from tte_scale.errors import TteScaleError

    try:
        code = main()
    except (ConfigError, TteScaleError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        code = EXIT_USER_ERROR
    raise SystemExit(code)


def script_parser(module: str, doc: str) -> argparse.ArgumentParser:
    """The parser of a run-alone script: ``python -m`` + its module as prog, the first paragraph of
    its docstring as description, the docstring's layout kept."""
    return argparse.ArgumentParser(
        prog=f"python -m {module}",
        description=doc.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
