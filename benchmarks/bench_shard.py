"""Benchmark of `tte-scale shard`: codecs on synthetic CT, Ray start-up, and volumes/s of the job.

1. Codecs: compression ratio, encode MB/s and decode GB/s of numcodecs candidates on canonical
   volumes (default config, 160 x 224 x 224 int16) made from the synthetic cohort.
2. Ray start-up: ray.init / first tasks / shutdown with the job's options (sharding.executor.
   ray_init_kwargs) against the options used before (dashboard off, worker logs to the driver),
   alternated so that load changes on a shared machine hit both alike.
3. Job: the plain single-process loop (--workers 0: same steps, no Ray), Ray tasks and Ray Data
   with 1 and 2 workers, on the synthetic cohort (demo and default canonical shapes). `seconds`
   include Ray's start-up and shutdown; `steady vol/s` leaves them out. Every runner's output
   tree is hashed: all must be byte-identical.

Usage: .venv/bin/python benchmarks/bench_shard.py [--subjects 16] [--machine "dev CPU, 2 cores"]
Writes OUT/shard.json and OUT/shard.md (OUT = benchmarks/results) and prints the tables.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tte_scale.benchmarks.common import RESULTS
from tte_scale.config import packaged_config

CODECS = {
    "blosc-zstd3-shuffle": {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 1, "blocksize": 0},
    "blosc-zstd3-bitshuffle": {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 2, "blocksize": 0},
    "blosc-zstd5-shuffle": {"id": "blosc", "cname": "zstd", "clevel": 5, "shuffle": 1, "blocksize": 0},
    "blosc-lz4-shuffle": {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1, "blocksize": 0},
    "blosc-lz4-bitshuffle": {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 2, "blocksize": 0},
    "zstd3": {"id": "zstd", "level": 3},
    "gzip5": {"id": "gzip", "level": 5},
}
# (label, workers, executor): workers 0 is the in-process loop (executor unused)
RUNNERS = [
    ("plain loop (no Ray)", 0, "tasks"),
    ("Ray tasks, 1 worker", 1, "tasks"),
    ("Ray tasks, 2 workers", 2, "tasks"),
    ("Ray Data, 1 worker", 1, "data"),
    ("Ray Data, 2 workers", 2, "data"),
]


def make_cohort(tmp: Path, subjects: int) -> tuple[Path, Path]:
    cli = [sys.executable, "-m", "tte_scale.cli"]
    subprocess.run(
        [*cli, "synth", "--out", str(tmp / "cohort"), "--subjects", str(subjects), "--no-progress"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *cli,
            "labels",
            "--meds",
            str(tmp / "cohort"),
            "--scans",
            str(tmp / "cohort" / "scans.parquet"),
            "--out",
            str(tmp / "labels"),
            "--tasks",
            "64",
            "--no-progress",
        ],
        check=True,
        capture_output=True,
    )
    return tmp / "cohort" / "scans.parquet", tmp / "labels"


def bench_codecs(scans: Path, n_volumes: int = 4) -> list[dict]:
    import pyarrow.parquet as pq

    from tte_scale.imaging import ImagingConfig, canonicalize, read_scan, resolve_image_path
    from tte_scale.sharding.codec import get_codec

    cfg = ImagingConfig()
    paths = pq.read_table(scans).column("image_path").to_pylist()[:n_volumes]
    vols = [canonicalize(read_scan(resolve_image_path(p, scans), "CT", cfg), cfg)[0] for p in paths]
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
        rows.append(
            {
                "codec": name,
                "config": conf,
                "ratio": round(raw / size, 3),
                "encode_MBps": round(raw / min(enc_t) / 1e6, 1),
                "decode_GBps": round(raw / min(dec_t) / 1e9, 3),
            }
        )
    return rows


def pick_codec(rows: list[dict], min_ratio_share: float = 0.85) -> str:
    """Default codec rule: the fastest decoder among codecs within 85% of the best ratio
    (the loader decodes every volume every epoch; shards are written once)."""
    best = max(r["ratio"] for r in rows)
    return max((r for r in rows if r["ratio"] >= min_ratio_share * best), key=lambda r: r["decode_GBps"])["codec"]


def _ray_start_once(variant: str) -> dict:
    """One start-up, in a fresh process (Ray keeps global state): init, 2 trivial tasks, shutdown."""
    code = f"""
import json, os, time
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
import ray
from tte_scale.sharding.executor import ray_init_kwargs
kw = ray_init_kwargs(2, None) if {variant!r} == "job" else dict(
    num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=True)
