"""Benchmark the TTE head tail + survival loss: fused vs eager reference vs torch.compile.

Each method runs forward + backward of ``logh = z @ W^T + bias -> NLL`` from the per-bin
vectors ``z [B, J, R]``, task embedding ``W [K, R]`` and bias ``[J, K]`` (all requiring grad)
against compact labels. Reported per (B, K): median time of fwd+bwd, and on CUDA

* ``peak_extra_mib``: peak allocated during fwd+bwd minus what was allocated before it
  (inputs, parameters), and
* ``workspace_mib``: the same minus the gradients every method must return (dz, dW, dbias),
  i.e. the memory the loss itself needs; the fused kernel's target is <= 10% of eager's.

On CPU the fused path is the chunked PyTorch one (Triton runs on GPU only); as the issue asks,
CPU runs report the reference eager and compiled only unless ``--methods`` says otherwise.

    python benchmarks/bench_loss.py                    # CPU: eager + compiled, writes results/
    python benchmarks/bench_loss.py --device cuda      # GPU: fused vs eager vs compiled, bf16

Timings: warm-up runs, then the methods timed interleaved (one call of each per round, so load
from other processes hits all alike); the median is reported with its interquartile spread.
"""

from __future__ import annotations

import argparse
import json

import torch

from tte_scale.benchmarks.common import (
    add_output_args,
    machine_info,
    machine_name,
    md_table,
    time_interleaved,
    write_results,
)
from tte_scale.loss import fused_survival_loss, head_loss_reference


