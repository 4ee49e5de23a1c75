"""End-to-end training throughput of the real trainer on real shards, per world size.

Builds a small cohort with the real pipeline (`tte-scale synth` -> `labels` -> `shard`, the
demo's shard config), then runs `tte-scale train` (configs/pretrain/demo.yaml) as separate rank
processes the way torchrun or SLURM would (RANK/WORLD_SIZE/MASTER_ADDR; on CPU DeepSpeed with
DS_ACCELERATOR=cpu and gloo, one thread per rank) and reads the trainer's own telemetry
(metrics.jsonl): volumes/s, tokens/s, achieved TFLOP/s, MFU and the data-wait fraction are the
medians over the steps after --warmup-steps; memory is the largest rank's parameter and
optimizer-state bytes after step 1.

MFU needs a peak. On GPUs the trainer looks up the dense bf16 datasheet peak (H100/H200/A100).
On CPU there is no datasheet figure, so the peak is *measured*: fp32 matmul FLOP/s of one
thread (each rank runs one thread) on a 1024^3 product, best of 5; it is passed to the trainer
as telemetry.peak_tflops and written into the results. CPU MFU is thus "fraction of what this
core reaches on a large matmul", not comparable with GPU MFU.

    .venv/bin/python benchmarks/bench_train.py                  # CPU, 1 and 2 ranks, ZeRO-2 (minutes)
    .venv/bin/python benchmarks/bench_train.py --zero 0 1 2 3   # + model-state memory per ZeRO stage
    .venv/bin/python benchmarks/bench_train.py --device cuda --worlds 1 2 4 8   # ViT-B at 160x224x224, bf16

On CUDA the defaults are the full-size run: configs/pretrain/vit_b_8gpu.yaml (ViT-B, 16^3 patches,
160x224x224, WebDataset, bf16, ZeRO-2) at global batch 8 per GPU, on shards of
configs/shard/default.yaml's shape (WebDataset only): MFU at the demo's 32x64x64 would measure
a model of 16 tokens, not the one the project trains.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tte_scale.benchmarks.common import (
    add_output_args,
    display_path,
    machine_info,
    machine_name,
    md_table,
    write_results,
)
from tte_scale.config import packaged_config
from tte_scale.train.metrics_log import read_metrics

DEMO = packaged_config("pretrain", "demo.yaml")
FULL = packaged_config("pretrain", "vit_b_8gpu.yaml")
FULL_SHARDS = packaged_config("shard", "default.yaml")
CLI = [sys.executable, "-m", "tte_scale.cli"]


def make_data(
    root: Path, subjects: int, tasks: int, shard_config: Path, synth_set: tuple[str, ...] = (), synth_workers: int = 2
) -> tuple[Path, Path, dict]:
    """The real pipeline on a small synthetic cohort; returns (shards, labels, timings). The shards
    are written by `tte-scale shard --workers 0`: the plain in-process loop, no Ray."""
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    steps = {
        "synth": [
            "synth",
            "--out",
            str(root / "cohort"),
            "--subjects",
            str(subjects),
            "--workers",
            str(synth_workers),
            "--no-progress",
            "--overwrite",
            *[a for o in synth_set for a in ("--set", o)],
        ],
        "labels": [
            "labels",
            "--meds",
            str(root / "cohort"),
            "--scans",
            str(root / "cohort" / "scans.parquet"),
            "--out",
            str(root / "labels"),
            "--tasks",
            str(tasks),
            "--no-progress",
            "--overwrite",
        ],
        "shard": [
            "shard",
            "--scans",
            str(root / "cohort" / "scans.parquet"),
            "--labels",
            str(root / "labels"),
            "--out",
            str(root / "shards"),
            "--config",
            str(shard_config),
            "--workers",
            "0",
            "--no-progress",
            "--overwrite",
        ],
    }
    seconds = {}
    for name, argv in steps.items():
        t0 = time.perf_counter()
        res = subprocess.run(CLI + argv, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"bench_train: `tte-scale {name}` failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
        seconds[name] = time.perf_counter() - t0
    return root / "shards", root / "labels", seconds


def cpu_matmul_peak_tflops(n: int = 1024, repeats: int = 5) -> float:
    """Measured fp32 matmul TFLOP/s of one thread: the CPU 'peak' MFU is relative to."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        best = min(_timed(lambda: a @ b) for _ in range(repeats))
    finally:
        torch.set_num_threads(before)
    return 2 * n**3 / best / 1e12


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def full_shape_shard_config(dest: Path) -> Path:
    """configs/shard/default.yaml (160x224x224) writing WebDataset only: the tars are what the
    CUDA run reads, and the Zarr copy would double the shard time."""
    import yaml

    from tte_scale.config import read_yaml

    data = read_yaml(FULL_SHARDS)
    data["format"] = "wds"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(data, sort_keys=False))
    return dest


