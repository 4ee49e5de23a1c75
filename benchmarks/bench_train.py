"""Trainer throughput and per-rank model-state memory for ZeRO 0/1/2/3 on 1 and 2 CPU ranks.

Runs the real `tte-scale train` (a small 3D ViT on synthetic shards, fp32, gloo) as separate
rank processes, then reads metrics.jsonl: steps/s is the median over steps after the first
two (warm-up), memory is the largest rank's parameter and optimizer-state bytes after step 1.

    .venv/bin/python benchmarks/bench_train.py [--steps 8] [--machine "dev CPU, 2 cores"]

Writes benchmarks/results/train.json and train.md and prints the table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "dist"))

from train_data import config_overrides, make_data  # noqa: E402
from train_launch import logs, run  # noqa: E402

MODEL = ["model.embed_dim=96", "model.depth=4", "model.num_heads=3", "head.rank=32", "model.drop_path_rate=0.0"]


def measure(stage: int, world: int, steps: int, shards: Path, labels: Path, tmp: Path) -> dict:
    out = tmp / f"z{stage}_w{world}"
    overrides = config_overrides(shards, labels, out) + MODEL + [
        f"zero.stage={stage}", f"max_steps={steps}", "checkpoint.every_steps=0", "checkpoint.export_encoder=false",
        "eval.max_batches=1"]
    codes = run(world, overrides, tmp / f"z{stage}_w{world}", timeout=900)
    if codes != [0] * world:
        raise RuntimeError(logs(tmp / f"z{stage}_w{world}", world))
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    step_s = [r["step_s"] for r in recs if r["kind"] == "train" and r["step"] > 2]
    mem = next(r for r in recs if r["kind"] == "memory")
    return {"zero_stage": stage, "world_size": world, "steps_per_s": 1.0 / statistics.median(step_s),
            "param_mib_per_rank": mem["param_bytes_per_rank"] / 2**20,
            "optim_mib_per_rank": mem["optim_bytes_per_rank"] / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--machine", default="dev CPU, 2 cores")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shards, labels = make_data(tmp / "data")
        for world in (1, 2):
            for stage in (0, 1, 2, 3):
                rows.append(measure(stage, world, args.steps, shards, labels, tmp))
                print(rows[-1], flush=True)
    result = {"machine": args.machine, "model": "vit3d_tiny E=96 depth=4 + TTE head (K=6, rank 32), fp32",
              "global_batch": 4, "volume": [8, 16, 16], "rows": rows}
    print(write_results(result))


def write_results(result: dict) -> str:
    """Add the ratios, write train.json / train.md, return the markdown table."""
    rows = result["rows"]
    state = {(r["zero_stage"], r["world_size"]): r["param_mib_per_rank"] + r["optim_mib_per_rank"] for r in rows}
    speed = {(r["zero_stage"], r["world_size"]): r["steps_per_s"] for r in rows}
    for r in rows:
        key = (r["zero_stage"], r["world_size"])
        r["state_vs_zero0"] = state[key] / state[(0, r["world_size"])]
        r["state_vs_1rank"] = state[key] / state[(r["zero_stage"], 1)]
        r["speed_vs_zero0"] = speed[key] / speed[(0, r["world_size"])]
    res = REPO / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "train.json").write_text(json.dumps(result, indent=1))
    lines = [f"# Trainer: ZeRO stages on CPU ranks ({result['machine']})", "",
             f"Model: {result['model']}; global batch 4; gloo; median step time after 2 warm-up steps.",
             "Memory = this rank's parameter storage + optimizer state (fp32 master partition + Adam moments).",
             "ZeRO-0 in fp32 keeps no separate master copy, so ZeRO-1/2/3 on one rank hold 4 bytes/param more.",
             *([f"Note: {result['note']}."] if result.get("note") else []), "",
             "| ZeRO | ranks | steps/s | speed vs ZeRO-0 | params MiB/rank | optimizer MiB/rank | state vs ZeRO-0 "
             "| state vs same stage on 1 rank |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['zero_stage']} | {r['world_size']} | {r['steps_per_s']:.2f} | {r['speed_vs_zero0']:.2f} | "
                     f"{r['param_mib_per_rank']:.2f} | {r['optim_mib_per_rank']:.2f} | {r['state_vs_zero0']:.2f} | "
                     f"{r['state_vs_1rank']:.2f} |")
    (res / "train.md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)

if __name__ == "__main__":
    main()
