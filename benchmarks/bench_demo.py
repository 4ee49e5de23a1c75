"""The demo over several seeds: what `make demo` gives, and how much of it is the seed. Each seed
draws another cohort and initialization, or with --same-cohort one cohort and another
initialization and data order per seed, pooled (TTE - random init per seed and their mean):
  python -m tte_scale.benchmarks.bench_demo --seeds 0,1,2 --runs-dir runs/demo_seeds
  python -m tte_scale.benchmarks.bench_demo --config configs/demo_sparse.yaml --same-cohort \\
      --set subjects=10000 --set supervised=false --runs-dir runs/sparse_seeds --tag sparse

Runs ``tte-scale demo --set seed=S`` for each seed (a seed draws another synthetic cohort and
another initialization), then reads each run's ``eval/summary.json`` and stage timings and writes
``demo_seeds[_TAG].json`` / ``.md``: per seed the held-out task means with their bootstrap CIs
and the paired differences, across seeds the mean and range. ``--collect`` only reads run
folders made before (e.g. by hand, or by an interrupted run of this script).

``--same-cohort`` keeps the cohort and varies what pretraining draws (initialization, data
order): the first seed's run makes the cohort, labels and shards, every other seed trains and
evaluates on them (``--set train_seed=S --set cohort_from=DIR/seed_<first>``). Its runs share
their held-out scans, so it also pools them (`seed_pool`): TTE minus random init per seed and
their mean, every seed on the same subject resamples. The second example above is the check of
issue 18 on the sparse profile (benchmarks/results/sparse.md).

Not part of ``bench all``: one seed of the default demo takes ~10 minutes on 2 idle cores (three
trainings' worth of CPU). Figures are deterministic for a given machine and seed, not bitwise
across CPUs (the float reductions of the CPU kernels differ with the instruction set), which is
why the README quotes the spread over seeds rather than one run.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tte_scale.benchmarks import seed_pool
from tte_scale.benchmarks.common import (
    add_output_args,
    machine_info,
    machine_name,
    md_table,
    script_exit,
    script_parser,
    write_results,
)
from tte_scale.commands import add_config_arguments
from tte_scale.errors import InputError

NAME = "demo_seeds"
STAMPS = ".stages"  # tte_scale.commands.demo.STAMPS: one {seconds, argv} record per finished stage
STAGES = ("synth", "labels", "shard", "train", "supervised", "eval")
# The pairs the README quotes: headline probe/metric of each model.
HEADLINE = ("logistic/auroc", "cox/c_index")


def run_seed(run_dir: Path, seed: int, demo_args: list[str], cohort_from: Path | None = None) -> float:
    """Run the demo for one seed into ``run_dir``; returns its wall time (resumes a finished run).
    With ``cohort_from`` (``--same-cohort``) ``seed`` is the training seed on that folder's cohort;
    ``cohort_from == run_dir`` makes the cohort there."""
    seeds = ["--set", f"seed={seed}"] if cohort_from is None else ["--set", f"train_seed={seed}"]
    if cohort_from is not None and cohort_from != run_dir:
        seeds += ["--set", f"cohort_from={cohort_from}"]
    cmd = [sys.executable, "-m", "tte_scale.cli", "demo", "--out", str(run_dir), *demo_args, *seeds]
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


def _option(argv: list[str], flag: str) -> str | None:
    """The value after ``flag`` in a recorded command, or for ``--set KEY=V`` the last V of KEY."""
    if flag.endswith("="):
        vals = [b.split("=", 1)[1] for a, b in zip(argv, argv[1:]) if a == "--set" and b.startswith(flag)]
        return vals[-1] if vals else None
    return next((b for a, b in zip(argv, argv[1:]) if a == flag), None)


def read_run(run_dir: Path, seed: int, same_cohort: bool = False) -> dict:
    """One finished demo run: its task means, paired differences and stage times.

    Every stage it ran must have finished. The cohort's stages are required unless the run took
    them from another folder (``same_cohort``: then its training must have used ``seed``), and the
    supervised stage is optional (``supervised: false``)."""
    summary_path = run_dir / "eval" / "summary.json"
    if not summary_path.is_file():
        raise InputError(
            f"{summary_path}: missing: the demo for seed {seed} has not finished (run it without --collect)"
        )
    summary = json.loads(summary_path.read_text())
    stage_seconds, argvs = {}, {}
    for stage in STAGES:
        stamp = run_dir / STAMPS / f"{stage}.json"
        optional = stage == "supervised" or (same_cohort and stage in ("synth", "labels", "shard"))
        if optional and not stamp.is_file():
            stage_seconds[stage] = None  # not run here
            continue
        rec = json.loads(stamp.read_text()) if stamp.is_file() else {}
        if rec.get("seconds") is None:
            raise InputError(f"{stamp}: no finished-stage record with 'seconds' (the {stage} stage did not finish)")
        argvs[stage] = [str(a) for a in rec.get("argv", [])]
        stage_seconds[stage] = rec["seconds"]
    if same_cohort:
        if _option(argvs["train"], "seed=") != str(seed):
            raise InputError(f"{run_dir / STAMPS / 'train.json'}: this run was not trained with seed {seed}")
    elif _option(argvs["synth"], "--seed") != str(seed):
        raise InputError(
            f"{run_dir / STAMPS / 'synth.json'}: this run's cohort was not made with seed {seed} "
            f"({' '.join(argvs['synth'])})"
        )
    means, diffs = summary_figures(summary)
    return {
        "seed": seed,
        "run_dir": str(run_dir),
        "labels": _option(argvs["eval"], "--labels"),
        "tasks": _option(argvs["eval"], "--tasks"),
        "stage_seconds": stage_seconds,
        "total_seconds": round(sum(v for v in stage_seconds.values() if v is not None), 1),
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
        f"`{result['command']}`; "
        + (
            "one cohort, each seed draws another initialization and data order."
            if result.get("same_cohort")
            else "each seed draws another cohort and another initialization."
        ),
        "Held-out means over the benchmark tasks (headline probes: logistic AUROC, Cox C-index at each",
        f"task's horizon), 95% subject-bootstrap CIs. Load average at the start: {result['meta']['load_avg_1m']}.",
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
        [[r["seed"], *(_seconds(r["stage_seconds"][s]) for s in STAGES), f"{r['total_seconds']:.0f}"] for r in runs],
    )
    if "pooled_refused" in result:
        lines += ["", f"Not pooled: {result['pooled_refused']}"]
    if "pooled" in result:
        pool = result["pooled"]
        lines += [
            "",
            f"TTE minus random init per seed and their mean (`seed_pool`): every seed on the same "
            f"{pool['bootstrap']} subject resamples of the {pool['scans']['held_out']} held-out scans; the mean's CI",
            "covers resampling of held-out subjects for these seeds, not the spread between seeds.",
            "",
            *seed_pool.pool_table(pool),
        ]
    return "\n".join(lines)


def _seconds(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"  # "-": a stage this run took from another folder


def main(argv: list[str] | None = None) -> int:
    ap = script_parser("tte_scale.benchmarks.bench_demo", __doc__)
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    ap.add_argument(
        "--runs-dir", type=Path, default=Path("runs/demo_seeds"), help="one demo folder per seed: DIR/seed_S"
    )
    add_config_arguments(ap)  # the demo's --config (default configs/demo.yaml) and --set, passed to every run
    ap.add_argument(
        "--same-cohort",
        action="store_true",
        help="one cohort (the first seed's run makes it), seeds vary pretraining only; also pools the seeds",
    )
    ap.add_argument(
        "--pool-bootstrap", type=int, default=1000, help="subject resamples of the pooled lead (default 1000)"
    )
    ap.add_argument("--tag", default="", help="suffix of the result files' name (demo_seeds_TAG)")
    ap.add_argument("--collect", action="store_true", help="only read finished runs in --runs-dir, run nothing")
    add_output_args(ap)
    args = ap.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--seeds: integers separated by commas, got {args.seeds!r}")
    if not seeds or len(set(seeds)) != len(seeds):
        ap.error(f"--seeds: at least one seed, each once, got {args.seeds!r}")
    if args.same_cohort and args.pool_bootstrap < 1:
        ap.error(f"--pool-bootstrap {args.pool_bootstrap}: needs >= 1 resample")
    for o in args.overrides:
        if o.partition("=")[0].strip() in ("seed", "train_seed", "cohort_from"):
            ap.error(f"--set {o}: this script sets it per seed (--seeds, --same-cohort)")
    meta = machine_info()
    demo_args = ["--config", args.config or "configs/demo.yaml", *(a for o in args.overrides for a in ("--set", o))]
    first = args.runs_dir / f"seed_{seeds[0]}"
    runs = []
    for seed in seeds:
        run_dir = args.runs_dir / f"seed_{seed}"
        if not args.collect:
            run_seed(run_dir, seed, demo_args, first if args.same_cohort else None)
        runs.append(read_run(run_dir, seed, args.same_cohort))
    how = (
        ["--set train_seed=S", f"--set cohort_from={first} (the seeds after the first)"]
        if args.same_cohort
        else ["--set seed=S"]
    )
    command = ["tte-scale demo", *demo_args, *how, f"(seeds {','.join(map(str, seeds))})"]
    result = {
        "name": NAME,
        "command": " ".join(command),
        "machine": args.machine or machine_name(),
        "meta": meta,
        "same_cohort": args.same_cohort,
        "seeds": runs,
        "across_seeds": across(runs, "mean_over_tasks", "value"),
        "tte_minus_across_seeds": across(runs, "tte_minus", "diff"),
    }
    if args.same_cohort and len(runs) > 1:
        cohorts = {(r["labels"], r["tasks"]) for r in runs}
        if len(cohorts) != 1 or None in next(iter(cohorts)):
            raise InputError(f"--same-cohort: the runs' evaluations used different labels or task sets: {cohorts}")
        labels, tasks = cohorts.pop()
        evals = [Path(r["run_dir"]) / "eval" for r in runs]
        try:
            result["pooled"] = seed_pool.pool_runs(Path(labels), tasks, evals, bootstrap=args.pool_bootstrap)
        except InputError as exc:  # e.g. a task without positives among the held-out scans: reported, not averaged
            result["pooled_refused"] = str(exc)
            print(f"not pooled: {exc}", file=sys.stderr)
    name = NAME + (f"_{args.tag}" if args.tag else "")
    js, md = write_results(args.out, name, result, render(result))
    print(f"wrote {js} and {md}")
    return 0


if __name__ == "__main__":
    script_exit(main, "bench_demo")
