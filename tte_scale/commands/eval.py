"""`tte-scale eval`: frozen-encoder linear probes, AUROC / C-index with CIs, report."""

from __future__ import annotations

import argparse

from tte_scale.commands import add_frozen_encoder_arguments, from_args
from tte_scale.errors import InputError

HELP = "Evaluate a pretrained encoder: linear probes, AUROC, C-index, report"
DESCRIPTION = """\
Evaluate frozen encoders on the benchmark tasks with the paper's protocol: embeddings of every
scan (cached), linear probes fit on train, l2 chosen on tuning, metrics on held_out with 95%
subject-level bootstrap CIs (logistic probe: AUROC/AUPRC at the horizon; Cox-PH and
piecewise-exponential probes, optionally a DeepSurv-style MLP: Harrell's and Uno's C-index at each
task's horizon, the whole-follow-up C-index once per outcome, Antolini's C-index, integrated
Brier score). The headline is the task mean of the logistic AUROC and of Harrell's C at the
horizon (Cox probe). --train-subsets adds label-efficiency curves.

  tte-scale eval --checkpoint runs/demo/pretrain/encoder --shards runs/demo/shards \\
      --labels runs/demo/labels --out runs/demo/eval --baseline random \\
      --baseline supervised=runs/demo/pretrain_supervised/encoder --truth runs/demo/cohort/truth

Compared side by side: the checkpoint ("tte"), `--baseline random` (the same architecture,
randomly initialized, same seed), `--baseline NAME=PATH` (another exported encoder, e.g. the
supervised-pretraining baseline of `tte-scale train --set objective=supervised`) and, for the
synthetic cohort, the oracle (`--truth`: true log-hazards used directly as risk scores).
Volumes are normalized with the HU window stored in each export's config.json (the one its
training used). Writes report.md, results.json and PNG figures.

Ranks: `tte-scale launch local --nproc N -- eval ...` (or torchrun / SLURM tasks: RANK and
WORLD_SIZE in the environment) splits the embedding of the scans over N ranks (blocks of
--batch-size scans, rank r takes blocks r, r+N, ...); rank 0 gathers the vectors, fits the probes
and writes the report. The results do not depend on the number of ranks.

Fine-tuning protocol: fine-tune with `tte-scale train --set objective=supervised --set
model.init_encoder=<pretrained export>` (the encoder starts from the export), then pass the
result as `--baseline finetuned=<its encoder>`: it is probed like every other encoder (joint
fine-tuning: one encoder for all tasks). Per-task fine-tuning, as in the paper: one such run per
task with `--set supervised_tasks=[<task>] --set out_dir=DIR/<task>`, then `--per-task
finetuned_per_task=DIR`: each task is probed on the export fine-tuned on it alone.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="PATH",
        help="exported encoder (folder or .safetensors written by `tte-scale train`)",
    )
    parser.add_argument(
        "--shards",
        required=True,
        metavar="DIR",
        help="shards folder (its Zarr copy is read when the build wrote one, else the WebDataset shards)",
    )
    parser.add_argument(
        "--labels",
        required=True,
        metavar="DIR",
        help="labels folder the shards were built from (its bench.parquet holds exclusions)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="report folder")
    parser.add_argument(
        "--tasks",
        default=None,
        metavar="YAML",
        help="benchmark task set: names and horizons (default configs/tasks/inspect.yaml)",
    )
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        type=_baseline,
        metavar="random|NAME=PATH",
        help="add a baseline encoder (repeatable): random = same architecture, random init; "
        "NAME=PATH = another exported encoder, e.g. supervised=runs/x/encoder",
    )
    parser.add_argument(
        "--per-task",
        action="append",
        default=[],
        type=_per_task,
        metavar="NAME=DIR",
        help="add a per-task fine-tuned model (repeatable, the paper's protocol): DIR/<task>/encoder is the "
        "export fine-tuned on that task alone (`tte-scale train --set objective=supervised --set "
        "supervised_tasks=[<task>] --set out_dir=DIR/<task>`); each task is probed on its own export",
    )
    parser.add_argument("--truth", metavar="DIR", help="synthetic cohort truth/ folder: adds the oracle")
    parser.add_argument(
        "--loss-curve",
        action="append",
        default=[],
        metavar="NAME=JSONL",
        help="training telemetry (JSONL with step, loss) to plot, e.g. tte=runs/x/metrics.jsonl",
    )
    parser.add_argument("--bootstrap", type=int, default=500, help="bootstrap resamples for the CIs (default 500)")
    parser.add_argument("--batch-size", type=int, default=8, help="volumes per embedding batch (default 8)")
    add_frozen_encoder_arguments(parser, excluded_where="the report")
    parser.add_argument("--device", default="cpu", help="torch device for the embeddings (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random baseline and bootstrap")
    parser.add_argument(
        "--probes",
        type=_probes,
        default=None,
        metavar="P,P,...",
        help="probes to fit, from logistic, cox, pem, deepsurv (default logistic,cox,pem; deepsurv is the "
        "DeepSurv-style MLP 256x256 with the Cox partial likelihood, early-stopped on tuning: one network per "
        "l2 and outcome)",
    )
    parser.add_argument(
        "--train-subsets",
        type=_sizes,
        default=[],
        metavar="N,N,...",
        help="label efficiency: refit the probes on random subject-level subsets of the training split with "
        "this many scans (e.g. 200,1000,2000), l2 chosen on the whole tuning split; adds a table and a plot "
        "of the metric vs training size per model to the report (default: off)",
    )
    parser.add_argument(
        "--train-subset-resamples",
        type=int,
        default=5,
        metavar="R",
        help="random subsets drawn per size for --train-subsets (default 5)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _probes(text: str) -> list[str]:
    """``logistic,cox`` -> ["logistic", "cox"]; an unknown name is an argument error."""
    from tte_scale.eval.config import PROBES

    names = [v.strip() for v in text.split(",") if v.strip()]
    bad = [n for n in names if n not in PROBES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: unknown probe(s) {bad}; choose from {', '.join(PROBES)}")
    return names


def _sizes(text: str) -> list[int]:
    """``200,1000,2000`` -> [200, 1000, 2000]."""
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected comma-separated scan counts, e.g. 200,1000,2000"
        ) from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: sizes must be >= 1")
    return sizes


def _baseline(text: str) -> tuple[str, str | None]:
    """``random`` -> ("random_init", None); ``NAME=PATH`` -> (NAME, PATH)."""
    if text == "random":
        return "random_init", None
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 'random' or NAME=PATH (an exported encoder)")
    return name, path


def _per_task(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=DIR (a folder of per-task fine-tuning runs)")
    return name, path


def run(args: argparse.Namespace) -> int:
    from tte_scale.eval.run import EvalRun, run_eval

    curves = []
    for item in args.loss_curve:
        name, _, path = item.partition("=")
        if not path:
            raise InputError(f"--loss-curve {item!r}: expected NAME=PATH")
        curves.append((name, path))
    job = from_args(
        EvalRun,
        args,
        baselines=args.baseline,
        loss_curves=curves,
        hu_window=tuple(args.hu_window) if args.hu_window else None,
        progress=not args.no_progress,
    )
    outcome = run_eval(job)
    if outcome is not None:  # rank 0 (the other ranks only embed)
        print(outcome.text)
    return 0
