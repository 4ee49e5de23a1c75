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

import torch

from tte_scale.benchmarks.common import (
    add_output_args,
    machine_info,
    machine_name,
    md_table,
    time_interleaved,
    write_results,
)
from tte_scale.models import create_model, get_config, model_info
from tte_scale.train.telemetry import device_peak

# The aten op each SDPA backend dispatches to: what the profiler shows tells which one actually ran.
SDPA_OPS = {
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_efficient_attention": "efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_attention_math": "math",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash (cpu)",
}


def sdpa_backends(event_names) -> list[str]:
    """The SDPA backends among profiler event names (sorted; empty if the model ran no SDPA)."""
    return sorted({SDPA_OPS[n] for n in event_names if n in SDPA_OPS})


def sdpa_backend_used(step) -> list[str]:
    """Run one training step under the profiler (CPU activity only: the aten ops, no kernel
    trace) and return which SDPA backends it dispatched to."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return sdpa_backends(e.name for e in prof.events())


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda_ok = torch.cuda.is_available()
    ap.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cuda" if cuda_ok else "cpu",
        help="where to run (default: cuda when available)",
    )
    ap.add_argument(
        "--model", nargs="+", default=None, help="registry names (default: vit3d_large on cuda, vit3d_tiny on cpu)"
    )
    ap.add_argument(
        "--img",
        type=int,
        nargs=3,
        default=None,
        metavar=("D", "H", "W"),
        help="input size (default: 160 224 224 on cuda, 64 64 64 on cpu)",
    )
    ap.add_argument("--batch", type=int, default=None, help="samples per step (default 4 cuda, 2 cpu)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 20 cuda, 8 cpu)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (default 5 cuda, 2 cpu)")
    ap.add_argument("--grad-checkpointing", action="store_true", help="checkpoint every block of our model")
    ap.add_argument("--no-monai", action="store_true", help="time our model only")
    add_output_args(ap)
    args = ap.parse_args(argv)
    cuda = args.device == "cuda"
    if cuda and not cuda_ok:
        raise SystemExit("--device cuda: no CUDA device")
    models = args.model or (["vit3d_large"] if cuda else ["vit3d_tiny"])
    img = tuple(args.img or ((160, 224, 224) if cuda else (64, 64, 64)))
    batch = args.batch or (4 if cuda else 2)
    steps = args.steps or (20 if cuda else 8)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 2)
    amp = torch.bfloat16 if cuda else None
    spec = device_peak(torch.device(args.device))
    peak = spec.tflops * 1e12 if spec.tflops else None
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    machine = args.machine or machine_name(args.device)

    rows = []
    for name in models:
        info = model_info(name, img_size=img)
        torch.manual_seed(0)
        x = torch.randn(batch, 1, *img, device=args.device)
        row = {
            "model": name,
            "params": info["params"],
            "img": list(img),
            "batch": batch,
            "tokens": info["tokens"],
            "flops_train_per_sample": info["flops_train"],
        }
        ours = build_ours(name, img, args.grad_checkpointing, args.device)
        steps_by_name = {"ours": make_step(ours, False, x, amp, args.device)}
        if not args.no_monai:
            monai = build_monai(name, img, args.device)
            row["monai_params"] = sum(p.numel() for p in monai.parameters())
            steps_by_name["monai"] = make_step(monai, True, x, amp, args.device)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        timing = time_interleaved(steps_by_name, warmup=warmup, repeats=steps)
        row["ours_sdpa_backend"] = sdpa_backend_used(steps_by_name["ours"])
        if cuda:  # ours alone: the peak of the timed steps above includes MONAI's model and run
            del steps_by_name
            monai = None
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            one = make_step(ours, False, x, amp, args.device)
            one()
            row["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
            steps_by_name = {}
        for key, st in timing.items():
            t = st["median_s"]
            row[f"{key}_step_s"] = st
            row[f"{key}_samples_s"] = batch / t
            row[f"{key}_tflops"] = info["flops_train"] * batch / t / 1e12
        if peak:
            row["ours_mfu"] = row["ours_tflops"] * 1e12 / peak
        if "monai_samples_s" in row:
            row["speedup_vs_monai"] = row["ours_samples_s"] / row["monai_samples_s"]
        del steps_by_name, ours
        monai = None
        rows.append(row)
        print(json.dumps(row), flush=True)
        if cuda:
            torch.cuda.empty_cache()

    result = {
        "benchmark": "3D ViT training step (fwd+bwd), ours vs MONAI ViT",
        "machine": machine,
        "meta": machine_info(args.device),
        "device": args.device,
        "warmup": warmup,
        "steps": steps,
        "amp": "bf16" if amp else "fp32",
        "peak_flops": peak,
        "peak_entry": spec.entry,
        "peak_note": spec.note,
        "grad_checkpointing": args.grad_checkpointing,
        "torch": torch.__version__,
        "rows": rows,
    }
    md = to_markdown(result)
    write_results(args.out, "model", result, md)
    print(md)
    return 0


def to_markdown(result) -> str:
    rows = []
    for r in result["rows"]:
        mfu = f"{r['ours_mfu']:.1%}" if "ours_mfu" in r else "n/a"
        monai = f"{r['monai_samples_s']:.3f}" if "monai_samples_s" in r else "-"
        sp = f"{r['speedup_vs_monai']:.2f}x" if "speedup_vs_monai" in r else "-"
        spread = f"±{50 * r['ours_step_s']['iqr_rel']:.0f}%" if "ours_step_s" in r else "-"
        rows.append(
            [
                r["model"],
                r.get("tokens", "-"),
                f"{r['params'] / 1e6:.1f} M",
                "x".join(map(str, r["img"])),
                r["batch"],
                f"{r['ours_samples_s']:.3f}",
                spread,
                monai,
                sp,
                f"{r['ours_tflops']:.3f}",
                mfu,
                ", ".join(r.get("ours_sdpa_backend") or ["-"]),
                f"{r['peak_mem_gib']:.1f}" if "peak_mem_gib" in r else "-",
            ]
        )
    lines = [
        f"# Model benchmark: {result['benchmark']}",
        "",
        f"Machine: {result['machine']}; {result['amp']}, torch {result['torch']}, "
        f"activation checkpointing {'on' if result['grad_checkpointing'] else 'off'}; median of "
        f"{result.get('steps', '?')} interleaved steps after {result.get('warmup', '?')} warm-up "
        "(spread: half the interquartile range). MFU peak: "
        f"{result.get('peak_note') or 'n/a'}; SDPA backend: the aten op the profiler saw in one step.",
        "",
        *md_table(
            [
                "model",
                "tokens",
                "params",
                "input",
                "batch",
                "ours samples/s",
                "spread",
                "MONAI samples/s",
                "speedup",
                "ours TFLOP/s",
                "MFU",
                "SDPA backend",
                "ours peak GiB",
            ],
            rows,
        ),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
