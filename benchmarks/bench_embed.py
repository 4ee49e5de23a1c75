"""`tte-scale embed` throughput: scans/s per rank, from WebDataset and Zarr, on 1 and 2 ranks.

    .venv/bin/python benchmarks/bench_embed.py [--machine "dev CPU, 2 cores"] [--cases demo full]

Cases (volumes written with tests/support/shards.py, encoders randomly initialized and exported):
* ``demo``: 32x64x64 volumes, the demo encoder (configs/pretrain/demo.yaml: vit3d_tiny, 96 wide,
  4 blocks, conv stem, 8x16x16 patches);
* ``full``: 160x224x224 volumes (the INSPECT canonical shape), ViT-B with 2 blocks, 16^3 patches
  (1,960 tokens), as in the trimmed rehearsal of issue 17.

Each case runs the real command (``tte_scale.embed.run_embed``; 2 ranks as two processes with
RANK/WORLD_SIZE set, gloo), one CPU thread per rank, and reads the per-rank figures from
embed.json: ``embed_s`` (reads + forward + part writes of the rank) and the scans it embedded.
``read`` is the verified read alone (the loader's reader, no forward) and ``forward`` the encoder
alone on one batch, both in this process, so the table says where a scan's time goes.
Writes benchmarks/results/embed.json and embed.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tte_scale.benchmarks.common import REPO, add_output_args, machine_info, machine_name, md_table, write_results

CASES = {
    "demo": {
        "shape": (32, 64, 64),
        "n": 48,
        "batch": 8,
        "model": "vit3d_tiny",
        "overrides": {
            "img_size": (32, 64, 64),
            "patch_size": (8, 16, 16),
            "embed_dim": 96,
            "depth": 4,
            "num_heads": 3,
            "stem": "conv",
            "pool": "mean",
        },
    },
    "full": {
        "shape": (160, 224, 224),
        "n": 6,
        "batch": 1,
        "model": "vit3d_base",
        "overrides": {"img_size": (160, 224, 224), "patch_size": (16, 16, 16), "depth": 2, "pool": "mean"},
    },
}


def _writer():
    if REPO is None:
        raise SystemExit("bench_embed writes its shards with tests/support/shards.py: run it from a checkout")
    if str(REPO / "tests") not in sys.path:
        sys.path.insert(0, str(REPO / "tests"))
    import support.shards

    return support.shards


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _embed(encoder: Path, shards: Path, out: Path, fmt: str, ranks: int, batch: int) -> dict:
    """Run `tte-scale embed` on ``ranks`` processes; embed.json's per-rank figures + wall time."""
    argv = ["embed", "--encoder", str(encoder), "--shards", str(shards), "--out", str(out), "--format", fmt]
    argv += ["--batch-size", str(batch), "--threads", "1", "--part-size", "4"]
    port = _port()
    t0 = time.perf_counter()
    procs = []
    for r in range(ranks):
        env = {**os.environ, "RANK": str(r), "WORLD_SIZE": str(ranks), "LOCAL_RANK": str(r)}
        env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tte_scale.cli", *argv],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    errs = [p.communicate()[1] for p in procs]
    wall = time.perf_counter() - t0
    if any(p.returncode for p in procs):
        raise SystemExit(f"embed failed: {errs[0][-2000:]}")
    record = json.loads((out / "embed.json").read_text())
    return {"wall_s": wall, "ranks": record["ranks"]}


def _read_and_forward(encoder_dir: Path, shards: Path, fmt: str, batch: int, repeat: int) -> dict:
    """Seconds per scan of the verified read alone and of the forward alone (1 thread, this process)."""
    import torch

    from tte_scale.data import hu_to_float
    from tte_scale.embed.scans import split_scans, verified_batches
    from tte_scale.models import load_pretrained

    scans = split_scans(str(shards), "train", fmt)
    best_read = float("inf")
    vol = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        for vol_B1DHW, _got in verified_batches(scans, range(len(scans)), batch, []):
            vol = vol_B1DHW.copy()
        best_read = min(best_read, (time.perf_counter() - t0) / len(scans))
    enc = load_pretrained(encoder_dir).eval()
    x = hu_to_float(torch.from_numpy(vol))
    best_fwd = float("inf")
    with torch.no_grad():
        enc(x)  # warm-up
        for _ in range(repeat):
            t0 = time.perf_counter()
            enc(x)
            best_fwd = min(best_fwd, (time.perf_counter() - t0) / len(x))
    return {"read_s_per_scan": best_read, "forward_s_per_scan": best_fwd}


