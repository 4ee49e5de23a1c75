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
    parser.add_argument(
        "--input",
        choices=["synth", "scanner512"],
        default="synth",
        help="synth: codecs, Ray start-up and the job on a compact synthetic cohort (shard.json); scanner512: "
        "per-scan phases before/after, MONAI on the same files and 1 vs 2 Ray workers on 512x512 input (shard_512.json)",
    )
    parser.add_argument(
        "--cohort", default=None, help="scanner512: cohort folder (default runs/bench_cache/scanner512)"
    )
    parser.add_argument("--scans", type=int, default=6, help="scanner512: scans in the per-scan phase table")
    parser.add_argument("--rounds", type=int, default=1, help="scanner512: alternated rounds of the 0/1/2-worker jobs")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if args.input == "scanner512":
        return run_scanner512(args)
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


# -- the user's geometry: per-scan phases, MONAI on the same files, 1 and 2 Ray workers ----------

PHASES = ("read", "check", "canonicalize", "encode", "checksums")


def scan_phases(path, modality: str, cfg, codec_conf: dict, before: bool) -> dict[str, float]:
    """CPU seconds of each step of sharding.samples.process_scan on one scan; ``before``: the
    read (NIfTI) and canonicalize of commit 06935fe (tests/support/reference_canonical.py)."""
    import google_crc32c

    from tte_scale.imaging import canonicalize, check_scan, read_scan
    from tte_scale.sharding.codec import encode

    ref = _reference()
    t: dict[str, float] = {}
    c = time.process_time()
    if before and str(path).endswith(".nii.gz"):
        raw = ref.reference_read_nifti(path)
    else:
        raw = read_scan(path, modality, cfg)
    t["read"] = time.process_time() - c
    c = time.process_time()
    raw, _ = check_scan(raw, cfg)
    t["check"] = time.process_time() - c
    c = time.process_time()
    vol = ref.reference_canonicalize(raw, cfg) if before else canonicalize(raw, cfg)[0]
    t["canonicalize"] = time.process_time() - c
    c = time.process_time()
    data = encode(vol, codec_conf)
    t["encode"] = time.process_time() - c
    c = time.process_time()
    google_crc32c.value(data)
    hashlib.sha256(vol.tobytes()).hexdigest()
    t["checksums"] = time.process_time() - c
    t["total"] = sum(t[p] for p in PHASES)
    return t


def _reference():
    from tte_scale.benchmarks.common import REPO

    if REPO is None:
        raise SystemExit(
            "--input scanner512 compares with tests/support/reference_canonical.py: run it from a checkout"
        )
    if str(REPO / "tests") not in sys.path:
        sys.path.insert(0, str(REPO / "tests"))
    import support.reference_canonical

    return support.reference_canonical


