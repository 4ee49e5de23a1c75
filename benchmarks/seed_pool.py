"""TTE minus a baseline over several seeds: each seed's paired difference and their mean.

`tte-scale eval` gives one run's lead over its baseline (random init by default) with a paired
subject-bootstrap CI. Over several seeds each run's CI comes from its own resamples, so they
cannot be averaged. This tool re-runs eval's own probes on the embeddings each evaluation
cached (``<out>/embeddings/<model>-<digest>.npz``), every run on the same held-out scans and the
same subject resamples, and reports per seed the paired difference of the task means, and for
the seeds together the mean of those differences with a CI taken replicate by replicate.

What the pooled CI covers: resampling of held-out subjects, for the average of these seeds. It
is not an interval over the distribution of seeds (three seeds cannot estimate that); the per-seed
rows and their range stand next to it for that reason.

    python -m tte_scale.benchmarks.seed_pool --labels runs/big/labels \\
        --tasks configs/tasks/sparse.yaml --eval runs/big/ev_s0 --eval runs/big/ev_s1 \\
        --eval runs/big/ev_s2 --tag sparse_large
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from tte_scale.benchmarks.common import add_output_args, md_table, script_exit, script_parser, write_stamped
from tte_scale.benchmarks.detector_ceiling import evaluate_sets, read_embeddings, read_outcome_inputs
from tte_scale.errors import InputError

SPLITS = ("train", "tuning", "held_out")


def embeddings_of(eval_dir: Path, model: str) -> Path:
    """The one embeddings file `tte-scale eval` cached for ``model`` under ``eval_dir``."""
    found = sorted((eval_dir / "embeddings").glob(f"{model}-*.npz"))
    if len(found) != 1:
        what = "none" if not found else f"{len(found)} ({', '.join(p.name for p in found)})"
        raise InputError(
            f"{eval_dir / 'embeddings'}: expected one {model}-<digest>.npz cached by `tte-scale eval`, found {what}"
        )
    return found[0]


def pooled(diffs: list[np.ndarray], points: list[float], level: float = 0.95) -> dict:
    """Mean over seeds of the point differences, and its percentile CI from the mean of the
    seeds' replicate differences (one subject resample = one replicate of every seed)."""
    from tte_scale.eval import bootstrap as bs

    mean_reps = np.stack(diffs).mean(0)  # NaN where any seed's replicate is undefined
    lo, hi, nb = bs.percentile_ci(mean_reps, level)
    fin = mean_reps[np.isfinite(mean_reps)]
    return {
        "diff": float(np.mean(points)),
        "ci_low": lo,
        "ci_high": hi,
        "n_boot": nb,
        "p_le_0": float((fin <= 0).mean()) if fin.size else None,
        "range": [float(min(points)), float(max(points))],
    }


def pool_runs(
    labels: Path,
    task_set: str,
    evals: list[Path],
    reference: str = "tte",
    versus: str = "random_init",
    bootstrap: int = 1000,
    seed: int = 0,
    only_labelled: bool = False,
) -> dict:
    """Per run and pooled ``reference`` - ``versus`` over the `tte-scale eval` folders ``evals``
    (one per seed, all on the cohort of ``labels``), every run on the same subject resamples.
    ``only_labelled``: probe only the scans ``labels`` holds (``evaluate_sets``)."""
    from tte_scale.eval.compare import mean_replicates, paired_differences
    from tte_scale.eval.report import HEADLINE

    tables, tasks, horizons = read_outcome_inputs(labels, task_set)
    sets = {}
    for i, d in enumerate(evals):
        for model in (reference, versus):
            path = embeddings_of(Path(d), model)
            _, ids, feats = read_embeddings(f"{model}={path}", SPLITS)
            sets[f"{i}/{model}"] = (ids, feats)
    print(f"probing {len(sets)} feature sets ({len(evals)} runs x 2) ...", flush=True)
    results, scans = evaluate_sets(sets, tables, tasks, horizons, bootstrap, seed, only_labelled)
    per_run, metrics = [], {}
    for probe, metric in HEADLINE:
        diffs, points = [], []
        for i, d in enumerate(evals):
            ref, other = results[f"{i}/{reference}"], results[f"{i}/{versus}"]
            rows = paired_differences({"ref": ref, "other": other}, "ref", [(probe, metric)])
            ra, rb = (mean_replicates(x, probe, metric, tasks) for x in (ref, other))
            if not rows or rows[0]["tasks"] != len(tasks) or ra is None or rb is None:
                # the mean over seeds needs every seed on the same tasks, with replicates for each
                raise InputError(f"{d}: {probe} {metric} is undefined for some of the tasks {tasks}")
            row = rows[0]
            diffs.append(ra - rb)
            points.append(row["diff"])
            per_run.append(
                {"eval": str(d), "probe": probe, "metric": metric, **{k: row[k] for k in ("diff", "ci_low", "ci_high")}}
            )
        metrics[f"{probe}/{metric}"] = pooled(diffs, points)
    return {
        "reference": reference,
        "versus": versus,
        "tasks": tasks,
        "bootstrap": bootstrap,
        "seed": seed,
        "only_labelled": only_labelled,
        "scans": scans,
        "runs": [str(d) for d in evals],
        "per_run": per_run,
        "pooled": metrics,
    }