def run_ranks(
    world: int, overrides: list[str], log_dir: Path, device: str, timeout: float, config: Path = DEMO
) -> None:
    """Start ``world`` `tte-scale train` ranks and wait; raises with the logs if one fails."""
    port = _port()
    cmd = CLI + ["train", "--config", str(config)] + [a for o in overrides for a in ("--set", o)]
    procs, logs = [], []
    for rank in range(world):
        env = {
            **os.environ,
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "PYTHONUNBUFFERED": "1",
        }
        if device == "cpu":
            # One thread per rank: ranks then scale over cores instead of fighting over them.
            env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
        logs.append(log_dir / f"rank{rank}.log")
        procs.append(subprocess.Popen(cmd, env=env, stdout=open(logs[-1], "w"), stderr=subprocess.STDOUT))
    deadline = time.monotonic() + timeout
    codes = []
    try:
        for p in procs:
            codes.append(p.wait(timeout=max(1.0, deadline - time.monotonic())))
    except subprocess.TimeoutExpired:
        codes.append(None)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if codes != [0] * world:
        tail = "\n".join(f"--- {p.name}\n" + p.read_text()[-2000:] for p in logs)
        raise SystemExit(f"bench_train: {world}-rank run failed (exit codes {codes}):\n{tail}")


def measure(world: int, zero: int, args, shards: Path, labels: Path, tmp: Path, peak: float | None) -> dict:
    out = tmp / f"w{world}_z{zero}"
    out.mkdir(parents=True, exist_ok=True)
    overrides = [
        f"out_dir={out}",
        f"data.shards_dir={shards}",
        f"data.labels_dir={labels}",
        f"device={args.device}",
        f"max_steps={args.steps}",
        f"zero.stage={zero}",
        f"data.num_workers={args.workers}",
        "checkpoint.every_steps=0",
        "checkpoint.export_encoder=false",
        "eval.every_steps=0",
        "eval.max_batches=1",
        "telemetry.log_every=1",
        "telemetry.tensorboard=false",
        "telemetry.progress_bar=false",
        *([f"telemetry.peak_tflops={peak}"] if peak else []),
        *(["zero.precision=bf16"] if args.device == "cuda" else []),
        *args.overrides,
    ]
    if args.device == "cuda" and args.config == FULL:
        # One node's share of the 8-GPU config: 8 volumes per GPU per step, no accumulation.
        overrides[:0] = [f"optim.global_batch_size={8 * world}", "optim.grad_accum_steps=1", "cluster.gpus_per_node=1"]
    t0 = time.perf_counter()
    run_ranks(world, overrides, out, args.device, args.timeout, args.config)
    wall = time.perf_counter() - t0
    recs = read_metrics(out / "metrics.jsonl")  # the trainer's reader: one record per (kind, step)
    train = [r for r in recs if r["kind"] == "train" and r["step"] > args.warmup_steps and not r["skipped"]]
    if not train:
        raise SystemExit(f"bench_train: no train steps after the {args.warmup_steps} warm-up steps in {out}")
    mem = next((r for r in recs if r["kind"] == "memory"), None)
    med = {
        k: statistics.median(r[k] for r in train)
        for k in ("volumes_per_s", "tokens_per_s", "tflops", "data_wait_frac", "step_s", "peak_mem_gib")
    }
    step_times = sorted(r["step_s"] for r in train)
    # Over the whole timed window, epoch boundaries and slow outliers included: what a long run sees.
    window_s = sum(step_times)
    window = {
        "volumes_per_s_window": sum(r["volumes_per_s"] * r["step_s"] for r in train) / window_s,
        "data_wait_frac_window": sum(r["data_wait_frac"] * r["step_s"] for r in train) / window_s,
    }
    row = {
        "world_size": world,
        "zero_stage": zero,
        "steps_timed": len(train),
        "run_wall_s": wall,
        **med,
        **window,
        "step_s_min": step_times[0],
        "step_s_max": step_times[-1],
        "mfu": statistics.median(r["mfu"] for r in train) if "mfu" in train[0] else None,
        "peak_mem_gib_max": max(r["peak_mem_gib"] for r in train),
        "global_batch": _cfg_value(overrides, "optim.global_batch_size", 8),
        "peak_entry": train[-1].get("peak_entry"),
    }
    if mem:
        row["param_mib_per_rank"] = mem["param_bytes_per_rank"] / 2**20
        row["optim_mib_per_rank"] = mem["optim_bytes_per_rank"] / 2**20
    return row


