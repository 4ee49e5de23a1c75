"""The demo's ViT against the paper's backbones, on one demo cohort, trained the same way.

Takes a finished `tte-scale demo` folder (its shards, labels, pretrained ViT and truth), trains
each named backbone with the demo's pretraining config and ``--set model.name=NAME`` (same
steps, batch, optimizer, TTE head and loss), then runs one `tte-scale eval` with the demo ViT as
the evaluated encoder and every backbone plus random init as baselines, so each paired
difference uses the same bootstrap resamples. Writes ``demo_backbones.json`` / ``.md``: held-out
task means with CIs, ViT minus each backbone, parameters, FLOPs per volume, training time and
seconds per step. ``--collect`` only reads what an earlier run left in ``--runs-dir``.

Not part of ``bench all``: on 2 CPU cores DenseNet-121 trains at 1.5-3.5 s per step (the ViT
at ~0.1-0.3 s), so 900 steps take 25-55 minutes; on a GPU add ``--set device=cuda``.

    python -m tte_scale.benchmarks.bench_backbones --demo-run runs/demo --models densenet121_3d
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tte_scale.benchmarks.bench_demo import HEADLINE, summary_figures
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
from tte_scale.models import read_export_config
from tte_scale.models.accounting import model_info

NAME = "demo_backbones"
PRETRAIN = "configs/pretrain/demo.yaml"
TASKS = "configs/tasks/inspect.yaml"


def cli(*args) -> float:
    """Run one `tte-scale` stage, echoing it; returns its wall time."""
    cmd = [sys.executable, "-m", "tte_scale.cli", *map(str, args)]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def train(demo: Path, out: Path, model: str, sets: list[str]) -> None:
    cli(
        "train", "--config", PRETRAIN,
        "--set", f"data.shards_dir={demo / 'shards'}", "--set", f"data.labels_dir={demo / 'labels'}",
        "--set", f"out_dir={out}", "--set", f"model.name={model}",
        *(a for s in sets for a in ("--set", s)),
    )  # fmt: skip


def evaluate(demo: Path, runs: Path, models: list[str], bootstrap: int) -> None:
    cli(
        "eval", "--checkpoint", demo / "pretrain" / "encoder", "--shards", demo / "shards",
        "--labels", demo / "labels", "--out", runs / "eval", "--tasks", TASKS, "--baseline", "random",
        *(a for m in models for a in ("--baseline", f"{m}={runs / m / 'encoder'}")),
        "--truth", demo / "cohort" / "truth", "--bootstrap", bootstrap, "--seed", 0,
    )  # fmt: skip


def training_record(run: Path) -> dict:
    """Steps, wall time of the steps and median seconds per step, from a run's metrics.jsonl."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise InputError(f"{path}: missing: training into {run} has not run (run without --collect)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    steps = sorted((r["step"], r["step_s"]) for r in rows if r.get("kind") == "train")
    if not steps:
        raise InputError(f"{path}: no training steps recorded")
    per_step = sorted(s for _, s in steps)
    return {
        "steps": steps[-1][0],
        "train_seconds": round(sum(s for _, s in steps), 1),
        "median_step_s": per_step[len(per_step) // 2],
    }


def encoder_record(encoder: Path) -> dict:
    """Registry name, parameters and FLOPs per volume of an exported encoder."""
    exp = read_export_config(encoder)
    info = model_info(exp["model_name"], **exp["config"])
    return {
        "model_name": exp["model_name"],
        "params": info["params"],
        "img_size": info["img_size"],
        "gflops_fwd_per_volume": info["flops_fwd"] / 1e9,
    }


def render(result: dict) -> str:
    models = ["tte", *result["backbones"], "random_init"]
    label = {"tte": f"ViT ({result['encoders']['tte']['model_name']}, the demo's)", "random_init": "random init"}
    lines = [
        f"# The demo's ViT vs the paper's backbones ({result['machine']})",
        "",
        f"Cohort and ViT: `{result['demo_run']}` (a `tte-scale demo` run); each backbone trained with",
        f"`{PRETRAIN}` + `--set model.name=NAME` (same steps, batch, optimizer, TTE head); one",
        "`tte-scale eval` with every model, held-out means over the 8 benchmark tasks, 95% subject-bootstrap",
        f"CIs, paired differences on the same resamples. Load average at the start: {result['meta']['load_avg_1m']}.",
        "",
    ]
    rows = []
    for m in models:
        means = result["mean_over_tasks"]
        enc = result["encoders"].get(m, {})
        tr = result["training"].get(m, {})
        cells = [label.get(m, m)]
        for h in HEADLINE:
            v = means.get(f"{m}/{h}")
            cells.append(f"{v['value']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]" if v else "")
        cells += [
            f"{enc['params'] / 1e6:.1f} M" if enc else "",
            f"{enc['gflops_fwd_per_volume']:.2f}" if enc else "",
            f"{tr['steps']}" if tr else "",
            f"{tr['median_step_s']:.2f}" if tr else "",
        ]
        rows.append(cells)
    lines += md_table(
        ["model", "AUROC (logistic)", "C-index (Cox)", "params", "GFLOP fwd/volume", "steps", "s/step (median)"], rows
    )
    lines += ["", "Paired differences, ViT minus each model:", ""]
    rows = []
    for m in [*result["backbones"], "random_init"]:
        cells = [f"ViT - {label.get(m, m)}"]
        for h in HEADLINE:
            d = result["vit_minus"].get(f"{m}/{h}")
            cells.append(f"{d['diff']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]" if d else "")
        rows.append(cells)
    lines += md_table(["difference", "AUROC", "C-index"], rows)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = script_parser("tte_scale.benchmarks.bench_backbones", __doc__)
    ap.add_argument("--demo-run", type=Path, required=True, help="a finished `tte-scale demo` output folder")
    ap.add_argument(
        "--models", default="densenet121_3d", help="comma-separated registry names (default densenet121_3d)"
    )
    ap.add_argument(
        "--runs-dir", type=Path, default=Path("runs/demo_backbones"), help="DIR/NAME per backbone, DIR/eval"
    )
    ap.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="extra training override"
    )
    ap.add_argument("--bootstrap", type=int, default=300, help="bootstrap resamples (default 300, as the demo)")
    ap.add_argument("--collect", action="store_true", help="only read finished runs in --runs-dir, run nothing")
    add_output_args(ap)
    args = ap.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models:
        ap.error("--models: at least one registry name")
    demo, runs = args.demo_run, args.runs_dir
    vit = demo / "pretrain"
    if not (vit / "encoder").is_dir():
        raise InputError(f"{vit / 'encoder'}: missing: --demo-run must be a finished `tte-scale demo` folder")
    meta = machine_info()
    if not args.collect:
        for m in models:
            if (runs / m / "encoder").is_dir():  # a finished training: its export is the last thing it writes
                print(f"{runs / m}: trained before, kept (its figures are read from metrics.jsonl)")
                continue
            train(demo, runs / m, m, args.sets)
        evaluate(demo, runs, models, args.bootstrap)
    summary_path = runs / "eval" / "summary.json"
    if not summary_path.is_file():
        raise InputError(f"{summary_path}: missing: the evaluation has not run (run without --collect)")
    means, diffs = summary_figures(json.loads(summary_path.read_text()))
    result = {
        "name": NAME,
        "machine": args.machine or machine_name(),
        "meta": meta,
        "demo_run": str(demo),
        "backbones": models,
        "training_overrides": args.sets,
        "encoders": {
            "tte": encoder_record(vit / "encoder"),
            **{m: encoder_record(runs / m / "encoder") for m in models},
        },
        "training": {"tte": training_record(vit), **{m: training_record(runs / m) for m in models}},
        "mean_over_tasks": means,
        "vit_minus": diffs,
    }
    js, md = write_results(args.out, NAME, result, render(result))
    print(f"wrote {js} and {md}")
    return 0


if __name__ == "__main__":
    script_exit(main, "bench_backbones")