def run(args) -> dict:
    result = pool_runs(
        args.labels, args.tasks, args.eval, args.reference, args.versus, args.bootstrap, args.seed, args.only_labelled
    )
    return {**result, "command": " ".join(["python -m tte_scale.benchmarks.seed_pool", *sys.argv[1:]])}


def _ci(d: dict) -> str:
    ci = "" if d["ci_low"] is None else f" [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"
    return f"{d['diff']:+.3f}{ci}"


def pool_table(r: dict) -> list[str]:
    """Markdown lines: each run's difference with its CI, then the mean of the runs (bold)."""
    rows = [[x["eval"], f"{x['probe']} {x['metric']}", _ci(x)] for x in r["per_run"]]
    for key, p in r["pooled"].items():
        rows.append([f"**mean of the {len(r['runs'])} runs**", key.replace("/", " "), f"**{_ci(p)}**"])
    return md_table(["run (eval folder)", "probe metric", "difference of task means [paired CI]"], rows)


def markdown(r: dict, machine: str) -> str:
    return (
        "\n".join(
            [
                f"# {r['reference']} minus {r['versus']}, per run and over the runs",
                "",
                f"Machine: {machine}. Tasks {', '.join(r['tasks'])} (mean over them); held out, scans {r['scans']}; "
                f"every run on the same {r['bootstrap']} subject resamples (seed {r['seed']}), 95% percentile CIs. "
                "The pooled CI covers resampling of held-out subjects for the average of these runs, not "
                "the spread between seeds.",
                f"Command: `{r['command']}`",
                "",
                *pool_table(r),
            ]
        )
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = script_parser("tte_scale.benchmarks.seed_pool", __doc__)
    ap.add_argument("--labels", type=Path, required=True, help="labels folder of the cohort (bench.parquet)")
    ap.add_argument("--tasks", required=True, help="task set the evaluations used (e.g. configs/tasks/sparse.yaml)")
    ap.add_argument(
        "--eval",
        action="append",
        required=True,
        metavar="DIR",
        help="a `tte-scale eval --out` folder (its embeddings/ cache), one per seed; repeatable, at least 2",
    )
    ap.add_argument("--reference", default="tte", help="model whose lead is measured (default tte)")
    ap.add_argument("--versus", default="random_init", help="the baseline (default random_init)")
    ap.add_argument("--bootstrap", type=int, default=1000, help="subject resamples (default 1000)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the resamples, shared by every run (default 0)")
    ap.add_argument(
        "--only-labelled",
        action="store_true",
        help="probe only the scans --labels holds (default: a scan without labels is refused); e.g. the labels "
        "of a sub-cohort (the first N subjects of a synthetic cohort) on the larger cohort's evaluations",
    )
    ap.add_argument("--tag", default="", help="suffix of the result files' name")
    add_output_args(ap)
    args = ap.parse_args(argv)
    if len(args.eval) < 2:
        raise InputError("--eval: give at least 2 evaluation folders (one per seed)")
    if args.bootstrap < 1:
        raise InputError(f"--bootstrap {args.bootstrap}: needs >= 1 resample for a CI")
    name = f"seed_pool_{args.reference}_minus_{args.versus}" + (f"_{args.tag}" if args.tag else "")
    write_stamped(args, name, run(args), "cpu", markdown)
    return 0


if __name__ == "__main__":
    script_exit(main, "python -m tte_scale.benchmarks.seed_pool")