def bench_scan_phases(folder: Path, n: int) -> dict:
    """Per-scan CPU seconds by phase, before/after, NIfTI and DICOM, and MONAI's chain on the same
    NIfTI files: interleaved per scan, so load from other jobs hits every row alike."""
    import numpy as np
    import pyarrow.parquet as pq
    import torch

    from tte_scale.benchmarks import scanner512
    from tte_scale.benchmarks.bench_loader import monai_transform
    from tte_scale.imaging import ImagingConfig, resolve_image_path
    from tte_scale.sharding.config import DEFAULT_CODEC

    torch.set_num_threads(1)  # as in a Ray scan task (sharding.executor.task_threads)
    cfg = ImagingConfig()
    niftis = scanner512.nifti_paths(folder)[:n]
    scans = folder / "scans.parquet"
    dicoms = [resolve_image_path(p, scans) for p in pq.read_table(scans).column("image_path").to_pylist()[:n]]
    monai = monai_transform(cfg.shape, scale=True, spacing_DHW=cfg.spacing_mm)
    rows = {
        "NIfTI, before": lambda i: scan_phases(niftis[i], "CT", cfg, DEFAULT_CODEC, True),
        "NIfTI, after": lambda i: scan_phases(niftis[i], "CT", cfg, DEFAULT_CODEC, False),
        "DICOM, before": lambda i: scan_phases(dicoms[i], "CT", cfg, DEFAULT_CODEC, True),
        "DICOM, after": lambda i: scan_phases(dicoms[i], "CT", cfg, DEFAULT_CODEC, False),
    }

    def run_monai(i):
        c = time.process_time()
        monai({"img": str(niftis[i])})
        return {"total": time.process_time() - c}

    rows["MONAI chain on the NIfTI files"] = run_monai
    for f in rows.values():  # warm-up: imports, first-call set-up
        f(0)
    acc: dict[str, dict[str, list[float]]] = {k: {} for k in rows}
    for i in range(len(niftis)):
        for name, f in rows.items():
            for phase, sec in f(i).items():
                acc[name].setdefault(phase, []).append(sec)
    out = {name: {p: float(np.mean(v)) for p, v in ph.items()} for name, ph in acc.items()}
    shapes = [list(int(s) for s in _nifti_shape(p)) for p in niftis]
    return {"scans": len(niftis), "input_shapes": shapes, "cpu_s_per_scan": out}


def _nifti_shape(path):
    import nibabel as nib

    return nib.load(str(path)).shape


class TreeCPU:
    """CPU seconds of this process and every descendant (Ray's GCS, raylet, workers), sampled
    every ``interval`` s so that processes that exit (Ray's, at shutdown) are still counted."""

    def __init__(self, interval: float = 0.25):
        import threading

        import psutil

        self._me = psutil.Process()
        self._seen: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _sample(self):
        for p in self._me.children(recursive=True):
            try:
                t = p.cpu_times()
                self._seen[(p.pid, p.create_time())] = t.user + t.system
            except Exception:  # exited meanwhile
                pass

    def _run(self, interval):
        while not self._stop.wait(interval):
            self._sample()

    def __enter__(self):
        self._c0 = time.process_time()
        self._sample()
        self._base = dict(self._seen)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()
        self.children_s = sum(v - self._base.get(k, 0.0) for k, v in self._seen.items())
        self.driver_s = time.process_time() - self._c0
        self.total_s = self.children_s + self.driver_s


def probe_threads(workers: int) -> list[dict]:
    """What the scan tasks' libraries use, asked from inside ``workers`` Ray workers."""
    from tte_scale.sharding.executor import RayTasksExecutor, task_threads

    ex = RayTasksExecutor(workers)
    try:
        fn = ex.ray.remote(_probe).options(num_cpus=1)
        return ex.ray.get([fn.remote(task_threads) for _ in range(workers)])
    finally:
        ex.shutdown()


def _probe(task_threads):
    info = task_threads(1)
    info["pid"] = os.getpid()
    return info


def bench_workers(folder: Path, tmp: Path, rounds: int) -> list[dict]:
    """The sharding job (default config, both formats) on the cohort's DICOM scans with 0 (plain
    loop), 1 and 2 Ray workers, alternated ``rounds`` times; wall and CPU-seconds of the tree."""
    from tte_scale.config import load_config
    from tte_scale.sharding.config import ShardConfig
    from tte_scale.sharding.job import build

    scans = folder / "scans.parquet"
    labels = tmp / "labels"
    if not labels.exists():
        subprocess.run(
            [sys.executable, "-m", "tte_scale.cli", "labels", "--meds", str(folder), "--scans", str(scans),
             "--out", str(labels), "--tasks", "64", "--no-progress"],
            check=True,
            capture_output=True,
        )  # fmt: skip
    cfg = load_config(ShardConfig, packaged_config("shard", "default.yaml"), [])
    runs = []
    for r in range(rounds):
        for workers in (0, 1, 2):
            out = tmp / f"out-{workers}-{r}"
            with TreeCPU() as cpu:
                s = build(scans, labels, out, cfg, workers=workers, progress=False)
            ray_s = s["executor_start_s"] + s["executor_stop_s"] if workers else 0.0
            runs.append(
                {
                    "workers": workers,
                    "round": r,
                    "volumes": s["processed"],
                    "seconds": s["seconds"],
                    "ray_start_stop_s": round(ray_s, 2),
                    "steady_seconds": round(s["seconds"] - ray_s, 2),
                    "steady_volumes_per_s": round(s["processed"] / (s["seconds"] - ray_s), 3),
                    "cpu_s": round(cpu.total_s, 2),
                    "cpu_s_per_volume": round(cpu.total_s / s["processed"], 3),
                    "tree_sha256": tree_digest(out),
                }
            )
            shutil.rmtree(out, ignore_errors=True)
            print(runs[-1], flush=True)
    return runs


