"""Loader throughput, side by side on one set of volumes (volumes/s).

Rows: our loader from WebDataset and from Zarr shards with 1 and 2 workers; the usual MONAI
pipeline from NIfTI (LoadImaged + EnsureChannelFirstd + Orientationd + Spacingd +
ScaleIntensityRanged + ResizeWithPadOrCropd, one process, one thread); the decode limit (numcodecs
decode of the same compressed volume bytes in a tight loop, one core). Files are freshly written,
so reads hit the page cache: this measures the CPU cost of the pipelines, not the disk.

    .venv/bin/python benchmarks/bench_loader.py [--n 32] [--shape 96 128 128] [--machine "dev CPU, 2 cores"]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "unit" / "data"))


def bench_ours(root: str, fmt: str, workers: int, batch: int) -> tuple[float, float]:
    """(steady-state volumes/s, whole-epoch volumes/s including worker start-up)."""
    from tte_scale.data import LoaderConfig, build_loader

    loader = build_loader(root, LoaderConfig(format=fmt, batch_size=batch, num_workers=workers, prefetch_factor=2))
    skip = 2 * workers + 1  # batches the workers may have prefetched while the others started
    t0 = time.perf_counter()
    n = 0
    for i, b in enumerate(loader):
        if i == skip:
            t1, n = time.perf_counter(), 0
        n += b["volume"].shape[0]
    t2 = time.perf_counter()
    return n / (t2 - t1), loader.steps_per_epoch * batch / (t2 - t0)


def bench_monai(paths: list[str], shape) -> float:
    import torch
    from monai.transforms import (Compose, EnsureChannelFirstd, LoadImaged, Orientationd, ResizeWithPadOrCropd,
                                  ScaleIntensityRanged, Spacingd)

    torch.set_num_threads(1)
    tf = Compose([LoadImaged(keys="img"), EnsureChannelFirstd(keys="img"), Orientationd(keys="img", axcodes="RAS"),
                  Spacingd(keys="img", pixdim=(1.0, 1.0, 1.5), mode="bilinear"),
                  ScaleIntensityRanged(keys="img", a_min=-1000, a_max=1000, b_min=0.0, b_max=1.0, clip=True),
                  ResizeWithPadOrCropd(keys="img", spatial_size=tuple(shape))])
    tf({"img": paths[0]})  # warm-up
    t0 = time.perf_counter()
    for p in paths:
        tf({"img": p})
    return len(paths) / (time.perf_counter() - t0)


def bench_decode(blobs: list[bytes], codec, shape) -> float:
    out = np.empty(shape, dtype=np.int16)
    for b in blobs[:2]:
        codec.decode(b, out=out)
    t0, reps = time.perf_counter(), 3
    for _ in range(reps):
        for b in blobs:
            codec.decode(b, out=out)
    return reps * len(blobs) / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="number of distinct volumes (MONAI, decode limit)")
    ap.add_argument("--repeat", type=int, default=4, help="the shards hold each volume this many times")
    ap.add_argument("--shape", type=int, nargs=3, default=[96, 128, 128], help="canonical volume shape D H W")
    ap.add_argument("--batch", type=int, default=4, help="batch size of our loader")
    ap.add_argument("--machine", default="dev CPU, 2 cores", help="machine name written into the results")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="folder for loader.json/.md")
    args = ap.parse_args()

    import nibabel as nib
    import numcodecs
    from shard_fixture import phantom, write_shards

    from tte_scale.data.tarindex import index_tar

    shape = tuple(args.shape)
    rng = np.random.default_rng(0)
    vols = [phantom(shape, rng) for _ in range(args.n)]
    tmp = Path(tempfile.mkdtemp(prefix="bench_loader_"))
    codec = numcodecs.Zstd(level=3)
    n_samples = args.n * args.repeat  # long enough epochs to measure a steady state
    write_shards(tmp / "shards", n=n_samples, shape=shape, volumes=vols * args.repeat, samples_per_shard=16,
                 codec=codec, zarr_shard_rows=16, K=64, T=8)
    nifti = []
    for i, v in enumerate(vols):  # stored [D, H, W] = (S, A, R)-ish; NIfTI wants x, y, z with spacing
        p = tmp / f"v{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(np.ascontiguousarray(v.transpose(2, 1, 0)), np.diag([1.0, 1.0, 1.5, 1.0])), p)
        nifti.append(str(p))
    blobs: list[bytes] = []
    for tar in sorted((tmp / "shards" / "wds").glob("*.tar")):
        idx = index_tar(str(tar))
        data = tar.read_bytes()
        blobs += [data[o:o + s] for m in idx.members.values() for o, s in [m["volume.bin"]]]
    blobs = blobs[:args.n]
    raw = int(np.prod(shape)) * 2
    ratio = raw * len(blobs) / sum(len(b) for b in blobs)

    rows = {}
    rows["decode limit (numcodecs zstd, 1 core)"] = bench_decode(blobs, codec, shape)
    rows["MONAI NIfTI pipeline (1 process, 1 thread)"] = bench_monai(nifti, shape)
    epoch_rates = {}
    for fmt in ("wds", "zarr"):
        for w in (1, 2):
            name = f"tte_scale loader, {fmt}, {w} worker{'s' if w > 1 else ''}"
            rows[name], epoch_rates[name] = bench_ours(str(tmp / "shards"), fmt, w, args.batch)
    monai = rows["MONAI NIfTI pipeline (1 process, 1 thread)"]
    limit = rows["decode limit (numcodecs zstd, 1 core)"]
    best1 = max(rows["tte_scale loader, wds, 1 worker"], rows["tte_scale loader, zarr, 1 worker"])
    summary = {"speedup_vs_monai_per_core": best1 / monai, "fraction_of_decode_limit": best1 / limit,
               "wds_1w_vs_monai": rows["tte_scale loader, wds, 1 worker"] / monai,
               "wds_1w_of_decode_limit": rows["tte_scale loader, wds, 1 worker"] / limit}
    result = {"machine": args.machine, "cpu_count": os.cpu_count(), "python": platform.python_version(),
              "n_volumes": args.n, "n_samples": n_samples, "shape": list(shape), "volume_mb": raw / 2**20, "compression_ratio": ratio,
              "batch_size": args.batch, "volumes_per_s": rows, "epoch_volumes_per_s_incl_startup": epoch_rates,
              "summary": summary, "note": "page-cache-hot files; loader rows are steady state after the first batches"}
    lines = [f"# Loader throughput ({args.machine})", "",
             f"{args.n} volumes {list(shape)} int16 ({raw / 2**20:.1f} MiB raw, zstd-3 ratio {ratio:.2f}), "
             f"batch {args.batch}; loader epochs of {n_samples} samples (steady state; whole epoch incl. worker start-up "
             "in brackets).", "", "| pipeline | volumes/s | MiB/s (raw) |", "|---|---:|---:|"]
    lines += [f"| {k} | {v:.1f}" + (f" ({epoch_rates[k]:.1f})" if k in epoch_rates else "")
              + f" | {v * raw / 2**20:.0f} |" for k, v in rows.items()]
    lines += ["", f"Best 1-worker loader: {summary['speedup_vs_monai_per_core']:.1f}x the MONAI baseline per core, "
              f"{100 * summary['fraction_of_decode_limit']:.0f}% of the decode limit."]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "loader.json").write_text(json.dumps(result, indent=2))
    (out / "loader.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
