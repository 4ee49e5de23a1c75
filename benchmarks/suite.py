"""Run benchmark scripts in this process through their ``main(argv)`` and collect the results.

A script is imported as a module (``tte_scale.benchmarks.bench_<stage>``) and called with
``--out DIR --machine NAME`` plus its sizes. One failing stage does not stop the others: its
error is recorded in the summary and the suite exits non-zero at the end.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import shlex
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from tte_scale.benchmarks.stages import Stage
from tte_scale.errors import InputError


def load_script(stage: Stage):
    """Import the stage's script module; a missing baseline library names the extra to install."""
    try:
        module = importlib.import_module(stage.module)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "tte_scale":
            raise
        raise InputError(
            f"benchmark {stage.name!r} needs {exc.name!r}: install the dev extra (pip install 'tte-scale[dev]')"
        ) from None
    if not callable(getattr(module, "main", None)):
        raise InputError(f"{stage.module}: no main(argv) function")
    return module


@contextlib.contextmanager
def _argv(argv: list[str]):
    """For a script whose ``main()`` still reads ``sys.argv`` instead of taking ``argv``."""
    saved = sys.argv
    sys.argv = [saved[0], *argv]
    try:
        yield
    finally:
        sys.argv = saved


def call_main(module, argv: list[str]) -> int:
    """``main(argv)``; exit codes from ``SystemExit`` (argparse, explicit exits) are returned."""
    takes_argv = bool(inspect.signature(module.main).parameters)
    try:
        if takes_argv:
            rc = module.main(argv)
        else:
            with _argv(argv):
                rc = module.main()
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return int(exc.code or 0)
        print(exc.code, file=sys.stderr)
        return 1
    return int(rc or 0)


def run_stage(stage: Stage, out: Path, machine: str, device: str, full: bool, extra: list[str]) -> dict[str, Any]:
    """Run one stage; returns its record for the summary (status, seconds, argv, result)."""
    argv = [*stage.argv(device, full), "--out", str(out), "--machine", machine, *extra]
    shown = shlex.join(["python", "-m", stage.module, *argv])
    print(f"== bench {stage.name}: {shown}", flush=True)
    rec: dict[str, Any] = {
        "stage": stage.name,
        "what": stage.what,
        "command": shown,
        "device": device if stage.takes_device else "cpu",
    }
    t0 = time.perf_counter()
    try:
        module = load_script(stage)
        with _torch_threads_kept():
            rc = call_main(module, argv)
    except Exception as exc:  # one broken stage must not lose the others' results
        traceback.print_exc()
        rc, rec["error"] = 1, f"{type(exc).__name__}: {exc}"
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    result = out / f"{stage.name}.json"
    if rc != 0:
        rec["status"] = "failed"
        rec.setdefault("error", f"exit status {rc}")
    elif not result.is_file():
        rec["status"] = "failed"
        rec["error"] = f"{stage.module} finished but wrote no {result} (does it honour --out?)"
    else:
        rec["status"] = "ok"
        rec["result"] = json.loads(result.read_text())
    print(
        f"== bench {stage.name}: {rec['status']} in {rec['seconds']} s"
        + (f" ({rec['error']})" if "error" in rec else ""),
        flush=True,
    )
    return rec


@contextlib.contextmanager
def _torch_threads_kept():
    """Scripts may pin torch to one thread; the next stage gets the count back."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        yield
        return
    n = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(n)


def load_results(out: Path, names: list[str]) -> list[dict[str, Any]]:
    """Records for stages already measured into ``out`` (``summary`` without running)."""
    recs = []
    for name in names:
        path = out / f"{name}.json"
        if path.is_file():
            recs.append(
                {"stage": name, "status": "ok", "result": json.loads(path.read_text()), "command": f"(from {path})"}
            )
    return recs
