"""What the checkpoint checksums cost, on a real DeepSpeed checkpoint.

The trainer's completion marker records the CRC-32C of every file of a step folder
(``tte_scale.train.checkpoint``): after a save every rank checksums its share of the files,
and a resume verifies them again. This script builds a real ZeRO-2 engine on one CPU rank
(default ``vit3d_small``, ~23 M parameters, a ~370 MB checkpoint), takes one optimizer step and
then, per round, times side by side: DeepSpeed's ``save_checkpoint``; the checksums the trainer
adds after it (``checksum_share`` over all files, as one rank does alone); the resume-time check
(``check_complete`` with checksums); and ``torch.load`` of every file, which a resume does anyway.
The files are in the page cache for all of these (as right after a save); a cold read from disk
costs the same for the checksum and for the load.

    .venv/bin/python benchmarks/bench_checkpoint.py --out runs/bench
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tte_scale.benchmarks.common import add_output_args, machine_info, md_table, write_results


def _engine(model_name: str):
    import deepspeed

    from tte_scale.models import create_model
    from tte_scale.train.dist import dist_env, init_distributed

    dist_env()
    init_distributed("cpu")
    model = create_model(model_name, img_size=(16, 32, 32), patch_size=(8, 16, 16))
    cfg = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": 2},
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
        "zero_allow_untested_optimizer": True,
    }
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=cfg)
    loss = engine(torch.rand(1, 1, 16, 32, 32)).square().mean()
    engine.backward(loss)
    engine.step()
    return engine


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vit3d_small", help="registry name (default vit3d_small)")
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    add_output_args(ap)
    args = ap.parse_args(argv)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from tte_scale.train.checkpoint import check_complete, checksum_share, write_marker

    engine = _engine(args.model)
    times: dict[str, list[float]] = {"save": [], "checksum": [], "verify": [], "load": []}
    with tempfile.TemporaryDirectory(prefix="bench_ckpt_") as d:
        root = Path(d)
        for i in range(args.repeats + 1):  # round 0 warms up
            tag = f"step_{i:08d}"
            t0 = time.perf_counter()
            engine.save_checkpoint(str(root), tag=tag, save_latest=False)
            t1 = time.perf_counter()
            files = checksum_share(root / tag)
            t2 = time.perf_counter()
            write_marker(root / tag, i, 1, files)
            t3 = time.perf_counter()
            assert check_complete(root / tag)[0]
            t4 = time.perf_counter()
            for name in files:
                torch.load(root / tag / name, map_location="cpu", weights_only=False)
            t5 = time.perf_counter()
            if i:
                for key, s in zip(times, (t1 - t0, t2 - t1, t4 - t3, t5 - t4)):
                    times[key].append(s)
            nbytes = sum(f["bytes"] for f in files.values())
            shutil.rmtree(root / tag)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "meta": machine_info("cpu"),
        "load_average": os.getloadavg(),
        "model": args.model,
        "checkpoint_bytes": nbytes,
        "files": len(files),
        "median_s": med,
        "all_s": times,
        "checksum_gb_per_s": nbytes / med["checksum"] / 1e9,
        "checksum_over_save": med["checksum"] / med["save"],
        "verify_over_load": med["verify"] / med["load"],
    }
    rows = [
        ["DeepSpeed save_checkpoint", f"{med['save']:.3f}", "1.00"],
        ["+ CRC-32C of every file (after the save)", f"{med['checksum']:.3f}", f"{result['checksum_over_save']:.2f}"],
        ["resume check (sizes + CRC-32C)", f"{med['verify']:.3f}", f"{med['verify'] / med['save']:.2f}"],
        [
            "torch.load of every file (a resume reads them anyway)",
            f"{med['load']:.3f}",
            f"{med['load'] / med['save']:.2f}",
        ],
    ]
    md = "\n".join(
        [
            f"# Checkpoint checksums ({args.model}, {nbytes / 1e6:.0f} MB in {len(files)} files, ZeRO-2, 1 CPU rank)",
            "",
            f"Median of {args.repeats} rounds, page cache warm; load average {os.getloadavg()[0]:.1f} at the end.",
            "",
            *md_table(["operation", "seconds", "x save"], rows),
            "",
            f"CRC-32C throughput {result['checksum_gb_per_s']:.1f} GB/s; the resume check costs "
            f"{result['verify_over_load']:.2f}x the load of the same files.",
            "",
        ]
    )
    write_results(args.out, "checkpoint", result, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