def _cfg_value(overrides: list[str], key: str, default):
    for o in reversed(overrides):  # the last --set of a key wins
        if o.startswith(key + "="):
            return json.loads(o.split("=", 1)[1])
    return default


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="rank device (cuda: one GPU per rank)")
    ap.add_argument("--worlds", type=int, nargs="+", default=[1, 2], help="world sizes to run")
    ap.add_argument("--zero", type=int, nargs="+", default=[2], choices=[0, 1, 2, 3], help="ZeRO stages to run")
    ap.add_argument("--steps", type=int, default=12, help="optimizer steps per run")
    ap.add_argument("--warmup-steps", type=int, default=3, help="first steps left out of the medians")
    ap.add_argument("--subjects", type=int, default=40, help="subjects of the synthetic cohort")
    ap.add_argument("--tasks", type=int, default=256, help="pretraining tasks K requested from `tte-scale labels`")
    ap.add_argument(
        "--synth-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="`tte-scale synth` overrides (e.g. generic_codes=20000: enough distinct codes for K = 8,192)",
    )
    ap.add_argument("--synth-workers", type=int, default=2, help="`tte-scale synth` worker processes")
    ap.add_argument("--workers", type=int, default=1, help="loader worker processes per rank")
    ap.add_argument(
        "--shard-config",
        type=Path,
        default=None,
        help="shard config of the data (default: configs/shard/demo.yaml on cpu; on cuda "
        "configs/shard/default.yaml, 160x224x224, written as WebDataset only)",
    )
    ap.add_argument(
        "--config",
        type=Path,
        default=None,
        help="trainer config (default: configs/pretrain/demo.yaml on cpu, configs/pretrain/vit_b_8gpu.yaml on cuda)",
    )
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra trainer overrides (model size, batch, ...) on top of configs/pretrain/demo.yaml",
    )
    ap.add_argument("--timeout", type=float, default=900, help="seconds per run before its ranks are killed")
    add_output_args(ap)
    args = ap.parse_args(argv)
    if args.warmup_steps >= args.steps:
        raise SystemExit(f"--warmup-steps ({args.warmup_steps}) must be below --steps ({args.steps})")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available() or torch.cuda.device_count() < max(args.worlds):
            raise SystemExit(f"--device cuda needs {max(args.worlds)} GPUs on this node")
    cuda = args.device == "cuda"
    args.config = args.config or (FULL if cuda else DEMO)
    machine = args.machine or machine_name(args.device)
    peak = cpu_matmul_peak_tflops() if args.device == "cpu" else None

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_train_") as d:
        tmp = Path(d)
        if args.shard_config is None:
            args.shard_config = (
                full_shape_shard_config(tmp / "shard.yaml") if cuda else packaged_config("shard", "demo.yaml")
            )
            shard_desc = f"{display_path(FULL_SHARDS)} (format: wds)" if cuda else _rel(args.shard_config)
        else:
            shard_desc = _rel(args.shard_config)
        from tte_scale.config import read_yaml

        shard_shape = read_yaml(args.shard_config)["imaging"]["shape"]
        shards, labels, data_s = make_data(
            tmp / "data", args.subjects, args.tasks, args.shard_config, tuple(args.synth_set), args.synth_workers
        )
        from tte_scale.data.build_info import labels_num_tasks

        tasks_kept = labels_num_tasks(labels)
        shard_run = json.loads((shards / "_state" / "last_run.json").read_text())
        for zero in args.zero:
            for world in args.worlds:
                rows.append(measure(world, zero, args, shards, labels, tmp, peak))
                print(json.dumps(rows[-1]), flush=True)
    add_ratios(rows)
    result = {
        "benchmark": "end-to-end training throughput of `tte-scale train` on real shards",
        "machine": machine,
        "meta": machine_info(args.device),
        "device": args.device,
        "config": display_path(args.config),
        "overrides": args.overrides,
        "shard_config": shard_desc,
        "shard_shape": shard_shape,
        "subjects": args.subjects,
        "tasks": args.tasks,
        "tasks_kept": tasks_kept,
        "synth_set": args.synth_set,
        "loader_workers_per_rank": args.workers,
        "steps": args.steps,
        "warmup_steps": args.warmup_steps,
        "data_build_s": data_s,
        "shard_build": {k: shard_run[k] for k in ("processed", "failed", "seconds", "volumes_per_s") if k in shard_run},
        "peak_tflops_per_rank": peak if peak else "datasheet (bf16 dense)",
        "peak_note": (
            "measured fp32 matmul of one thread (1024^3), best of 5"
            if peak
            else "the trainer's datasheet table (tte_scale/train/telemetry.py)"
        ),
        "rows": rows,
    }
    md = to_markdown(result)
    write_results(args.out, "train", result, md)
    print(md)
    return 0


