"""Is a biomarker lost in the features or in the outcome probe? Over `tte-scale eval` embeddings.

`tte-scale eval` scores an encoder by probes trained on the outcome labels alone. When the
features hold a biomarker (a synthetic cohort's truth says how well) and the probes still do not
beat random init, two things can be short: the biomarker in the features, or the probe's
ability to find its direction from few events. This tool separates them. For each embeddings
file (NAME=PATH, as `tte-scale eval` caches them in <out>/embeddings/):

* ridge regression from the features to the truth's --target (train scans, standardized by the
  train scans, alpha picked by the tuning scans' Spearman) gives a one-number estimate of the
  target per scan; its held-out Spearman is how much of the target the features carry;
* through `tte-scale eval`'s own protocol (logistic and Cox probes, l2 on tuning, held out,
  subject-bootstrap CIs): the full features, and the estimate alone (a probe told which
  direction holds the target), with the paired difference estimate minus full features;
* the true target through the same protocol (the oracle), and the true target plus independent
  Gaussian noise scaled to each estimate's held-out Spearman (what an estimate as good would
  give if its errors were independent of the outcome; the mean of --noise-draws draws, point
  values).

Reading it: estimate well above the full features = the probe cannot find the direction from the
labels; estimate well below the noise model = the estimate's errors follow something the outcome
does not (e.g. it ranks presence rather than size).

    python -m tte_scale.benchmarks.probe_gap --labels runs/demo_sparse/labels \\
        --truth runs/demo_sparse/cohort/truth --tasks configs/tasks/sparse.yaml \\
        --embeddings tte=runs/ev/embeddings/tte-<digest>.npz \\
        --embeddings random_init=runs/ev/embeddings/random_init-<digest>.npz --tag blob900
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from tte_scale.benchmarks.common import add_output_args, md_table, script_exit, script_parser
from tte_scale.benchmarks.detector_ceiling import outcome_metrics, read_embeddings, read_outcome_inputs
from tte_scale.benchmarks.encoder_ceiling import read_truth, spearman, write_ceiling
from tte_scale.errors import InputError

SPLITS = ("train", "tuning", "held_out")
ALPHAS = tuple(10.0**e for e in range(-2, 5))
HEAD = ("mean/logistic/auroc", "mean/cox/c_index")


def target_of(ids: dict, truth: dict[str, float], source: str) -> dict[str, np.ndarray]:
    """The truth's value for every scan of every split; a scan the truth lacks is refused."""
    out = {}
    for s in SPLITS:
        missing = [x for x in ids[s].tolist() if x not in truth]
        if missing:
            raise InputError(f"{source}: {len(missing)} {s} scans are not in the truth (first: {missing[0]})")
        out[s] = np.array([truth[x] for x in ids[s].tolist()], dtype=np.float64)
    return out


def ridge_estimate(feats: dict, y: dict) -> tuple[dict[str, np.ndarray], float, float]:
    """(one-number estimate per split, alpha, held-out Spearman): ridge on train-standardized
    features, alpha by the tuning scans' Spearman (the first of equal ones)."""
    from sklearn.linear_model import Ridge

    mu, sd = feats["train"].mean(0), feats["train"].std(0)
    sd = np.where(sd > 0, sd, 1.0)
    x = {s: (feats[s] - mu) / sd for s in SPLITS}
    fits = [(spearman(Ridge(alpha=a).fit(x["train"], y["train"]).predict(x["tuning"]), y["tuning"]), a) for a in ALPHAS]
    alpha = max(fits, key=lambda f: (np.nan_to_num(f[0], nan=-2.0), -f[1]))[1]
    ridge = Ridge(alpha=alpha).fit(x["train"], y["train"])
    est = {s: ridge.predict(x[s]) for s in SPLITS}
    return est, alpha, spearman(est["held_out"], y["held_out"])


