"""Is a small biomarker visible at this geometry at all? A fixed, training-free blob detector.

`encoder_ceiling` asks whether the encoder learns a biomarker from its true value; when it does
not, two causes remain: the shards do not show the finding (resampling and partial volume erased
it), or they do and the encoder cannot find it in its budget. This tool separates them without
training anything. It runs the textbook detector of small round findings in lung CT, the Hessian
"dot" filter (Li, Sone & Doi 2003): at each scale s, the Hessian of the Gaussian-smoothed volume,
scale-normalized by s^2; where all three eigenvalues are negative (a bright blob, not a bright
tube or sheet) the response is l3^2 / |l1| (l1 <= l2 <= l3 < 0), else 0 (tte_scale/models/blob.py,
the filter behind the encoder's ``model.blob_sigmas_vox`` tokens). It keeps the responses inside
air-filled regions (a voxel whose surrounding box is mostly below ``--air-hu``: lung,
including what sits inside it) and summarizes each scale by its largest, mean of top-3 and mean
of top-10 values. A ridge (standardized features, alpha 10, as `diagnose_sparse`) fitted on the
train scans predicts the target on the held-out scans; the report gives the held-out Spearman,
each feature's own train Spearman and, with ``--presence``, a logistic probe's held-out AUROC.
With ``--labels`` (and ``--tasks``) the features also go through `tte-scale eval`'s own probes on
the outcome tasks, and ``--compare NAME=NPZ`` adds another encoder's embeddings as `tte-scale eval`
cached them, with the detector's paired difference to it: how far a finding that is visible in the
images takes the outcome probes, next to what the encoder learned.

    python -m tte_scale.benchmarks.detector_ceiling --shards runs/sparse_hr/shards \\
        --truth runs/sparse/cohort/truth --target lesion_size --presence lesion_present \\
        --labels runs/sparse/labels --tasks configs/tasks/sparse.yaml \\
        --compare random_init=runs/sparse/eval/embeddings/random_init-<digest>.npz

Cost: about 0.5 s per scan at three scales on one core at 48x112x112 (``--limit`` takes a random
subset of each split). Writes ``detector_ceiling_<target>[_<tag>].json`` / ``.md`` under ``--out``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from tte_scale.benchmarks.common import md_table, script_exit, script_parser
from tte_scale.benchmarks.encoder_ceiling import (
    SPLITS,
    add_tail_args,
    add_truth_args,
    load_split,
    read_truth,
    spearman,
    write_ceiling,
)
from tte_scale.errors import InputError

STATS = ("max", "top3", "top10")


def dot_response(v_DHW: np.ndarray, spacing_mm, scale_mm: float, region: np.ndarray | None = None) -> np.ndarray:
    """Scale-normalized Hessian dot-filter response (float32, >= 0) of one volume: [D, H, W], or
    [n] at the n voxels of a boolean ``region``. The filter is the encoder's blob channel's
    (tte_scale.models.blob.dot_filter), at sigma = scale / spacing voxels per axis."""
    import torch

    from tte_scale.models.blob import dot_filter

    sigma = [scale_mm / float(s) for s in spacing_mm]
    r = dot_filter(torch.from_numpy(np.asarray(v_DHW, np.float32))[None], sigma)[0].numpy()
    return r if region is None else r[region]


def air_region(v_DHW: np.ndarray, spacing_mm, air_hu: float, box_mm: float) -> np.ndarray:
    """Voxels whose ``box_mm`` neighbourhood is at least half air: the lungs and what lies in them."""
    from scipy import ndimage as ndi

    size = [max(1, int(round(box_mm / s)) | 1) for s in spacing_mm]
    return ndi.uniform_filter((np.asarray(v_DHW) < air_hu).astype(np.float32), size=size) >= 0.5


def scan_features(v_DHW, spacing_mm, scales_mm, air_hu: float, box_mm: float) -> np.ndarray:
    """[len(scales) * 3]: max, mean of top-3, mean of top-10 dot response inside the air region."""
    region = air_region(v_DHW, spacing_mm, air_hu, box_mm)
    out = []
    for s in scales_mm:
        r = dot_response(v_DHW, spacing_mm, s, region)
        top = np.sort(r)[-10:] if r.size else np.zeros(1, np.float32)
        out += [float(top[-1]), float(top[-3:].mean()), float(top.mean())]
    return np.array(out, np.float64)


def shard_spacing(shards: str) -> list[float]:
    """The voxel spacing (D, H, W) in mm every volume of a `tte-scale shard` folder was resampled to."""
    from tte_scale.data.storage import exists, join, read_bytes

    path = join(shards, "manifest", "build.json")
    build = json.loads(read_bytes(path)) if exists(path) else {}
    sp = build.get("config", {}).get("imaging", {}).get("spacing_mm")
    if not (isinstance(sp, list) and len(sp) == 3 and all(isinstance(x, (int, float)) and x > 0 for x in sp)):
        raise InputError(f"{path}: no config.imaging.spacing_mm [D, H, W] (got {sp!r}); pass --spacing-mm")
    return [float(x) for x in sp]


def run(args) -> dict:
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    from tte_scale.embed.scans import resolve_format, split_scans

    shards = str(args.shards)
    fmt = resolve_format(shards, "auto")
    spacing = list(args.spacing_mm) if args.spacing_mm else shard_spacing(shards)
    truth = read_truth(args.truth, args.target)
    presence = read_truth(args.truth, args.presence, "--presence") if args.presence else None
    if presence is not None and not set(presence.values()) <= {0.0, 1.0}:
        sid = next(k for k, v in presence.items() if v not in (0.0, 1.0))
        raise InputError(
            f"{args.truth / 'scans.parquet'}: scan_id {sid}, field {args.presence}: {presence[sid]!r} is not 0/1 (--presence)"
        )
    outcome_inputs = read_outcome_inputs(args.labels, args.tasks) if args.labels else None  # refused before any read
    splits = ("train", "tuning", "held_out") if outcome_inputs else SPLITS
    if args.compare and not outcome_inputs:
        raise InputError("--compare needs --labels (it compares on the outcome tasks)")
    compare = [read_embeddings(c, splits) for c in args.compare]  # a bad file is refused before the long part
    rng = np.random.default_rng(args.seed)
    feats, ys, ps, counts, left_out, scan_ids = {}, {}, {}, {}, {}, {}
    t0 = time.perf_counter()
    for split in splits:
        scans = split_scans(shards, split, fmt)
        if args.limit and len(scans) > args.limit:
            keep = np.sort(rng.choice(len(scans), args.limit, replace=False))
            scans = dataclasses.replace(scans, order=scans.order[keep], subject_ids=scans.subject_ids[keep])
        vol, y, bad = load_split(scans, shards, truth, args.truth, int(args.max_gib * 2**30))
        left = {b["scan_id"] for b in bad}
        ids = [sid for sid in scans.scan_ids if sid not in left]  # load_split keeps manifest order
        F = []
        for i in range(len(vol)):
            F.append(scan_features(vol[i], spacing, args.scales_mm, args.air_hu, args.box_mm))
            if (i + 1) % 50 == 0 or i + 1 == len(vol):
                print(f"{split}: {i + 1}/{len(vol)} scans ({time.perf_counter() - t0:.0f} s)", flush=True)
        feats[split], ys[split], counts[split], left_out[split] = np.array(F), y, len(y), len(bad)
        scan_ids[split] = np.array(ids)
        if presence is not None:
            ps[split] = np.array([presence[s] for s in ids]) == 1.0
    seconds = time.perf_counter() - t0
    tr, ho = feats["train"], feats["held_out"]
    if len(ys["train"]) < 2 or float(np.std(ys["train"])) == 0.0:
        raise InputError(f"{args.truth / 'scans.parquet'}: {args.target} is constant over the train scans")
    sc = StandardScaler().fit(tr)
    ridge = Ridge(alpha=10.0).fit(sc.transform(tr), ys["train"])
    names = [f"{s:g}mm_{stat}" for s in args.scales_mm for stat in STATS]
    result = {
        "target": args.target,
        "shards": shards,
        "truth": str(args.truth),
        "command": " ".join(["python -m tte_scale.benchmarks.detector_ceiling", *sys.argv[1:]]),
        "spacing_mm": spacing,
        "scales_mm": list(args.scales_mm),
        "air_hu": args.air_hu,
        "box_mm": args.box_mm,
        "scans": counts,
        "scans_left_out": left_out,
        "seconds_per_scan": seconds / max(sum(counts.values()), 1),
        "held_out_spearman": spearman(ridge.predict(sc.transform(ho)), ys["held_out"]),
        "feature_train_spearman": {n: spearman(tr[:, j], ys["train"]) for j, n in enumerate(names)},
    }
    if presence is not None:
        if len(set(ps["train"].tolist())) < 2 or len(set(ps["held_out"].tolist())) < 2:
            raise InputError(f"{args.truth / 'scans.parquet'}: {args.presence} takes one value only in a split")
        logit = LogisticRegression(C=0.1, max_iter=2000).fit(sc.transform(tr), ps["train"])
        result["presence"] = args.presence
        result["presence_auroc_held_out"] = float(
            roc_auc_score(ps["held_out"], logit.decision_function(sc.transform(ho)))
        )
    if outcome_inputs:
        result["outcomes"] = outcome_metrics(feats, scan_ids, *outcome_inputs, args.bootstrap, args.seed, compare)
    return result


def read_outcome_inputs(labels: Path, tasks_yaml: str):
    """(bench tables per split, task names, horizons) of a labels folder and a task set."""
    import pyarrow.parquet as pq

    from tte_scale.ehr.config import load_task_set
    from tte_scale.eval.tables import bench_tables_from_long

    task_set = load_task_set(tasks_yaml)
    bench = Path(labels) / "bench.parquet"
    if not bench.is_file():
        raise InputError(f"{bench}: not found; is {labels} a folder written by `tte-scale labels`?")
    tables = bench_tables_from_long(pq.read_table(bench), task_set.names, source=str(bench))
    return tables, task_set.names, {t.name: float(t.horizon_days) for t in task_set.tasks}


def read_embeddings(spec: str, splits) -> tuple[str, dict, dict]:
    """``NAME=PATH``: (NAME, scan ids and features per split) of an embeddings file `tte-scale eval`
    cached (``<eval out>/embeddings/<model>-<digest>.npz``)."""
    from tte_scale.eval.embed import read_embeddings_file

    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise InputError(f"--compare {spec}: expected NAME=PATH of a `tte-scale eval` embeddings .npz")
    try:
        _, emb = read_embeddings_file(path, splits)
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"{path}: not a `tte-scale eval` embeddings file with splits {list(splits)} ({exc})") from None
    return name, emb.scan_id, {s: f.astype(np.float64) for s, f in emb.features.items()}


def evaluate_sets(
    sets: dict, tables, tasks, horizons, bootstrap: int, seed: int, only_labelled: bool = False
) -> tuple[dict, dict]:
    """({name: EvalResult}, {split: number of scans}) of each feature set ``name -> (scan ids,
    features)`` (per split) through `tte-scale eval`'s own protocol (logistic and Cox probes, l2
    on tuning, held-out metrics with subject-bootstrap replicates), all on the scans every set
    has, in the first set's order: the same bootstrap resamples, so replicate-by-replicate
    differences between sets are paired. A scan without benchmark labels is refused (labels and
    embeddings of different cohorts), unless ``only_labelled``: then only the labelled scans are
    probed (a sub-cohort's labels on a larger cohort's embeddings)."""
    from tte_scale.eval.config import EvalConfig
    from tte_scale.eval.protocol import evaluate_embeddings
    from tte_scale.eval.tables import align_to_scans

    cfg = EvalConfig(bootstrap=bootstrap, seed=seed, horizons_days=horizons, probes=["logistic", "cox"])
    missing = [s for s in cfg.splits if s not in tables]
    if missing:
        raise InputError(f"the benchmark labels hold no scans of the split(s) {missing}")
    first = next(iter(sets.values()))[0]
    keep = {}
    for s in cfg.splits:
        common = set.intersection(*(set(ids[s].tolist()) for ids, _ in sets.values()))
        if only_labelled:
            common &= set(tables[s].scan_id.tolist())
        keep[s] = np.array([x for x in first[s].tolist() if x in common])
        if not keep[s].size:
            raise InputError(f"no {s} scan is in every feature set{' and the labels' if only_labelled else ''}")
    aligned = {s: align_to_scans(tables[s], keep[s]) for s in cfg.splits}
    results = {}
    for model, (ids, f) in sets.items():
        pos = {s: {x: i for i, x in enumerate(ids[s].tolist())} for s in cfg.splits}
        x = {s: f[s][[pos[s][k] for k in keep[s].tolist()]] for s in cfg.splits}
        results[model] = evaluate_embeddings(x, aligned, tasks, cfg, name=model, progress=False)
    return results, {s: len(keep[s]) for s in cfg.splits}


def outcome_metrics(
    feats, scan_ids, tables, tasks, horizons, bootstrap: int, seed: int, compare=(), name: str = "detector"
) -> dict:
    """The features ``name`` (the detector's by default) through `tte-scale eval`'s own protocol
    (``evaluate_sets``): per task and the headline means; with ``compare`` (read_embeddings
    results) also each other encoder's, and ``name`` minus it with a paired CI
    (``<name>_minus``), all on the scans every feature set has (the same bootstrap resamples)."""
    from tte_scale.eval.compare import compare_models, paired_differences
    from tte_scale.eval.report import HEADLINE

    sets = {name: (scan_ids, feats), **{other: (ids, f) for other, ids, f in compare}}
    results, scans = evaluate_sets(sets, tables, tasks, horizons, bootstrap, seed)
    rows = [
        r for r in compare_models(results) if (r["probe"], r["metric"]) in HEADLINE and r["task"] in (*tasks, "mean")
    ]
    out = {
        "scans": scans,
        "metrics": {
            f"{r['model']}/{r['task']}/{r['probe']}/{r['metric']}": [r["value"], r["ci_low"], r["ci_high"]]
            for r in rows
        },
    }
    if compare:
        out[f"{name}_minus"] = {
            f"{d['model']}/{d['probe']}/{d['metric']}": [d["diff"], d["ci_low"], d["ci_high"]]
            for d in paired_differences(results, name, HEADLINE)
        }
    return out


def _ci(v) -> str:
    return f"{v[0]:.3f}" + ("" if v[1] is None else f" [{v[1]:.3f}, {v[2]:.3f}]")


def _outcome_lines(o: dict) -> list[str]:
    lines = [
        f"Outcome tasks through `tte-scale eval`'s protocol (held out, 95% subject-bootstrap CI; scans {o['scans']}):",
        "",
        *md_table(["model / task / probe / metric", "value [CI]"], [[k, _ci(v)] for k, v in o["metrics"].items()]),
        "",
    ]
    if "detector_minus" in o:
        lines += [
            "Detector minus each other encoder (mean over tasks, paired 95% CI):",
            "",
            *md_table(
                ["versus / probe / metric", "difference [CI]"], [[k, _ci(v)] for k, v in o["detector_minus"].items()]
            ),
            "",
        ]
    return lines


def markdown(r: dict, machine: str) -> str:
    lines = [
        f"# Detector ceiling: `{r['target']}` from a fixed Hessian blob detector (no training)",
        "",
        f"Machine: {machine}. {r['scans']['train']} train / {r['scans']['held_out']} held-out scans at "
        f"{r['spacing_mm']} mm, scales {r['scales_mm']} mm, {r['seconds_per_scan']:.2f} s per scan.",
        f"Command: `{r['command']}`",
        "",
        f"Ridge on all features, held-out Spearman: **{r['held_out_spearman']:+.3f}**"
        + (
            f"; logistic probe for `{r['presence']}`, held-out AUROC: **{r['presence_auroc_held_out']:.3f}**"
            if "presence" in r
            else ""
        ),
        "",
        *(_outcome_lines(r["outcomes"]) if "outcomes" in r else []),
        *md_table(["feature", "train Spearman"], [[n, f"{v:+.3f}"] for n, v in r["feature_train_spearman"].items()]),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = script_parser("tte_scale.benchmarks.detector_ceiling", __doc__)
    add_truth_args(ap)
    ap.add_argument("--presence", default="", help="boolean column for a presence AUROC (e.g. lesion_present)")
    ap.add_argument(
        "--scales-mm", type=float, nargs="+", default=[3.0, 5.0, 7.0], help="Gaussian scales (default 3 5 7)"
    )
    ap.add_argument(
        "--spacing-mm",
        type=float,
        nargs=3,
        metavar=("D", "H", "W"),
        help="voxel spacing (default: the shards' build.json)",
    )
    ap.add_argument("--air-hu", type=float, default=-400.0, help="air below this HU (default -400)")
    ap.add_argument(
        "--box-mm",
        type=float,
        default=40.0,
        help="side of the air-fraction box; larger than the largest finding (default 40)",
    )
    ap.add_argument("--labels", type=Path, help="labels folder (bench.parquet): also probe the outcome tasks")
    ap.add_argument("--tasks", default="configs/tasks/sparse.yaml", help="task set of --labels (default sparse.yaml)")
    ap.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="NAME=NPZ",
        help="another encoder's embeddings cached by `tte-scale eval` (<out>/embeddings/*.npz): also probed, "
        "and the detector minus it with a paired CI (repeatable)",
    )
    ap.add_argument("--bootstrap", type=int, default=300, help="bootstrap replicates of the outcome CIs (default 300)")
    ap.add_argument("--limit", type=int, default=0, help="random subset of at most N scans per split (0: all)")
    ap.add_argument("--seed", type=int, default=0, help="seed of --limit's subset and of the bootstrap (default 0)")
    add_tail_args(ap)
    args = ap.parse_args(argv)
    for name, vals in (
        ("--scales-mm", args.scales_mm),
        ("--spacing-mm", args.spacing_mm or [1]),
        ("--box-mm", [args.box_mm]),
    ):
        if not all(math.isfinite(v) and v > 0 for v in vals):
            raise InputError(f"{name} {vals}: must be positive")
    if args.limit < 0:
        raise InputError(f"--limit {args.limit}: must be >= 0")
    result = run(args)
    write_ceiling(args, "detector_ceiling", result, "cpu", markdown)
    return 0


if __name__ == "__main__":
    script_exit(main, "python -m tte_scale.benchmarks.detector_ceiling")
