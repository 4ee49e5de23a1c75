"""Benchmark of `tte-scale shard`: codecs on synthetic CT, and volumes/s of the sharding job.

1. Codecs: compression ratio, encode MB/s and decode GB/s of numcodecs candidates on canonical
   volumes (default config, 160 x 224 x 224 int16) made from the synthetic cohort.
2. Job: volumes/s of the plain single-process loop (--workers 0: same steps, no Ray) and of
   Ray with 1 and 2 workers, on the synthetic cohort (demo and default canonical shapes).
   Ray figures include Ray's start-up and shutdown (measured apart too).

Usage: .venv/bin/python benchmarks/bench_shard.py [--subjects 16] [--machine "dev CPU, 2 cores"]
Writes benchmarks/results/shard.json and shard.md and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CODECS = {
    "blosc-zstd3-shuffle": {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 1, "blocksize": 0},
    "blosc-zstd3-bitshuffle": {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 2, "blocksize": 0},
    "blosc-zstd5-shuffle": {"id": "blosc", "cname": "zstd", "clevel": 5, "shuffle": 1, "blocksize": 0},
    "blosc-lz4-shuffle": {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1, "blocksize": 0},
    "blosc-lz4-bitshuffle": {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 2, "blocksize": 0},
    "zstd3": {"id": "zstd", "level": 3},
    "gzip5": {"id": "gzip", "level": 5},
}


def make_cohort(tmp: Path, subjects: int) -> tuple[Path, Path]:
    cli = [sys.executable, "-m", "tte_scale.cli"]
    subprocess.run([*cli, "synth", "--out", str(tmp / "cohort"), "--subjects", str(subjects), "--no-progress"],
                   check=True, cwd=REPO, capture_output=True)
    subprocess.run([*cli, "labels", "--meds", str(tmp / "cohort"), "--scans", str(tmp / "cohort" / "scans.parquet"),
                    "--out", str(tmp / "labels"), "--tasks", "64", "--no-progress"], check=True, cwd=REPO, capture_output=True)
    return tmp / "cohort" / "scans.parquet", tmp / "labels"


def bench_codecs(scans: Path, n_volumes: int = 4) -> list[dict]:
    import pyarrow.parquet as pq

    from sharding.codec import get_codec
    from tte_scale.imaging import ImagingConfig, canonicalize, read_scan

    cfg = ImagingConfig()
    paths = pq.read_table(scans).column("image_path").to_pylist()[:n_volumes]
    base = scans.parent
    vols = [canonicalize(read_scan(p if Path(p).is_absolute() else base / p, "CT", cfg), cfg)[0] for p in paths]
    rows = []
    for name, conf in CODECS.items():
        codec = get_codec(conf)
        raw = sum(v.nbytes for v in vols)
        enc_t, dec_t, size = [], [], 0
        for _ in range(3):
            t = time.perf_counter()
            blobs = [bytes(codec.encode(v)) for v in vols]
            enc_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            for b in blobs:
                codec.decode(b)
            dec_t.append(time.perf_counter() - t)
            size = sum(len(b) for b in blobs)
        rows.append({"codec": name, "config": conf, "ratio": round(raw / size, 3),
                     "encode_MBps": round(raw / min(enc_t) / 1e6, 1), "decode_GBps": round(raw / min(dec_t) / 1e9, 3)})
    return rows


def pick_codec(rows: list[dict], min_ratio_share: float = 0.85) -> str:
    """Default codec rule: the fastest decoder among codecs within 85% of the best ratio
    (the loader decodes every volume every epoch; shards are written once)."""
    best = max(r["ratio"] for r in rows)
    return max((r for r in rows if r["ratio"] >= min_ratio_share * best), key=lambda r: r["decode_GBps"])["codec"]


def bench_job(scans: Path, labels: Path, tmp: Path, config: str) -> list[dict]:
    from sharding.config import ShardConfig
    from sharding.job import build
    from tte_scale.config import load_config

    cfg = load_config(ShardConfig, REPO / "configs" / "shard" / f"{config}.yaml")
    rows = []
    for workers in (0, 1, 2):
        out = tmp / f"out-{config}-{workers}"
        shutil.rmtree(out, ignore_errors=True)
        s = build(scans, labels, out, cfg, workers=workers, progress=False)
        rows.append({"config": config, "runner": "plain loop (no Ray)" if workers == 0 else f"Ray, {workers} worker(s)",
                     "volumes": s["processed"], "seconds": s["seconds"], "volumes_per_s": s["volumes_per_s"],
                     "compression_ratio": s["compression_ratio"]})
    return rows


def ray_overhead() -> float:
    import ray

    t = time.perf_counter()
    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
    ray.get(ray.remote(lambda: 1).remote())
    ray.shutdown()
    return round(time.perf_counter() - t, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=16, help="subjects of the synthetic cohort")
    parser.add_argument("--machine", default="dev CPU, 2 cores", help="machine name for the results")
    args = parser.parse_args()
    import os

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        scans, labels = make_cohort(tmp, args.subjects)
        codecs = bench_codecs(scans)
        jobs = bench_job(scans, labels, tmp, "demo") + bench_job(scans, labels, tmp, "default")
    overhead = ray_overhead()
    pick = pick_codec(codecs)
    result = {"machine": args.machine, "subjects": args.subjects, "codecs": codecs, "pick": pick, "jobs": jobs,
              "ray_start_and_shutdown_s": overhead}
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "shard.json").write_text(json.dumps(result, indent=1))
    lines = [f"# bench_shard ({args.machine})", "",
             "Codecs on canonical synthetic CT volumes (160 x 224 x 224 int16):", "",
             "| codec | ratio | encode MB/s | decode GB/s |", "|---|---|---|---|"]
    lines += [f"| {r['codec']} | {r['ratio']} | {r['encode_MBps']} | {r['decode_GBps']} |" for r in codecs]
    lines += ["", f"Pick (fastest decode within 85% of the best ratio): **{pick}** -> sharding.config.DEFAULT_CODEC."]
    lines += ["", f"Sharding job on the synthetic cohort ({args.subjects} subjects; Ray start+shutdown alone: "
              f"{overhead} s, included below):", "",
              "| config | runner | volumes | seconds | volumes/s | compression |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['config']} | {r['runner']} | {r['volumes']} | {r['seconds']} | {r['volumes_per_s']} | "
              f"{r['compression_ratio']} |" for r in jobs]
    (out / "shard.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
