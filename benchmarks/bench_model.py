"""Benchmark a training step (fwd+bwd) of our 3D ViT against MONAI's ``ViT``.

Both models get the same depth, width, heads, MLP width, patch and input; MONAI is built with
``qkv_bias=True`` so the parameter counts match (MONAI's learnable position embedding vs our
fixed sin-cos table is the only difference: one [N, E] tensor). The loss is the sum of the
mean-pooled tokens, so the step cost is the encoder's. Reported: samples/s for each and the
ratio (target >= 1.3x on CPU); on CUDA also achieved TFLOP/s (analytic matmul FLOPs of
``model_info``, 3x forward per training sample) and MFU against the GPU's dense bf16 peak.

    python benchmarks/bench_model.py                     # CPU: vit3d_tiny at 64^3, fp32
    python benchmarks/bench_model.py --device cuda       # GPU: vit3d_large at 160x224x224, bf16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tte_scale.models import create_model, get_config, model_info  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

#: Dense bf16 tensor-core peak (no sparsity), FLOP/s, by a substring of the device name.
PEAK_BF16 = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def peak_flops(name: str) -> float | None:
    for key, val in PEAK_BF16.items():
        if key in name:
            return val
    return None


def build_ours(name, img, grad_ckpt, device):
    return create_model(name, img_size=img, pool="mean", grad_checkpointing=grad_ckpt).to(device)


def build_monai(name, img, device):
    from monai.networks.nets import ViT

    cfg = get_config(name, img_size=img)
    return ViT(
        in_channels=cfg.in_chans,
        img_size=img,
        patch_size=cfg.patch_size,
        hidden_size=cfg.embed_dim,
        mlp_dim=cfg.mlp_hidden,
        num_layers=cfg.depth,
        num_heads=cfg.num_heads,
        proj_type="conv",
        pos_embed_type="learnable",
        classification=False,
        qkv_bias=True,
    ).to(device)


def step_fn(model, monai: bool):
    def loss_of(x):
        out = model(x)
        if monai:  # (tokens [B, N, E], hidden states); pool as ours does with pool="mean"
            return out[0].float().mean(dim=1).sum()
        return out.float().sum()

    return loss_of


def make_step(model, monai, x, amp_dtype, device):
    params = list(model.parameters())
    loss_of = step_fn(model, monai)

    def one():
        for p in params:
            p.grad = None
        with torch.autocast(device_type=device, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = loss_of(x)
        loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()

    return one


def time_interleaved(steps_by_name, n, warmup):
    """Median seconds per step of each callable, run in alternation so that load from other
    processes on a shared machine hits all of them alike."""
    for fn in steps_by_name.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in steps_by_name}
    for _ in range(n):
        for k, fn in steps_by_name.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda_ok = torch.cuda.is_available()
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if cuda_ok else "cpu",
                    help="where to run (default: cuda when available)")
    ap.add_argument("--model", nargs="+", default=None,
                    help="registry names (default: vit3d_large on cuda, vit3d_tiny on cpu)")
    ap.add_argument("--img", type=int, nargs=3, default=None, metavar=("D", "H", "W"),
                    help="input size (default: 160 224 224 on cuda, 64 64 64 on cpu)")
    ap.add_argument("--batch", type=int, default=None, help="samples per step (default 4 cuda, 2 cpu)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 20 cuda, 5 cpu)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (default 5 cuda, 2 cpu)")
    ap.add_argument("--grad-checkpointing", action="store_true", help="checkpoint every block of our model")
    ap.add_argument("--no-monai", action="store_true", help="time our model only")
    ap.add_argument("--out", type=Path, default=RESULTS / "model", help="output stem: writes STEM.json and STEM.md")
    args = ap.parse_args(argv)
    cuda = args.device == "cuda"
    if cuda and not cuda_ok:
        raise SystemExit("--device cuda: no CUDA device")
    models = args.model or (["vit3d_large"] if cuda else ["vit3d_tiny"])
    img = tuple(args.img or ((160, 224, 224) if cuda else (64, 64, 64)))
    batch = args.batch or (4 if cuda else 2)
    steps = args.steps or (20 if cuda else 5)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 2)
    amp = torch.bfloat16 if cuda else None
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        name = torch.cuda.get_device_name()
        machine, peak = f"{name} (1 GPU)", peak_flops(name)
    else:
        machine, peak = f"dev CPU, {os.cpu_count()} cores ({platform.machine()})", None

    rows = []
    for name in models:
        info = model_info(name, img_size=img)
        torch.manual_seed(0)
        x = torch.randn(batch, 1, *img, device=args.device)
        row = {"model": name, "params": info["params"], "img": list(img), "batch": batch,
               "tokens": info["tokens"], "flops_train_per_sample": info["flops_train"]}
        ours = build_ours(name, img, args.grad_checkpointing, args.device)
        steps_by_name = {"ours": make_step(ours, False, x, amp, args.device)}
        if not args.no_monai:
            monai = build_monai(name, img, args.device)
            row["monai_params"] = sum(p.numel() for p in monai.parameters())
            steps_by_name["monai"] = make_step(monai, True, x, amp, args.device)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        secs = time_interleaved(steps_by_name, steps, warmup)
        for key, t in secs.items():
            row[f"{key}_samples_s"] = batch / t
            row[f"{key}_tflops"] = info["flops_train"] * batch / t / 1e12
        if peak:
            row["ours_mfu"] = row["ours_tflops"] * 1e12 / peak
        if cuda:
            row["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        if "monai_samples_s" in row:
            row["speedup_vs_monai"] = row["ours_samples_s"] / row["monai_samples_s"]
        del steps_by_name, ours
        monai = None
        rows.append(row)
        print(json.dumps(row), flush=True)
        if cuda:
            torch.cuda.empty_cache()

    result = {"benchmark": "3D ViT training step (fwd+bwd), ours vs MONAI ViT", "machine": machine,
              "device": args.device, "amp": "bf16" if amp else "fp32", "peak_flops": peak,
              "grad_checkpointing": args.grad_checkpointing, "torch": torch.__version__, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    md = to_markdown(result)
    args.out.with_suffix(".md").write_text(md)
    print(md)
    return 0


def to_markdown(result) -> str:
    lines = [
        f"# Model benchmark: {result['benchmark']}",
        "",
        f"Machine: {result['machine']}; {result['amp']}, torch {result['torch']}, "
        f"activation checkpointing {'on' if result['grad_checkpointing'] else 'off'}.",
        "",
        "| model | params | input | batch | ours samples/s | MONAI samples/s | speedup | ours TFLOP/s | MFU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        mfu = f"{r['ours_mfu']:.1%}" if "ours_mfu" in r else "n/a"
        monai = f"{r['monai_samples_s']:.3f}" if "monai_samples_s" in r else "-"
        sp = f"{r['speedup_vs_monai']:.2f}x" if "speedup_vs_monai" in r else "-"
        lines.append(
            f"| {r['model']} | {r['params'] / 1e6:.1f} M | {'x'.join(map(str, r['img']))} | {r['batch']} | "
            f"{r['ours_samples_s']:.3f} | {monai} | {sp} | {r['ours_tflops']:.3f} | {mfu} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