def run_case(name: str, work: Path, repeat: int) -> list[dict]:
    import torch

    from tte_scale.models import create_model, save_pretrained

    c = CASES[name]
    shards, encoder = work / name / "shards", work / name / "encoder"
    _writer().write_shards(shards, n=c["n"], shape=c["shape"], splits=["train"] * c["n"], samples_per_shard=4, seed=0)
    torch.manual_seed(0)
    save_pretrained(create_model(c["model"], **c["overrides"]), encoder, hu_window=(-1000.0, 1000.0))
    rows = []
    for fmt in ("wds", "zarr"):
        split = _read_and_forward(encoder, shards, fmt, c["batch"], repeat)
        for ranks in (1, 2):
            got = _embed(encoder, shards, work / name / f"out_{fmt}_{ranks}", fmt, ranks, c["batch"])
            per_rank = [r["scans_embedded"] / r["embed_s"] for r in got["ranks"] if r["embed_s"] > 0]
            rows.append(
                {
                    "case": name,
                    "volume": list(c["shape"]),
                    "model": f"{c['model']} ({c['overrides'].get('depth')} blocks, {c['overrides'].get('embed_dim', 768)} wide)",
                    "format": fmt,
                    "ranks": ranks,
                    "scans": c["n"],
                    "batch": c["batch"],
                    "wall_s": round(got["wall_s"], 2),
                    "scans_per_s_per_rank": [round(v, 3) for v in per_rank],
                    "scans_per_s_total_in_embed": round(c["n"] / max(r["embed_s"] for r in got["ranks"]), 3),
                    **{k: round(v, 5) for k, v in split.items()},
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--repeat", type=int, default=2, help="runs of the read-only and forward-only timings (best)")
    add_output_args(ap)
    args = ap.parse_args(argv)
    machine = args.machine or machine_name()
    work = Path(tempfile.mkdtemp(prefix="bench_embed_"))
    import torch

    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = [r for name in args.cases for r in run_case(name, work, args.repeat)]
    finally:
        torch.set_num_threads(threads_before)
        shutil.rmtree(work, ignore_errors=True)
    meta = {"machine": machine, "threads_per_rank": 1, **machine_info()}
    md = [
        f"# `tte-scale embed` throughput ({machine}, 1 thread per rank)",
        "",
        "scans/s per rank = the scans a rank embedded / its time in the embedding loop (verified reads, "
        "forward, part writes; embed.json `embed_s`); wall = the whole command incl. start-up and merge. "
        "read / forward = seconds per scan of the verified read alone and of the encoder alone (best of "
        f"{args.repeat}, 1 thread, in the benchmark process). Load at start: {meta['load_avg_1m']}.",
        "",
        *md_table(
            [
                "case",
                "volume",
                "encoder",
                "format",
                "ranks",
                "scans",
                "batch",
                "scans/s per rank",
                "wall (s)",
                "read (s/scan)",
                "forward (s/scan)",
            ],
            [
                [
                    r["case"],
                    "x".join(map(str, r["volume"])),
                    r["model"],
                    r["format"],
                    r["ranks"],
                    r["scans"],
                    r["batch"],
                    ", ".join(f"{v:.2f}" for v in r["scans_per_s_per_rank"]),
                    f"{r['wall_s']:.1f}",
                    f"{r['read_s_per_scan']:.4f}",
                    f"{r['forward_s_per_scan']:.3f}",
                ]
                for r in rows
            ],
        ),
    ]
    js, mdp = write_results(args.out, "embed", {"meta": meta, "rows": rows}, "\n".join(md))
    print("\n".join(md))
    print(f"\nwrote {js} and {mdp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