def make_inputs(B, J, K, R, dtype, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.randn(B, J, R, generator=g).to(device, dtype).requires_grad_()
    w = (torch.randn(K, R, generator=g) / R**0.5).to(device, dtype).requires_grad_()
    b = (torch.randn(J, K, generator=g) * 0.5 - 7).to(device, dtype).requires_grad_()
    time_ = (torch.rand(B, K, generator=g) * 2000).to(device)
    event = (torch.rand(B, K, generator=g) < 0.05).to(device)
    starts = torch.tensor([0, 30, 90, 180, 365, 730, 1095, 1825][:J], dtype=torch.float32, device=device)
    if J > 8:
        starts = torch.linspace(0, 3000, J, device=device)
    return z, w, b, time_, event, starts


def methods(names: list[str]):
    """The callables of one (B, K) case. ``compiled`` is a fresh ``torch.compile`` after
    ``torch.compiler.reset()``: one compiled function over all 9 shapes with ``dynamic=False``
    recompiles per shape and, past dynamo's recompile limit (8), silently runs eager."""
    out = {}
    for name in names:
        if name == "eager":
            out[name] = head_loss_reference
        elif name == "compiled":
            torch.compiler.reset()
            out[name] = torch.compile(head_loss_reference, dynamic=False)
        elif name == "fused":
            out[name] = lambda *a: fused_survival_loss(*a, backend="auto")
        else:
            raise SystemExit(f"unknown method {name!r} (eager, compiled, fused)")
    return out


def dynamo_graphs() -> int:
    """Graphs dynamo has captured in this process so far (its own counter; not reset by reset())."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def bench_case(fns, inputs, device, warmup, repeats):
    """Median fwd+bwd seconds of each method (interleaved), and on CUDA its memory."""
    z, w, b = inputs[:3]
    sync = torch.cuda.synchronize if device == "cuda" else None

    def step_of(fn):
        def step():
            for p in (z, w, b):
                p.grad = None
            fn(*inputs).backward()

        return step

    steps = {name: step_of(fn) for name, fn in fns.items()}
    graphs_before = dynamo_graphs()
    timing = time_interleaved(steps, warmup=warmup, repeats=repeats, sync=sync)
    graphs = dynamo_graphs() - graphs_before
    out = {}
    for name, step in steps.items():
        out[name] = {
            "ms": 1e3 * timing[name]["median_s"],
            "iqr_rel": timing[name]["iqr_rel"],
            "min_ms": 1e3 * timing[name]["min_s"],
            "max_ms": 1e3 * timing[name]["max_s"],
        }
        if name == "compiled":
            # Whether the figure is a compiled one: dynamo captured a graph for this case (only the
            # compiled method goes through dynamo); 0 graphs = it ran eager.
            out[name]["graphs_compiled"] = graphs
            out[name]["ran"] = "compiled" if graphs > 0 else "eager (dynamo captured no graph)"
        if device == "cuda":
            for p in (z, w, b):
                p.grad = None
            torch.cuda.empty_cache()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            step()
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - before
            grads = sum(p.grad.numel() * p.grad.element_size() for p in (z, w, b))
            out[name].update(peak_extra_mib=peak / 2**20, workspace_mib=max(peak - grads, 0) / 2**20)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="where to run (default: cuda when available)",
    )
    ap.add_argument(
        "--batch",
        type=int,
        nargs="+",
        default=None,
        help="batch sizes B (default: 8 32 128 on cuda; 8 32 on cpu, where larger cases take minutes)",
    )
    ap.add_argument(
        "--tasks",
        type=int,
        nargs="+",
        default=None,
        help="task counts K (default: 1024 8192 65536 on cuda; 1024 8192 on cpu)",
    )
    ap.add_argument("--bins", type=int, default=8, help="time bins J")
    ap.add_argument("--rank", type=int, default=512, help="head rank R")
    ap.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default=None,
        help="input dtype (default: bfloat16 on cuda, float32 on cpu)",
    )
    ap.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="subset of eager, compiled, fused (default: all on cuda, eager+compiled on cpu)",
    )
    ap.add_argument("--warmup", type=int, default=None, help="untimed runs per case (default 3 cuda, 2 cpu)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per case (default 20 cuda, 7 cpu)")
    add_output_args(ap)
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device")
    cuda = args.device == "cuda"
    dtype = getattr(torch, args.dtype or ("bfloat16" if cuda else "float32"))
    names = args.methods or (["eager", "compiled", "fused"] if cuda else ["eager", "compiled"])
    warmup = args.warmup if args.warmup is not None else (3 if cuda else 2)
    repeats = args.repeats if args.repeats is not None else (20 if cuda else 7)
    batches = args.batch or ([8, 32, 128] if cuda else [8, 32])
    tasks = args.tasks or ([1024, 8192, 65536] if cuda else [1024, 8192])

    rows = []
    for K in tasks:
        for B in batches:
            inputs = make_inputs(B, args.bins, K, args.rank, dtype, args.device)
            row = {"B": B, "K": K, **bench_case(methods(names), inputs, args.device, warmup, repeats)}
            if "fused" in row and "eager" in row:
                row["fused_time_vs_eager"] = row["fused"]["ms"] / row["eager"]["ms"]
                if cuda and row["eager"]["workspace_mib"] > 0:
                    row["fused_workspace_vs_eager"] = row["fused"]["workspace_mib"] / row["eager"]["workspace_mib"]
            rows.append(row)
            print(json.dumps(row), flush=True)
            del inputs
            if cuda:
                torch.cuda.empty_cache()

    result = {
        "benchmark": "tte head tail + piecewise-exponential loss, forward+backward",
        "machine": args.machine or machine_name(args.device),
        "meta": machine_info(args.device),
        "device": args.device,
        "dtype": str(dtype).replace("torch.", ""),
        "bins": args.bins,
        "rank": args.rank,
        "torch": torch.__version__,
        "methods": names,
        "warmup": warmup,
        "repeats": repeats,
        "rows": rows,
    }
    if "compiled" in names and "eager" in names:
        result["compiled_speedup_vs_eager"] = _geomean([r["eager"]["ms"] / r["compiled"]["ms"] for r in rows])
    if "fused" in names and "eager" in names:
        result["fused_speedup_vs_eager"] = _geomean([r["eager"]["ms"] / r["fused"]["ms"] for r in rows])
    md = to_markdown(result)
    write_results(args.out, "loss", result, md)
    print(md)
    return 0


def _geomean(xs: list[float]) -> float:
    import math

    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def to_markdown(result) -> str:
    names = result["methods"]
    mem = result["device"] == "cuda"
    head = ["B", "K"] + [f"{n} ms (±IQR/2)" for n in names]
    if mem:
        head += [f"{n} workspace MiB" for n in names]
    if "compiled" in names and "eager" in names:
        head += ["eager/compiled time"]
    if "fused" in names and "eager" in names:
        head += ["fused/eager time"] + (["fused/eager workspace"] if mem else [])
    rows = []
    for r in result["rows"]:
        cells = [str(r["B"]), str(r["K"])] + [
            f"{r[n]['ms']:.2f} (±{50 * r[n]['iqr_rel']:.0f}%)" + (" EAGER" if r[n].get("graphs_compiled") == 0 else "")
            for n in names
        ]
        if mem:
            cells += [f"{r[n]['workspace_mib']:.1f}" for n in names]
        if "compiled" in names and "eager" in names:
            cells.append(f"{r['eager']['ms'] / r['compiled']['ms']:.2f}x")
        if "fused_time_vs_eager" in r:
            cells.append(f"{r['fused_time_vs_eager']:.2f}x")
            if mem:
                cells.append(f"{r.get('fused_workspace_vs_eager', float('nan')):.1%}")
        rows.append(cells)
    lines = [
        f"# Loss benchmark: {result['benchmark']}",
        "",
        f"Machine: {result['machine']}; dtype {result['dtype']}, bins {result['bins']}, rank {result['rank']}, "
        f"torch {result['torch']}. Median fwd+bwd time of {result['repeats']} interleaved runs after "
        f"{result['warmup']} warm-up; workspace = peak extra memory minus the returned grads. "
        "`compiled` is a fresh torch.compile per case (marked EAGER where dynamo captured no graph).",
        "",
        *md_table(head, rows),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