def noise_scale(y: np.ndarray, rho: float, rng: np.random.Generator) -> float:
    """sigma (in units of y's std) with Spearman(y + sigma * std(y) * e, y) ~ rho for standard
    normal e: bisection over one fixed draw of 20,000 values resampled from y."""
    if not rho > 0:
        return math.inf
    yy = rng.choice(y, 20_000)
    e = rng.standard_normal(yy.size)
    lo, hi = 0.0, 100.0
    for _ in range(50):
        mid = (lo + hi) / 2
        if spearman(yy + mid * yy.std() * e, yy) > rho:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def noise_model(y: dict, ids: dict, rho: float, protocol, args, rng: np.random.Generator) -> dict:
    """The headline metrics (point values, mean of ``args.noise_draws`` draws) of the true target
    plus independent Gaussian noise scaled to a held-out Spearman of ``rho`` with it."""
    pooled = np.concatenate([y[s] for s in SPLITS])
    sigma = noise_scale(pooled, rho, rng)
    draws = []
    for _ in range(args.noise_draws if math.isfinite(sigma) else 0):
        noisy = {s: y[s] + sigma * pooled.std() * rng.standard_normal(y[s].size) for s in SPLITS}
        m = outcome_metrics(one_column(noisy), ids, *protocol, 0, args.seed, name="noisy")["metrics"]
        draws.append([m[f"noisy/{k}"][0] for k in HEAD])
    means = {k: float(np.mean([d[i] for d in draws])) for i, k in enumerate(HEAD)} if draws else {}
    return {"spearman": rho, "sigma_over_std": sigma, "draws": len(draws), **means}


def positives(table, tasks) -> dict[str, int]:
    """Scans with the outcome before the horizon (label 1, kept by the task's exclusions), per task."""
    keep = table.include if table.include is not None else np.ones(table.label.shape, dtype=bool)
    return {t: int(((table.label[:, table.column(t)] == 1) & keep[:, table.column(t)]).sum()) for t in tasks}


def one_column(values: dict) -> dict:
    return {s: np.asarray(values[s], dtype=np.float64)[:, None] for s in SPLITS}


def run(args) -> dict:
    tables, tasks, horizons = read_outcome_inputs(args.labels, args.tasks)
    truth = read_truth(args.truth, args.target)
    protocol = (tables, tasks, horizons)
    rng = np.random.default_rng(args.seed)
    result: dict = {"target": args.target, "tasks": tasks, "bootstrap": args.bootstrap, "models": {}}
    result["positives"] = {s: positives(tables[s], tasks) for s in SPLITS}  # what sets the CIs' width
    oracle_ids = None
    for spec in args.embeddings:
        name, ids, feats = read_embeddings(spec, SPLITS)
        y = target_of(ids, truth, spec.partition("=")[2])
        est, alpha, rho = ridge_estimate(feats, y)
        print(f"{name}: ridge -> {args.target}, held-out Spearman {rho:+.3f} (alpha {alpha:g})", flush=True)
        # one call: the same scans and bootstrap resamples for both, and the paired difference
        outcomes = outcome_metrics(
            one_column(est), ids, *protocol, args.bootstrap, args.seed, [("full", ids, feats)], name="estimate"
        )
        result["models"][name] = {
            "held_out_spearman": rho,
            "ridge_alpha": alpha,
            "outcomes": outcomes,
            "noise_model": noise_model(y, ids, rho, protocol, args, rng),
        }
        oracle_ids = oracle_ids or (ids, y)
    ids, y = oracle_ids
    result["truth"] = outcome_metrics(one_column(y), ids, *protocol, args.bootstrap, args.seed, name="truth")
    result["noise_curve"] = [noise_model(y, ids, r, protocol, args, rng) for r in args.rho_grid]
    result["scans"] = {s: len(ids[s]) for s in SPLITS}
    result["command"] = " ".join(["python -m tte_scale.benchmarks.probe_gap", *sys.argv[1:]])
    return result


def _ci(v) -> str:
    return f"{v[0]:.3f}" + ("" if v[1] is None else f" [{v[1]:.3f}, {v[2]:.3f}]")


