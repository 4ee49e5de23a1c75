"""`tte-scale labels` throughput and peak memory vs. a straightforward pandas implementation.

A synthetic MEDS cohort (numpy-generated, written as MEDS parquet shards of --shard-subjects
subjects) with --events events, 2 scans per subject (so 20M events -> 10k subjects, 20k
prediction times) and a Zipf-like code distribution over --codes codes; --tasks tasks.
Each implementation runs in its own process pinned to one core (taskset, Arrow with one
thread), so the peak RSS and the events/s figures are per implementation and one core.
The pandas baseline is ``tte_scale.ehr.reference`` (merge scans x events + groupby), the same
code the tests use as the oracle; both outputs are checked to agree (vocabulary, event counts).

    .venv/bin/python benchmarks/bench_labels.py [--events 2000000] [--tasks 8192] [--machine "dev CPU, 2 cores"]
    .venv/bin/python benchmarks/bench_labels.py --events 20000000        # the full size (minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DAY_US = 86_400_000_000
BENCH_CODES = ["Visit/IP", "MEDS_DEATH", "SNOMED/59282003", "ICD10CM/I26.99", "SNOMED/70995007", "ICD10CM/I27.20"]


def generate(root: Path, events: int, codes: int, per_subject: int, shard_subjects: int, seed: int = 0) -> dict:
    """Write the cohort (MEDS data/ + metadata/ + scans.parquet); vectorized, a few s per 10M events."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    S = max(10, events // per_subject)
    n_S = rng.integers(per_subject // 2, per_subject * 3 // 2 + 1, S)
    start_S = np.datetime64("2010-01-01", "us").astype(np.int64) + rng.integers(0, 3650, S) * DAY_US
    span_S = rng.integers(365, 5 * 365, S) * DAY_US
    names = np.array(BENCH_CODES + [f"SNOMED/{100000 + i}" for i in range(codes - len(BENCH_CODES))], dtype=object)
    w = 1.0 / (np.arange(codes) + 20.0)
    cdf = np.cumsum(w / w.sum())
    dictionary = pa.array(names.tolist(), pa.string())
    (root / "data").mkdir(parents=True)
    (root / "metadata").mkdir(parents=True)
    total = 0
    for first in range(0, S, shard_subjects):
        sl = slice(first, min(S, first + shard_subjects))
        n = n_S[sl]
        subj = np.repeat(np.arange(sl.start, sl.stop) + 1, n)
        t = np.repeat(start_S[sl], n) + (rng.random(int(n.sum())) * np.repeat(span_S[sl], n)).astype(np.int64)
        c = np.minimum(np.searchsorted(cdf, rng.random(len(t))), codes - 1).astype(np.int32)
        # Static rows (null time) and deaths at the end of some records.
        k = sl.stop - sl.start
        dead = rng.random(k) < 0.15
        subj = np.concatenate([subj, np.arange(sl.start, sl.stop) + 1, (np.arange(sl.start, sl.stop) + 1)[dead]])
        t = np.concatenate([t, np.zeros(k, np.int64), (start_S[sl] + span_S[sl] + DAY_US)[dead]])
        valid = np.concatenate([np.ones(len(c), bool), np.zeros(k, bool), np.ones(dead.sum(), bool)])
        c = np.concatenate([c, np.full(k, -1, np.int32), np.full(dead.sum(), 1, np.int32)])
        code_arr = pa.DictionaryArray.from_arrays(pa.array(np.maximum(c, 0)), dictionary).cast(pa.string())
        code_arr = pa.array(np.where(c < 0, "GENDER/F", code_arr.to_numpy(zero_copy_only=False)), pa.string()) if (c < 0).any() else code_arr
        tab = pa.table({
            "subject_id": pa.array(subj.astype(np.int64)),
            "time": pa.array(t.view("datetime64[us]"), pa.timestamp("us"), mask=~valid),
            "code": code_arr,
            "numeric_value": pa.array(np.full(len(t), np.nan, np.float32)),
        })
        pq.write_table(tab, root / "data" / f"{first // shard_subjects:04d}.parquet")
        total += len(t)
    (root / "metadata" / "dataset.json").write_text(json.dumps({"dataset_name": "bench_labels", "meds_version": "0.4"}))
    sid = np.arange(1, S + 1)
    split = np.where(rng.random(S) < 0.8, "train", np.where(rng.random(S) < 0.5, "tuning", "held_out"))
    pq.write_table(pa.table({"subject_id": pa.array(sid, pa.int64()), "split": split.tolist()}), root / "metadata" / "subject_splits.parquet")
    pq.write_table(pa.table({"code": names.tolist(), "description": [""] * codes, "parent_codes": pa.array([[] for _ in range(codes)], pa.list_(pa.string()))}), root / "metadata" / "codes.parquet")
    p = np.repeat(start_S, 2) + (rng.random(2 * S) * np.repeat(span_S, 2) * 0.9).astype(np.int64)
    pq.write_table(pa.table({
        "subject_id": pa.array(np.repeat(sid, 2), pa.int64()),
        "scan_id": [f"scan{i:07d}" for i in range(2 * S)],
        "prediction_time": pa.array(p.view("datetime64[us]"), pa.timestamp("us")),
        "image_path": [""] * (2 * S), "modality": ["CT"] * (2 * S),
    }), root / "scans.parquet")
    return {"events": total, "subjects": S, "scans": 2 * S, "files": -(-S // shard_subjects)}


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(kind: str, root: Path, tasks: int) -> dict:
    """Runs in a child process: one implementation, one core; prints a JSON line."""
    import pyarrow as pa

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    from tte_scale.ehr.config import LabelsConfig, load_task_set

    cfg = LabelsConfig(num_tasks=tasks, ranking="entropy", ontology=False)
    bench = load_task_set(REPO / "configs" / "tasks" / "inspect.yaml")
    import pandas  # noqa: F401  (import cost outside the timing, for both)
    import zarr  # noqa: F401

    base = _rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    if kind == "ours":
        from tte_scale.ehr.build import build_labels

        s = build_labels(root / "meds", root / "meds" / "scans.parquet", root / "out", cfg, bench, overwrite=True, progress=False)
        from tte_scale.ehr import load_labels

        sec, cpu = time.perf_counter() - t0, time.process_time() - c0
        lab = load_labels(root / "out")
        vocab = lab.vocab.column("code").to_pylist()
        n_ev = int(sum(np.asarray(lab.event[i : i + 4096]).sum() for i in range(0, lab.num_rows, 4096)))
        events = s["events_read"]
    else:
        from tte_scale.ehr.reference import read_meds_frames, reference_labels

        ev, scans, splits, parents = read_meds_frames(str(root / "meds"), str(root / "meds" / "scans.parquet"))
        ev["code"] = ev["code"].astype("category")
        ref = reference_labels(ev, scans, splits, parents, cfg, bench)
        sec, cpu = time.perf_counter() - t0, time.process_time() - c0
        vocab, n_ev, events = ref["vocab"], int(ref["event"].sum()), len(ev)
    return {"kind": kind, "seconds": sec, "cpu_seconds": cpu, "events": events, "events_per_s": events / sec, "events_per_cpu_s": events / cpu, "peak_rss_mb": _rss_mb(), "base_rss_mb": base, "vocab": vocab, "event_cells": n_ev}


def run_worker(kind: str, root: Path, tasks: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--dir", str(root), "--tasks", str(tasks)]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0"] + cmd
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=2_000_000, help="events to generate (the full benchmark: 20000000)")
    ap.add_argument("--tasks", type=int, default=8192, help="K pretraining tasks")
    ap.add_argument("--codes", type=int, default=20_000, help="distinct codes in the cohort")
    ap.add_argument("--per-subject", type=int, default=2000, help="mean events per subject (2 scans each)")
    ap.add_argument("--shard-subjects", type=int, default=1000, help="subjects per MEDS file")
    ap.add_argument("--no-pandas", action="store_true", help="skip the pandas baseline")
    ap.add_argument("--machine", default="dev CPU, 2 cores", help="machine name for the results")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="where labels.{json,md} go")
    ap.add_argument("--worker", choices=["ours", "pandas"], help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.dir), args.tasks)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench_labels_"))
    try:
        t0 = time.perf_counter()
        info = generate(tmp / "meds", args.events, args.codes, args.per_subject, args.shard_subjects)
        info["generate_seconds"] = time.perf_counter() - t0
        shard_mb = max(f.stat().st_size for f in (tmp / "meds" / "data").glob("*.parquet")) / 2**20
        rows = [run_worker("ours", tmp, args.tasks)]
        if not args.no_pandas:
            rows.append(run_worker("pandas", tmp, args.tasks))
            if rows[0]["vocab"] != rows[1]["vocab"] or rows[0]["event_cells"] != rows[1]["event_cells"]:
                raise SystemExit("ours and the pandas reference disagree (vocabulary or event count)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for r in rows:
        r.pop("vocab")
    speedup = rows[0]["events_per_cpu_s"] / rows[1]["events_per_cpu_s"] if len(rows) > 1 else None
    result = {"machine": args.machine, "platform": platform.platform(), "cohort": info, "tasks": args.tasks,
              "largest_shard_file_mb": shard_mb, "events_per_shard": info["events"] / info["files"],
              "results": rows, "speedup_vs_pandas": speedup}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "labels.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# `tte-scale labels` benchmark ({args.machine}, one core per implementation)", "",
        f"Cohort: {info['events']:,} events, {info['subjects']:,} subjects, {info['scans']:,} scans, {info['files']} MEDS files "
        f"(~{info['events'] / info['files']:,.0f} events each), K = {args.tasks:,} tasks, 8 bench tasks.", "",
        "| implementation | wall s | CPU s | events/CPU-s | events/wall-s | peak RSS (MB) | RSS before run (MB) |", "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['kind']} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | {r['events_per_cpu_s']:,.0f} | {r['events_per_s']:,.0f} | {r['peak_rss_mb']:,.0f} | {r['base_rss_mb']:,.0f} |")
    if speedup:
        lines += ["", f"Speed-up over pandas (CPU time; the 2 shared cores make wall time noisy): **{speedup:.1f}x** "
                  "(same vocabulary and event cells: checked)."]
    lines += ["", f"Output: {info['scans']:,} x {args.tasks:,} = {info['scans'] * args.tasks / 1e6:,.0f}M label cells "
              f"({info['scans'] * args.tasks / info['events']:.1f} per event): the dense [N, K] arrays, not the events, dominate our time."]
    lines += ["", f"Command: `.venv/bin/python benchmarks/bench_labels.py --events {args.events} --tasks {args.tasks}`"]
    (out / "labels.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
