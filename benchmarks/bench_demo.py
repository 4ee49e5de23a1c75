"""The demo over several seeds: what `make demo` gives, and how much of it is the seed.

Runs ``tte-scale demo --set seed=S`` for each seed (a seed draws another synthetic cohort and
another initialization), then reads each run's ``eval/summary.json`` and stage timings and writes
``demo_seeds.json`` / ``demo_seeds.md``: per seed the held-out task means with their bootstrap
CIs and the paired differences, across seeds the mean and range. ``--collect`` only reads run
folders made before (e.g. by hand, or by an interrupted run of this script).

Not part of ``bench all``: one seed takes ~10 minutes on 2 idle cores (three trainings' worth of
CPU). Figures are deterministic for a given machine and seed, not bitwise across CPUs (the
float reductions of the CPU kernels differ with the instruction set), which is why the README
quotes the spread over seeds rather than one run.

    python -m tte_scale.benchmarks.bench_demo --seeds 0,1,2 --runs-dir runs/demo_seeds
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tte_scale.benchmarks.common import (
    add_output_args,
    machine_info,
    machine_name,
    md_table,
    script_exit,
    script_parser,
    write_results,
)
from tte_scale.errors import InputError

NAME = "demo_seeds"
STAMPS = ".stages"  # tte_scale.commands.demo.STAMPS: one {seconds, argv} record per finished stage
STAGES = ("synth", "labels", "shard", "train", "supervised", "eval")
# The pairs the README quotes: headline probe/metric of each model.
HEADLINE = ("logistic/auroc", "cox/c_index")


def run_seed(run_dir: Path, seed: int) -> float:
    """Run the demo for one seed into ``run_dir``; returns its wall time (resumes a finished run)."""
    cmd = [sys.executable, "-m", "tte_scale.cli", "demo", "--out", str(run_dir), "--set", f"seed={seed}"]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def summary_figures(summary: dict) -> tuple[dict, dict]:
    """An eval ``summary.json``'s held-out task means (``model/probe/metric`` -> value, CI) and
    its paired differences against the evaluated checkpoint (-> diff, CI)."""
    means = {
        key: {"value": v, "ci95": [lo, hi]} for key, (v, lo, hi) in summary["mean_over_tasks"].items() if v is not None
    }
    diffs = {
        f"{d['model']}/{d['probe']}/{d['metric']}": {"diff": d["diff"], "ci95": [d["ci_low"], d["ci_high"]]}
        for d in summary.get("tte_minus", [])
    }
    return means, diffs


def read_run(run_dir: Path, seed: int) -> dict:
    """One finished demo run: its task means, paired differences and stage times."""
    summary_path = run_dir / "eval" / "summary.json"
    if not summary_path.is_file():
        raise InputError(
            f"{summary_path}: missing: the demo for seed {seed} has not finished (run it without --collect)"
        )
    summary = json.loads(summary_path.read_text())
    stage_seconds = {}
    for stage in STAGES:
        stamp = run_dir / STAMPS / f"{stage}.json"
        rec = json.loads(stamp.read_text()) if stamp.is_file() else {}
        if rec.get("seconds") is None:
            raise InputError(f"{stamp}: no finished-stage record with 'seconds' (the {stage} stage did not finish)")
        argv = [str(a) for a in rec.get("argv", [])]
        if stage == "synth" and not any(a == "--seed" and b == str(seed) for a, b in zip(argv, argv[1:])):
            raise InputError(f"{stamp}: this run's cohort was not made with seed {seed} ({' '.join(argv)})")
        stage_seconds[stage] = rec["seconds"]
    means, diffs = summary_figures(summary)
    return {
        "seed": seed,
        "run_dir": str(run_dir),
        "stage_seconds": stage_seconds,
        "total_seconds": round(sum(stage_seconds.values()), 1),
        "held_out_scans": summary.get("scans_evaluated", {}).get("held_out"),
        "mean_over_tasks": means,
        "tte_minus": diffs,
    }


def across(runs: list[dict], field: str, inner: str) -> dict[str, dict[str, float]]:
    """Mean, min and max over seeds of every key present in all runs."""
    keys = set.intersection(*(set(r[field]) for r in runs))
    out = {}
    for key in sorted(keys):
        xs = [r[field][key][inner] for r in runs]
        out[key] = {"mean": statistics.fmean(xs), "min": min(xs), "max": max(xs)}
    return out


def render(result: dict) -> str:
    runs = result["seeds"]
    models = [
        m
        for m in ("tte", "random_init", "supervised", "oracle")
        if any(m + "/" in k for k in runs[0]["mean_over_tasks"])
    ]
    lines = [
        f"# The demo over {len(runs)} seed{'s' if len(runs) > 1 else ''} ({result['machine']})",
        "",
        f"`{result['command']}`; each seed draws another cohort and another initialization. Held-out",
        "means over the 8 benchmark tasks (headline probes: logistic AUROC, Cox C-index at each task's",
        f"horizon), 95% subject-bootstrap CIs. Load average at the start: {result['meta']['load_avg_1m']}.",
        "",
    ]
    head = (
        ["model"]
        + [f"{p} seed {r['seed']}" for p in ("AUROC", "C-index") for r in runs]
        + ["AUROC mean [range]", "C mean [range]"]
    )
    rows = []
    for m in models:
        keys = [k for k in (f"{m}/{h}" for h in HEADLINE)]
        if m == "oracle":
            keys = ["oracle/oracle/auroc", "oracle/oracle/c_index"]
        cells = [m]
        for k in keys:
            cells += [f"{r['mean_over_tasks'][k]['value']:.3f}" if k in r["mean_over_tasks"] else "" for r in runs]
        for k in keys:
            a = result["across_seeds"].get(k)
            cells.append(f"{a['mean']:.3f} [{a['min']:.3f}, {a['max']:.3f}]" if a else "")
        rows.append(cells)
    lines += md_table(head, rows)
    lines += ["", "Paired differences, TTE minus each model (same bootstrap resamples):", ""]
    head = ["difference"] + [f"seed {r['seed']}" for r in runs] + ["mean [range]"]
    rows = []
    for key, a in result["tte_minus_across_seeds"].items():
        if key.split("/", 1)[1] not in HEADLINE:
            continue
        cells = [f"tte - {key}"]
        for r in runs:
            d = r["tte_minus"][key]
            cells.append(f"{d['diff']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]")
        cells.append(f"{a['mean']:+.3f} [{a['min']:+.3f}, {a['max']:+.3f}]")
        rows.append(cells)
    lines += md_table(head, rows)
    lines += ["", "Wall time per stage (s):", ""]
    lines += md_table(
        ["seed", *STAGES, "total"],
        [[r["seed"], *(f"{r['stage_seconds'][s]:.0f}" for s in STAGES), f"{r['total_seconds']:.0f}"] for r in runs],
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = script_parser("tte_scale.benchmarks.bench_demo", __doc__)
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    ap.add_argument(
        "--runs-dir", type=Path, default=Path("runs/demo_seeds"), help="one demo folder per seed: DIR/seed_S"
    )
    ap.add_argument("--collect", action="store_true", help="only read finished runs in --runs-dir, run nothing")
    add_output_args(ap)
    args = ap.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--seeds: integers separated by commas, got {args.seeds!r}")
    if not seeds:
        ap.error("--seeds: at least one seed")
    meta = machine_info()
    runs = []
    for seed in seeds:
        run_dir = args.runs_dir / f"seed_{seed}"
        if not args.collect:
            run_seed(run_dir, seed)
        runs.append(read_run(run_dir, seed))
    result = {
        "name": NAME,
        "command": f"tte-scale demo --set seed=S (seeds {','.join(map(str, seeds))}; configs/demo.yaml)",
        "machine": args.machine or machine_name(),
        "meta": meta,
        "seeds": runs,
        "across_seeds": across(runs, "mean_over_tasks", "value"),
        "tte_minus_across_seeds": across(runs, "tte_minus", "diff"),
    }
    js, md = write_results(args.out, NAME, result, render(result))
    print(f"wrote {js} and {md}")
    return 0


if __name__ == "__main__":
    script_exit(main, "bench_demo")
