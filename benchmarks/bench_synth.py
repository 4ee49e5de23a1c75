"""Benchmark `tte-scale synth`: subjects/s and peak memory (RSS of the whole process tree).

Runs the real CLI in a subprocess for each N, samples the summed RSS of the CLI and its worker
processes every 50 ms (psutil), and writes benchmarks/results/synth.{json,md}. Peak memory
must not grow with N: each worker holds one chunk (<= chunk_subjects subjects) at a time.

    .venv/bin/python benchmarks/bench_synth.py [--sizes 200 2000] [--workers 2] [--machine "dev CPU, 2 cores"]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from tte_scale.benchmarks.common import add_output_args, machine_info, machine_name, write_results


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc] + proc.children(recursive=True):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_one(n: int, workers: int, profile: str, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_synth_") as tmp:
        out = Path(tmp) / "cohort"
        cmd = [
            sys.executable,
            "-m",
            "tte_scale.cli",
            "synth",
            "--out",
            str(out),
            "--subjects",
            str(n),
            "--workers",
            str(workers),
            "--profile",
            profile,
            "--no-progress",
            *extra,
        ]
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ps = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _tree_rss(ps))
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"synth failed for N={n}: {stderr}")
        summary = json.loads((out / "synth.json").read_text())["summary"]
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {
        "load_avg_1m_before": round(load_before, 2),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        "subjects": n,
        "workers": workers,
        "profile": profile,
        "wall_s": round(wall, 2),
        "subjects_per_s": round(n / wall, 2),
        "scans": summary["scans"],
        "events": summary["events"],
        "peak_rss_mib": round(peak / 2**20, 1),
        "output_mib": round(size / 2**20, 1),
        "event_rates": {k: round(v, 3) for k, v in summary["event_rates"].items()},
        "oracle_c_index": {k: round(v, 3) for k, v in summary["oracle_c_index"].items()},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 2000])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--profile", default="compact")
    add_output_args(ap)
    args = ap.parse_args(argv)
    args.machine = args.machine or machine_name()
    rows = [run_one(n, args.workers, args.profile, []) for n in args.sizes]
    result = {"machine": args.machine, "meta": machine_info(), "runs": rows}
    head = (
        "| subjects | workers | profile | wall s | subjects/s | scans | events | peak RSS MiB (all procs) "
        "| output MiB | load avg before/after |"
    )
    lines = [
        f"# tte-scale synth ({args.machine})",
        "",
        "The dev machine is shared: the load average says how busy it was (2 = both cores busy).",
        "",
        head,
        "|" + "---|" * 10,
    ]
    for r in rows:
        lines.append(
            f"| {r['subjects']} | {r['workers']} | {r['profile']} | {r['wall_s']} | {r['subjects_per_s']} | "
            f"{r['scans']} | {r['events']} | {r['peak_rss_mib']} | {r['output_mib']} | "
            f"{r['load_avg_1m_before']} / {r['load_avg_1m_after']} |"
        )
    last = rows[-1]
    lines += [
        "",
        f"Event rates at N={last['subjects']}: " + ", ".join(f"{k} {v:.1%}" for k, v in last["event_rates"].items()),
        "",
        f"Oracle C-index at N={last['subjects']}: " + ", ".join(f"{k} {v}" for k, v in last["oracle_c_index"].items()),
    ]
    write_results(args.out, "synth", result, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