t = time.perf_counter(); ray.init(**kw); init = time.perf_counter() - t
t = time.perf_counter(); ray.get([ray.remote(lambda: 1).remote() for _ in range(2)]); first = time.perf_counter() - t
t = time.perf_counter(); ray.shutdown(); stop = time.perf_counter() - t
print(json.dumps({{"init_s": init, "first_tasks_s": first, "shutdown_s": stop}}))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_ray_start(rounds: int = 3) -> list[dict]:
    runs: dict[str, list[dict]] = {"before (log_to_driver)": [], "job (ray_init_kwargs)": []}
    for _ in range(rounds):
        runs["before (log_to_driver)"].append(_ray_start_once("before"))
        runs["job (ray_init_kwargs)"].append(_ray_start_once("job"))
    out = []
    for name, rs in runs.items():
        row = {"options": name, "rounds": rounds}
        for k in ("init_s", "first_tasks_s", "shutdown_s"):
            row[k] = round(statistics.median(r[k] for r in rs), 2)
        row["total_s"] = round(statistics.median(sum(r.values()) for r in rs), 2)
        out.append(row)
    return out


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.relative_to(root).parts[0] != "_state":
            h.update(str(p.relative_to(root)).encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def bench_job(scans: Path, labels: Path, tmp: Path, config: str) -> list[dict]:
    from tte_scale.config import load_config
    from tte_scale.sharding.config import ShardConfig
    from tte_scale.sharding.job import build

    rows = []
    for label, workers, executor in RUNNERS:
        cfg = load_config(ShardConfig, packaged_config("shard", f"{config}.yaml"), [f"executor={executor}"])
        out = tmp / f"out-{config}-{workers}-{executor}"
        shutil.rmtree(out, ignore_errors=True)
        s = build(scans, labels, out, cfg, workers=workers, progress=False)
        ray_s = s["executor_start_s"] + s["executor_stop_s"] if workers else 0.0
        rows.append(
            {
                "config": config,
                "runner": label,
                "workers": workers,
                "volumes": s["processed"],
                "seconds": s["seconds"],
                "volumes_per_s": s["volumes_per_s"],
                "ray_start_stop_s": round(ray_s, 2),
                "steady_volumes_per_s": round(s["processed"] / (s["seconds"] - ray_s), 3),
                "compression_ratio": s["compression_ratio"],
                "tree_sha256": tree_digest(out),
            }
        )
        shutil.rmtree(out, ignore_errors=True)
    same = len({r["tree_sha256"] for r in rows}) == 1
    for r in rows:
        r["identical_output"] = same
    return rows


def render(result: dict) -> str:
    r = result
    lines = [
        f"# bench_shard ({r['machine']})",
        "",
        "Timings on a shared machine (other jobs running): compare rows of one table only.",
        "",
        "## Codecs",
        "",
        "Canonical synthetic CT volumes (160 x 224 x 224 int16):",
        "",
        "| codec | ratio | encode MB/s | decode GB/s |",
        "|---|---|---|---|",
    ]
    lines += [f"| {c['codec']} | {c['ratio']} | {c['encode_MBps']} | {c['decode_GBps']} |" for c in r["codecs"]]
    from tte_scale.sharding.config import DEFAULT_CODEC

    current = next((c["codec"] for c in r["codecs"] if c["config"] == DEFAULT_CODEC), str(DEFAULT_CODEC))
    lines += [
        "",
        f"Pick of this run (fastest decode within 85% of the best ratio): **{r['pick']}**; "
        f"sharding.config.DEFAULT_CODEC is **{current}**"
        + ("." if r["pick"] == current else " (not changed on the strength of one run on a loaded machine)."),
    ]
    lines += [
        "",
        "## Ray start-up",
        "",
        "Median of alternated runs, each in a fresh process (2 CPUs, 2 trivial tasks):",
        "",
        "| ray.init options | init s | first tasks s | shutdown s | total s |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {x['options']} | {x['init_s']} | {x['first_tasks_s']} | {x['shutdown_s']} | {x['total_s']} |"
        for x in r["ray_start"]
    ]
    lines += [
        "",
        "## Sharding job",
        "",
        f"Synthetic cohort of {r['subjects']} subjects. `seconds` include Ray start-up and shutdown "
        "(`Ray s`); `steady vol/s` leaves them out.",
        "",
        "| config | runner | workers | volumes | seconds | Ray s | vol/s | steady vol/s | compression | same bytes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {j['config']} | {j['runner']} | {j['workers']} | {j['volumes']} | {j['seconds']} | "
        f"{j['ray_start_stop_s']} | {j['volumes_per_s']} | {j['steady_volumes_per_s']} | {j['compression_ratio']} | "
        f"{'yes' if j['identical_output'] else 'NO'} |"
        for j in r["jobs"]
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=16, help="subjects of the synthetic cohort")
    parser.add_argument("--machine", default="dev CPU, 2 cores", help="machine name for the results")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--configs", default="demo,default", help="shard configs (configs/shard/NAME.yaml) to time")
    parser.add_argument("--ray-start-rounds", type=int, default=3, help="alternated start-ups per ray.init variant")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        scans, labels = make_cohort(tmp, args.subjects)
        codecs = bench_codecs(scans)
        ray_start = bench_ray_start(args.ray_start_rounds)
        jobs = [row for config in args.configs.split(",") for row in bench_job(scans, labels, tmp, config)]
    result = {
        "machine": args.machine,
        "subjects": args.subjects,
        "codecs": codecs,
        "pick": pick_codec(codecs),
        "ray_start": ray_start,
        "jobs": jobs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shard.json").write_text(json.dumps(result, indent=1))
    text = render(result)
    (args.out / "shard.md").write_text(text)
    print(text)
    return 0 if all(j["identical_output"] for j in jobs) else 1


if __name__ == "__main__":
    sys.exit(main())
