"""`tte-scale eval`: frozen-encoder linear probes, AUROC / C-index with CIs, report."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Evaluate a pretrained encoder: linear probes, AUROC, C-index, report"
DESCRIPTION = """\
Evaluate frozen encoders on the benchmark tasks with the paper's protocol: embeddings of every
scan (cached), linear probes fit on train, l2 chosen on tuning, metrics on held_out with 95%
subject-level bootstrap CIs (logistic probe: AUROC/AUPRC at the horizon; Cox-PH and
piecewise-exponential probes: Harrell's and Antolini's C-index, integrated Brier score).

  tte-scale eval --checkpoint runs/demo/pretrain/encoder --shards runs/demo/shards \\
      --labels runs/demo/labels --out runs/demo/eval --baseline random \\
      --baseline supervised=runs/demo/pretrain_supervised/encoder --truth runs/demo/cohort/truth

Compared side by side: the checkpoint ("tte"), `--baseline random` (the same architecture,
randomly initialized, same seed), `--baseline NAME=PATH` (another exported encoder, e.g. the
supervised-pretraining baseline of `tte-scale train --set objective=supervised`) and, for the
synthetic cohort, the oracle (`--truth`: true log-hazards used directly as risk scores).
Volumes are normalized with the HU window stored in each export's config.json (the one its
training used). Writes report.md, results.json and PNG figures.

Fine-tuning protocol: fine-tune with `tte-scale train --set objective=supervised --set
model.init_encoder=<pretrained export>` (the encoder starts from the export), then pass the
result as `--baseline finetuned=<its encoder>`: it is probed like every other encoder.
"""

DEFAULT_TASKS = "configs/tasks/inspect.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="exported encoder (folder or .safetensors written by `tte-scale train`)")
    parser.add_argument("--shards", required=True, metavar="DIR", help="shards folder (its Zarr copy is read)")
    parser.add_argument("--labels", required=True, metavar="DIR",
                        help="labels folder the shards were built from (its bench.parquet holds exclusions)")
    parser.add_argument("--out", required=True, metavar="DIR", help="report folder")
    parser.add_argument("--tasks", default=DEFAULT_TASKS, metavar="YAML",
                        help=f"benchmark task set (default {DEFAULT_TASKS}); only its task names are used here")
    parser.add_argument("--baseline", action="append", default=[], type=_baseline, metavar="random|NAME=PATH",
                        help="add a baseline encoder (repeatable): random = same architecture, random init; "
                             "NAME=PATH = another exported encoder, e.g. supervised=runs/x/encoder")
    parser.add_argument("--truth", metavar="DIR", help="synthetic cohort truth/ folder: adds the oracle")
    parser.add_argument("--loss-curve", action="append", default=[], metavar="NAME=JSONL",
                        help="training telemetry (JSONL with step, loss) to plot, e.g. tte=runs/x/metrics.jsonl")
    parser.add_argument("--bootstrap", type=int, default=500, help="bootstrap resamples for the CIs (default 500)")
    parser.add_argument("--batch-size", type=int, default=8, help="volumes per embedding batch (default 8)")
    parser.add_argument("--hu-window", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                        help="HU window mapped to [0, 1] for exports that do not store theirs (default -1000 "
                             "1000); an export that stores a different one is an error")
    parser.add_argument("--device", default="cpu", help="torch device for the embeddings (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random baseline and bootstrap")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


RESERVED = ("tte", "random_init", "oracle")
DEFAULT_HU_WINDOW = (-1000.0, 1000.0)


def _baseline(text: str) -> tuple[str, str | None]:
    """``random`` -> ("random_init", None); ``NAME=PATH`` -> (NAME, PATH)."""
    if text == "random":
        return "random_init", None
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 'random' or NAME=PATH (an exported encoder)")
    if name in RESERVED:
        raise argparse.ArgumentTypeError(f"{text!r}: the name {name!r} is reserved ({', '.join(RESERVED)})")
    return name, path


def _hu_window(path: Path, flag) -> tuple[float, float]:
    """The export's stored HU window; ``--hu-window`` only fills in for exports without one."""
    from tte_scale.errors import InputError
    from tte_scale.models import read_export_config

    stored = read_export_config(path).get("preprocessing", {}).get("hu_window")
    if stored is None:
        return tuple(flag) if flag is not None else DEFAULT_HU_WINDOW
    if flag is not None and tuple(flag) != tuple(stored):
        raise InputError(f"--hu-window {flag[0]:g} {flag[1]:g} differs from the window {stored[0]:g} {stored[1]:g} "
                         f"stored in {path}/config.json (the one its training used); drop --hu-window")
    return tuple(stored)


def _align(table, scan_ids):
    """The rows of ``table`` in the order of ``scan_ids`` (embedded scans only)."""
    import dataclasses

    import numpy as np

    from tte_scale.errors import InputError

    pos = {s: i for i, s in enumerate(table.scan_id.tolist())}
    missing = [s for s in scan_ids.tolist() if s not in pos]
    if missing:
        raise InputError(f"{table.source}: no benchmark labels for scans {missing[:5]} (labels and shards differ?)")
    idx = np.asarray([pos[s] for s in scan_ids.tolist()], dtype=np.int64)
    pick = {f: getattr(table, f)[idx] for f in ("subject_id", "label", "time", "event", "scan_id")}
    if table.include is not None:
        pick["include"] = table.include[idx]
    return dataclasses.replace(table, **pick)