def _rel(p: Path) -> str:
    p = Path(p).resolve()
    return display_path(p)


def add_ratios(rows: list[dict]) -> None:
    """Scaling efficiency vs 1 rank of the same stage; memory vs ZeRO-0 and vs 1 rank."""
    by = {(r["zero_stage"], r["world_size"]): r for r in rows}
    for r in rows:
        one = by.get((r["zero_stage"], 1))
        if one:
            r["speedup_vs_1rank"] = r["volumes_per_s"] / one["volumes_per_s"]
            r["scaling_efficiency"] = r["speedup_vs_1rank"] / r["world_size"]
        state = lambda x: x.get("param_mib_per_rank", 0) + x.get("optim_mib_per_rank", 0)  # noqa: E731
        z0 = by.get((0, r["world_size"]))
        if z0 and state(z0) > 0:
            r["state_vs_zero0"] = state(r) / state(z0)
        if one and state(one) > 0:
            r["state_vs_1rank"] = state(r) / state(one)


def to_markdown(result: dict) -> str:
    f = lambda v, p=2: "n/a" if v is None else f"{v:.{p}f}"  # noqa: E731
    rows = [
        [
            r["zero_stage"],
            r["world_size"],
            r["global_batch"],
            f(r["volumes_per_s"]),
            f(r["volumes_per_s_window"]),
            f(r["tokens_per_s"], 0),
            f(r["tflops"], 4),
            "n/a" if r["mfu"] is None else f"{r['mfu']:.1%}",
            f"{r['data_wait_frac']:.1%}",
            f"{r['data_wait_frac_window']:.1%}",
            f"{r['step_s']:.3f} ({r['step_s_min']:.3f}-{r['step_s_max']:.3f})",
            f(r.get("speedup_vs_1rank")),
            f(r.get("scaling_efficiency")),
            f(r.get("param_mib_per_rank")),
            f(r.get("optim_mib_per_rank")),
        ]
        for r in result["rows"]
    ]
    peak = result["peak_tflops_per_rank"]
    lines = [
        f"# Trainer end to end ({result['machine']})",
        "",
        f"`tte-scale train` with {result['config']} (+ {', '.join(result['overrides']) or 'no overrides'}) on "
        f"shards built by the real pipeline from {result['subjects']} synthetic subjects ({result['shard_config']}, "
        f"{'x'.join(map(str, result['shard_shape']))} voxels), "
        f"K = {result.get('tasks_kept', result['tasks'])} tasks (of {result['tasks']} requested); {result['device']} ranks"
        + (" (DeepSpeed DS_ACCELERATOR=cpu, gloo, one thread each)" if result["device"] == "cpu" else "")
        + f", {result['loader_workers_per_rank']} loader worker(s) per rank. Medians over steps "
        f"{result['warmup_steps'] + 1}-{result['steps']} from the trainer's metrics.jsonl.",
        "",
        "MFU peak per rank: "
        + (f"{peak:.4f} TFLOP/s, {result['peak_note']}" if isinstance(peak, float) else result["peak_note"])
        + ".",
        "",
        "Medians are the steady state; *window* figures cover all timed steps, epoch boundaries included.",
        "",
        *md_table(
            [
                "ZeRO",
                "ranks",
                "global batch",
                "volumes/s",
                "volumes/s window",
                "tokens/s",
                "TFLOP/s",
                "MFU",
                "data wait",
                "data wait window",
                "step s (min-max)",
                "speed-up vs 1 rank",
                "efficiency",
                "params MiB/rank",
                "optim MiB/rank",
            ],
            rows,
        ),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
