"""`tte-scale bench`: Run the throughput benchmarks of each stage with their baselines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "Run the throughput benchmarks of each stage with their baselines"
DESCRIPTION = """\
Run the benchmark of one or more stages, each beside its baseline in the same process run:

  synth   synthetic cohort: subjects/s, peak memory vs N
  labels  MEDS -> TTE labels vs a pandas implementation (events/CPU-s, peak RSS)
  shard   codecs; sharding volumes/s: plain loop vs Ray with 1 and 2 workers
  loader  our loader (WebDataset/Zarr, 1/2 workers) vs MONAI's NIfTI pipeline and the decode limit
  loss    TTE head + survival loss: fused kernel vs eager vs torch.compile
  model   3D ViT training step: ours vs MONAI's ViT (samples/s, TFLOP/s, MFU)
  train   the real trainer on real shards: volumes/s, tokens/s, MFU, data wait per world size
  eval    C-index vs lifelines and scikit-survival; bootstrap; probe fits
  rehearsal  every stage end to end at the full INSPECT geometry (160x224x224, ViT-B width, K=8,192):
          wall, CPU-s, peak RSS per process, /dev/shm, bytes/volume, memory per rank vs estimate
  all     every stage above, in this order
  summary no run: rebuild summary.{json,md} and scaling.png from the results already in --out

Each stage runs its script (benchmarks/bench_<stage>.py, installed as tte_scale.benchmarks.bench_<stage>;
the baselines need the dev extra) through its main(argv), with warm-up runs, repeated measurements
and medians with their spread. Results: OUT/<stage>.json and .md per stage, OUT/summary.json,
OUT/summary.md (one table with the machine described once) and OUT/scaling.png (train volumes/s
vs ranks, loader vs workers, sharding vs Ray workers). The default sizes take minutes on a
laptop; --full uses the sizes of the committed results in benchmarks/results/.

--script-args passes more arguments to the stage's script as they are (one stage only), e.g.
  tte-scale bench loss --out runs/bench --script-args="--methods eager --batch 4 --tasks 256"
"""

SUITE_STAGES = ("synth", "labels", "shard", "loader", "loss", "model", "train", "eval", "rehearsal", "all", "summary")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stages", nargs="+", metavar="STAGE", help="one or more of: " + ", ".join(SUITE_STAGES))
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="device of the stages that have one (loss, model, train); the others run on the CPU",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/bench"),
        metavar="DIR",
        help="results folder (default runs/bench; the committed figures live in benchmarks/results)",
    )
    parser.add_argument("--full", action="store_true", help="full sizes (tens of minutes on a laptop CPU)")
    parser.add_argument("--machine", default=None, help="machine name in the results (default: CPU model / GPU)")
    parser.add_argument(
        "--script-args",
        default="",
        metavar="'ARGS'",
        help="extra arguments for the script of a single stage (write --script-args='--x 1')",
    )


def run(args: argparse.Namespace) -> int:
    import shlex

    from tte_scale.benchmarks import ORDER, load_results, run_stage, select, write_summary
    from tte_scale.benchmarks.common import machine_info, machine_name
    from tte_scale.errors import InputError

    names, extra = list(args.stages), shlex.split(args.script_args)
    summary_only = names == ["summary"]
    if "summary" in names and not summary_only:
        raise InputError("`summary` rebuilds the summary from existing results; give it alone")
    stages = [] if summary_only else select(names)
    if extra and len(stages) != 1:
        raise InputError(f"--script-args ({args.script_args}) go to one stage's script; name exactly one stage")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA device visible (check CUDA_VISIBLE_DEVICES / the driver)")
    # The machine is described once here and its name handed to every stage.
    machine = args.machine or machine_name(args.device)
    meta = machine_info(args.device)
    out = args.out  # as given, so the recorded commands stay relative to the checkout
    out.mkdir(parents=True, exist_ok=True)
    if summary_only:
        records = load_results(out, list(ORDER))
        if not records:
            raise InputError(f"{out}: no <stage>.json results to summarize ({', '.join(ORDER)})")
    else:
        records = [run_stage(s, out, machine, args.device, args.full, extra) for s in stages]
    paths = write_summary(out, records, meta, machine)
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    failed = [r["stage"] for r in records if r["status"] != "ok"]
    if failed:
        print(f"tte-scale bench: failed stage(s): {', '.join(failed)} (see the errors above)", file=sys.stderr)
        return 1
    return 0