def markdown(r: dict, machine: str) -> str:
    rows = []
    for name, m in r["models"].items():
        got, diff, noise = m["outcomes"]["metrics"], m["outcomes"]["estimate_minus"], m["noise_model"]
        rows.append(
            [
                name,
                f"{m['held_out_spearman']:+.3f}",
                *(_ci(got[f"full/{k}"]) for k in HEAD),
                *(_ci(got[f"estimate/{k}"]) for k in HEAD),
                *(_ci(diff[f"full/{k.split('/', 1)[1]}"]) for k in HEAD),
                *(f"{noise[k]:.3f}" if k in noise else "-" for k in HEAD),
            ]
        )
    truth = r["truth"]["metrics"]
    rows.append(["true target", "+1.000", "", "", *(_ci(truth[f"truth/{k}"]) for k in HEAD), "", "", "", ""])
    head = ["embeddings", f"held-out Spearman of the {r['target']} estimate"]
    for what in ("full features", "estimate alone", "estimate - full (paired)", "noise model at that Spearman"):
        head += [f"{what}: AUROC", f"{what}: C"]
    return (
        "\n".join(
            [
                f"# Probe gap: `{r['target']}` in the features vs in the outcome probes",
                "",
                f"Machine: {machine}. Scans {r['scans']}; tasks {', '.join(r['tasks'])} (mean over them), "
                f"held out, 95% subject-bootstrap CIs ({r['bootstrap']} resamples); held-out positives "
                + ", ".join(f"{t} {n}" for t, n in r["positives"]["held_out"].items())
                + ".",
                f"Command: `{r['command']}`",
                "",
                *md_table(head, rows),
                "",
                f"The noise model alone: the true {r['target']} plus independent noise, at a given held-out "
                "Spearman with it (point values, mean of the draws):",
                "",
                *md_table(
                    ["Spearman", "AUROC", "C"],
                    [
                        [f"{n['spearman']:.2f}", *(f"{n[k]:.3f}" if k in n else "-" for k in HEAD)]
                        for n in r["noise_curve"]
                    ],
                ),
            ]
        )
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = script_parser("tte_scale.benchmarks.probe_gap", __doc__)
    ap.add_argument("--labels", type=Path, required=True, help="labels folder of the cohort (bench.parquet)")
    ap.add_argument("--truth", type=Path, required=True, help="the synthetic cohort's truth/ folder")
    ap.add_argument("--target", default="lesion_size", help="column of truth/scans.parquet (default lesion_size)")
    ap.add_argument("--tasks", default="configs/tasks/sparse.yaml", help="task set (default sparse.yaml)")
    ap.add_argument(
        "--embeddings",
        action="append",
        required=True,
        metavar="NAME=NPZ",
        help="embeddings cached by `tte-scale eval` (<out>/embeddings/*.npz), repeatable",
    )
    ap.add_argument("--bootstrap", type=int, default=300, help="bootstrap replicates of the CIs (default 300)")
    ap.add_argument("--noise-draws", type=int, default=20, help="draws of the noise model (default 20)")
    ap.add_argument(
        "--rho-grid",
        type=float,
        nargs="*",
        default=[0.3, 0.5, 0.7, 0.9],
        help="Spearmans at which to report the noise model too: what an estimate that good would reach "
        "(default 0.3 0.5 0.7 0.9)",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the noise (default 0)")
    ap.add_argument("--tag", default="", help="suffix of the result files' name")
    add_output_args(ap)
    args = ap.parse_args(argv)
    if args.bootstrap < 0 or args.noise_draws < 0:
        raise InputError("--bootstrap and --noise-draws must be >= 0")
    if not all(-1 <= r <= 1 for r in args.rho_grid):
        raise InputError(f"--rho-grid {args.rho_grid}: Spearmans are between -1 and 1")
    write_ceiling(args, "probe_gap", run(args), "cpu", markdown)
    return 0


if __name__ == "__main__":
    script_exit(main, "python -m tte_scale.benchmarks.probe_gap")