def run_scanner512(args) -> int:
    import statistics as st

    from tte_scale.benchmarks import scanner512
    from tte_scale.benchmarks.common import machine_info

    folder = scanner512.cohort(Path(args.cohort) if args.cohort else scanner512.DEFAULT_CACHE)
    meta = machine_info()
    phases = bench_scan_phases(folder, args.scans)
    with tempfile.TemporaryDirectory() as d:
        threads = probe_threads(2)
        runs = bench_workers(folder, Path(d), args.rounds)
    by_w = {w: [r for r in runs if r["workers"] == w] for w in (0, 1, 2)}
    agg = {
        w: {
            "steady_volumes_per_s": st.median(r["steady_volumes_per_s"] for r in rs),
            "cpu_s_per_volume": st.median(r["cpu_s_per_volume"] for r in rs),
        }
        for w, rs in by_w.items()
    }
    cps = phases["cpu_s_per_scan"]
    monai = cps["MONAI chain on the NIfTI files"]["total"]
    summary = {
        "speedup_1_to_2_workers_wall": agg[2]["steady_volumes_per_s"] / agg[1]["steady_volumes_per_s"],
        "cpu_s_per_volume_1_worker": agg[1]["cpu_s_per_volume"],
        "cpu_s_per_volume_2_workers": agg[2]["cpu_s_per_volume"],
        "nifti_after_over_monai_cpu": cps["NIfTI, after"]["total"] / monai,
        "nifti_before_over_monai_cpu": cps["NIfTI, before"]["total"] / monai,
        "dicom_after_over_monai_cpu": cps["DICOM, after"]["total"] / monai,
        "nifti_before_over_after_cpu": cps["NIfTI, before"]["total"] / cps["NIfTI, after"]["total"],
        "dicom_before_over_after_cpu": cps["DICOM, before"]["total"] / cps["DICOM, after"]["total"],
        "identical_output": len({r["tree_sha256"] for r in runs}) == 1,
        "targets": {"speedup_1_to_2_workers": 1.8, "per_volume_over_monai": 0.5},
    }
    result = {
        "meta": meta,
        "machine": args.machine,
        "input": scanner512.GEOMETRY,
        "cohort": str(folder),
        "phases": phases,
        "ray_worker_threads": threads,
        "jobs": runs,
        "jobs_median": {str(w): v for w, v in agg.items()},
        "summary": summary,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shard_512.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    text = render_512(result)
    (args.out / "shard_512.md").write_text(text)
    print(text)
    return 0 if summary["identical_output"] else 1


def _fig(key: str) -> str:
    """Source marker of a summary figure of shard_512.json (tests/support/doc_figures.py)."""
    return f"<!--fig shard_512.json:summary.{key}-->"


def render_512(r: dict) -> str:
    cps = r["phases"]["cpu_s_per_scan"]
    s = r["summary"]
    head = "| per-scan path | " + " | ".join(PHASES) + " | total CPU-s | / MONAI |"
    lines = [
        f"# bench_shard at the user's geometry ({r['machine']})",
        "",
        f"Input: {r['phases']['scans']} synthetic chest CTs of {r['input']} (`synth --profile realistic` pinned to "
        f"that geometry; NIfTI and the same scans as DICOM series), canonical 160 x 224 x 224 at 3 x 1.5 x 1.5 mm, "
        f"default shard config. Load average at start: {r['meta']['load_avg_1m']} on {r['meta']['cpu_count']} cores, "
        "shared with other jobs: CPU-seconds are the figures to compare, wall clock only within a table.",
        "",
        "## Where a scan's time goes (CPU-s per scan, one process, one torch thread)",
        "",
        "`before` is the read (NIfTI) and canonicalize of commit 06935fe (tests/support/reference_canonical.py), "
        "`after` this branch; rows interleaved per scan in one run. MONAI: LoadImaged, EnsureChannelFirstd, "
        "Orientationd, Spacingd to 3 x 1.5 x 1.5 mm, ScaleIntensityRanged, ResizeWithPadOrCropd on the NIfTI files.",
        "",
        head,
        "|---" * (len(PHASES) + 3) + "|",
    ]
    monai = cps["MONAI chain on the NIfTI files"]["total"]
    for name, ph in cps.items():
        cells = [f"{ph[p]:.3f}" if p in ph else "" for p in PHASES]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ph['total']:.3f} | {ph['total'] / monai:.2f} |")
    lines += [
        "",
        f"- NIfTI per-scan path: {s['nifti_before_over_monai_cpu']:.2f}x{_fig('nifti_before_over_monai_cpu')} "
        f"MONAI's CPU before, {s['nifti_after_over_monai_cpu']:.2f}x{_fig('nifti_after_over_monai_cpu')} after "
        f"({s['nifti_before_over_after_cpu']:.2f}x{_fig('nifti_before_over_after_cpu')} less CPU); DICOM after: "
        f"{s['dicom_after_over_monai_cpu']:.2f}x{_fig('dicom_after_over_monai_cpu')}; target 0.5x.",
        "",
        "## Ray workers",
        "",
        "Threads inside each Ray worker (from a task, `sharding.executor.task_threads`): "
        + "; ".join(
            f"worker {i}: torch {t['torch_threads']}, Blosc {t['blosc_threads_in_tasks']}, "
            f"OMP_NUM_THREADS={t['OMP_NUM_THREADS']}, NUMEXPR_MAX_THREADS={t['NUMEXPR_MAX_THREADS']}"
            for i, t in enumerate(r["ray_worker_threads"])
        )
        + ".",
        "",
        "The sharding job (default config, both formats) on the DICOM series, plain loop and Ray tasks with 1 and "
        "2 workers alternated; `steady` leaves out Ray's start-up and shutdown; CPU-s counts the driver and every "
        "Ray process (GCS, raylet, workers).",
        "",
        "| workers | round | volumes | seconds | Ray s | steady vol/s | CPU-s | CPU-s per volume |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {j['workers']} | {j['round']} | {j['volumes']} | {j['seconds']} | {j['ray_start_stop_s']} | "
        f"{j['steady_volumes_per_s']} | {j['cpu_s']} | {j['cpu_s_per_volume']} |"
        for j in r["jobs"]
    ]
    lines += [
        "",
        f"- 1 -> 2 workers (medians, steady): {s['speedup_1_to_2_workers_wall']:.2f}x"
        f"{_fig('speedup_1_to_2_workers_wall')} volumes/s; target 1.8x. CPU-s per volume "
        f"{s['cpu_s_per_volume_1_worker']:.2f}{_fig('cpu_s_per_volume_1_worker')} (1 worker) vs "
        f"{s['cpu_s_per_volume_2_workers']:.2f}{_fig('cpu_s_per_volume_2_workers')} (2 workers).",
        f"- Output byte-identical across runners: {'yes' if s['identical_output'] else 'NO'}.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