def _oracle_risk(truth_dir: Path, tasks: list[str], scan_ids):
    import numpy as np
    import pyarrow.parquet as pq

    from tte_scale.errors import InputError

    path = truth_dir / "bench.parquet"
    if not path.is_file():
        raise InputError(f"{path}: not found (--truth expects the synthetic cohort's truth/ folder)")
    t = pq.read_table(path, columns=["scan_id", "task", "log_hazard"]).to_pydict()
    lut = {(s, k): h for s, k, h in zip(t["scan_id"], t["task"], t["log_hazard"])}
    risk = np.full((len(scan_ids), len(tasks)), np.nan)
    for i, s in enumerate(scan_ids.tolist()):
        for j, k in enumerate(tasks):
            risk[i, j] = lut.get((s, k), np.nan)
    if np.isnan(risk).any():
        raise InputError(f"{path}: no true log-hazard for some held-out scans/tasks")
    return risk


def run(args: argparse.Namespace) -> int:
    import json

    import pyarrow.parquet as pq
    import torch
    import yaml

    from tte_scale.errors import InputError
    from tte_scale.eval import (EvalConfig, bench_tables_from_long, compare_models, evaluate_embeddings,
                                evaluate_risk_scores, format_differences, format_table, paired_differences,
                                read_loss_curve, write_report)
    from tte_scale.eval.report import HEADLINE
    from tte_scale.eval.embed import embed_shards, file_digest
    from tte_scale.models import load_pretrained

    out, labels, shards = Path(args.out), Path(args.labels), Path(args.shards)
    task_file = Path(args.tasks)
    if not task_file.is_file():
        raise InputError(f"--tasks {task_file}: not found")
    tasks = [t["name"] for t in (yaml.safe_load(task_file.read_text()) or {}).get("tasks", [])]
    if not tasks:
        raise InputError(f"--tasks {task_file}: no tasks listed")
    bench = labels / "bench.parquet"
    if not bench.is_file():
        raise InputError(f"{bench}: not found; is {labels} a folder written by `tte-scale labels`?")
    tables = bench_tables_from_long(pq.read_table(bench), tasks, source=str(bench))
    horizons = _horizons(task_file)
    cfg = EvalConfig(bootstrap=args.bootstrap, seed=args.seed, horizons_days=horizons)
    splits = tuple(cfg.splits)

    names = [name for name, _ in args.baseline]
    if len(set(names)) != len(names):
        raise InputError(f"--baseline: names repeat: {names}")

    def exported(name: str, path: str):
        ckpt = Path(path)
        weights = sorted(ckpt.glob("*.safetensors")) if ckpt.is_dir() else [ckpt]
        window = _hu_window(ckpt, args.hu_window)
        return load_pretrained(ckpt), f"{name}-" + file_digest(*weights), window

    encoders = {"tte": exported("tte", args.checkpoint)}
    for name, path in args.baseline:
        if path is None:  # same architecture and normalization as the checkpoint, random weights
            torch.manual_seed(args.seed)
            tte_model, _, window = encoders["tte"]
            encoders[name] = (type(tte_model)(tte_model.cfg), f"random-{args.seed}", window)
        else:
            encoders[name] = exported(name, path)

    results, ids = {}, None
    for name, (model, key, window) in encoders.items():
        emb = embed_shards(model, shards, splits, batch_size=args.batch_size, hu_window=window,
                           device=args.device, cache_dir=out / "embeddings", cache_key=key,
                           progress=not args.no_progress)
        aligned = {s: _align(tables[s], emb.scan_id[s]) for s in splits}
        results[name] = evaluate_embeddings(emb.features, aligned, tasks, cfg, name=name,
                                            progress=not args.no_progress)
        ids = emb.scan_id
    if args.truth:
        ho = splits[2]
        table = _align(tables[ho], ids[ho])
        results["oracle"] = evaluate_risk_scores(_oracle_risk(Path(args.truth), tasks, ids[ho]), table, tasks, cfg)

    curves = {}
    for item in args.loss_curve:
        name, _, path = item.partition("=")
        if not path:
            raise InputError(f"--loss-curve {item!r}: expected NAME=PATH")
        curves[name] = read_loss_curve(path)
    report = write_report(out, results, curves)
    rows = compare_models(results)
    table = format_table(rows)
    diffs = paired_differences(results, "tte", HEADLINE)
    headline = {f"{r['model']}/{r['probe']}/{r['metric']}": [r["value"], r["ci_low"], r["ci_high"]]
                for r in rows if r["task"] == "mean" and (r["probe"], r["metric"]) in HEADLINE + [("oracle", "auroc"), ("oracle", "c_index")]}
    (out / "summary.json").write_text(json.dumps({"report": str(report), "models": list(results),
                                                  "mean_over_tasks": headline, "tte_minus": diffs}, indent=1))
    print(table)
    if diffs:
        print("\n" + format_differences(diffs))
    print(f"\nreport: {report}")
    return 0


def _horizons(task_file: Path) -> dict[str, float]:
    import yaml

    data = yaml.safe_load(task_file.read_text()) or {}
    return {t["name"]: float(t["horizon_days"]) for t in data.get("tasks", []) if "horizon_days" in t}
