"""Full-size rehearsal (issue 17): every stage at the INSPECT geometry, each measured as a process tree.

synth --profile realistic --dicom (512x512 slices at 0.6-1 mm; a code vocabulary large enough
for K = 8,192) -> labels (K = 8,192 asked, 8 bins) -> shard with configs/shard/default.yaml
(160x224x224, WebDataset + Zarr) twice: from the DICOM series on Ray with 2 workers and from the
NIfTI files in the plain loop (--workers 0) -> the training loader reading every volume at full
shape (WebDataset and Zarr) -> train configs/pretrain/vit_b_8gpu.yaml overridden for the CPU
(ViT-B width 768, 1,960 tokens, K = 8,192; 2 gloo ranks via `tte-scale launch local`; fp32 and
bf16, ZeRO-2 and ZeRO-3, activation checkpointing on and off) -> the export -> `embed` on 1 and
2 ranks -> `eval` of the export on 2 ranks.

Each stage is one ``tte-scale`` command run as a child process while a sampler thread walks its
process tree (psutil, every ``--sample-s``): per process the peak RSS (shared pages counted in
each process that maps them, so forked workers over-count) and CPU time, plus the peak growth of
/dev/shm. CPU-seconds of a stage are the larger of the waited-for children's rusage and the sum
over the sampled processes (Ray's daemons are not always reaped by the driver). Bytes written
per volume come from the output folders. Training also records each rank's model-state bytes
(metrics.jsonl ``memory`` record: parameters + optimizer state) beside DeepSpeed's estimate
(``tte-scale train --estimate-memory``, tte_scale/train/memory.py) for the same config.

The CPU cannot run 12 ViT-B blocks at 1,960 tokens for several variants in 20 minutes, so the
training variants use ``--depth`` blocks (default 2) at the real width and token count, and one
variant runs the full 12-block ViT-B for its memory figures (``--full-depth-steps``, 0 = off).
``--quick`` is a smaller version (4 subjects, 1 variant, 1 step): minutes, for a smoke run.

    python -m tte_scale.benchmarks.bench_rehearsal --out benchmarks/results
    tte-scale bench rehearsal --out runs/bench --script-args=--quick
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tte_scale.benchmarks.common import add_output_args, machine_info, machine_name, md_table, write_results

NAME = "rehearsal"
RAW_VOLUME_BYTES = 160 * 224 * 224 * 2
"""int16 canonical volume at configs/shard/default.yaml's shape."""
REPO = Path(__file__).resolve().parents[1]


def _config_path(rel: str) -> Path:
    """A file of configs/ in the checkout, or of the installed tte_scale.configs package."""
    p = REPO / rel
    if p.is_file():
        return p
    import tte_scale

    return Path(tte_scale.__file__).resolve().parent / rel


# -- process-tree sampling ------------------------------------------------------------------------


COMPILERS = frozenset({"ninja", "sh", "c++", "g++", "gcc", "cc1", "cc1plus", "as", "ld", "collect2"})
"""Compiler processes: DeepSpeed's first-run build of its CPU ops (cached in TORCH_EXTENSIONS_DIR)
and the short compiler probes at import."""
RAY_DAEMONS = ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py", "runtime_env", "agent")


def _role(proc, root_pid: int, roles: dict[int, str]) -> str:
    """A readable role for one process of a stage's tree (driver, rank r, ray worker, ...);
    ``roles`` holds the roles of the processes seen before (parents are classified first)."""
    try:
        cmd = " ".join(proc.cmdline())
        name = proc.name()
        ppid = proc.ppid()
    except Exception:  # gone already
        return "exited"
    try:
        env = proc.environ()
    except Exception:
        env = {}
    parent = roles.get(ppid, "")
    if proc.pid == root_pid:
        return "driver"
    if name in COMPILERS or parent == "compiler":
        return "compiler"
    if any(d in name for d in RAY_DAEMONS):
        return "ray daemon"
    if name.startswith("ray::") or cmd.startswith("ray::") or "default_worker.py" in cmd:
        return "ray worker"
    if any(d in cmd[:200] for d in RAY_DAEMONS) or "ray/" in cmd[:300] or parent == "ray daemon":
        return "ray daemon"
    if parent.startswith("rank") or name == "pt_data_worker":
        return f"{parent.split(' loader')[0]} loader worker" if parent.startswith("rank") else "loader worker"
    if "RANK" in env and "LOCAL_RANK" in env:
        return f"rank {env['RANK']}"
    if "torch.distributed.run" in cmd:
        return "launcher (torchrun)"
    if parent == "multiprocessing helper":  # started by a forkserver
        return "worker"
    if "resource_tracker" in cmd or "forkserver" in cmd:
        return "multiprocessing helper"
    if parent in ("driver", "worker", "multiprocessing helper"):
        return "worker"
    return f"other ({name})"


@dataclass
class ProcRecord:
    pid: int
    role: str
    name: str
    peak_rss: int = 0
    peak_pss: int = 0
    cpu_s: float = 0.0


@dataclass
class TreeSampler:
    """Samples a process and its descendants every ``interval`` s in a thread (psutil)."""

    root_pid: int
    interval: float = 0.25
    procs: dict[int, ProcRecord] = field(default_factory=dict)
    shm_base: int = 0
    shm_peak: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> TreeSampler:
        self.shm_base = self.shm_peak = _shm_used()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.root_pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        roles = {pid: r.role for pid, r in self.procs.items()}
        try:  # parents before their children
            tree.sort(key=lambda p: p.create_time())
        except psutil.Error:
            pass
        for p in tree:
            try:
                with p.oneshot():
                    rss = p.memory_info().rss
                    t = p.cpu_times()
                    cpu = t.user + t.system
                try:  # proportional set size: shared pages split between their users
                    pss = p.memory_full_info().pss
                except (psutil.Error, AttributeError):
                    pss = 0
                rec = self.procs.get(p.pid)
                if rec is None:
                    rec = self.procs[p.pid] = ProcRecord(p.pid, _role(p, self.root_pid, roles), p.name())
                    roles[p.pid] = rec.role
                rec.peak_rss = max(rec.peak_rss, rss)
                rec.peak_pss = max(rec.peak_pss, pss)
                rec.cpu_s = max(rec.cpu_s, cpu)
            except psutil.Error:
                continue
        self.shm_peak = max(self.shm_peak, _shm_used())
        self.samples += 1

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return {
            "processes": [
                {
                    "pid": r.pid,
                    "role": r.role,
                    "name": r.name,
                    "peak_rss_mib": round(r.peak_rss / 2**20, 1),
                    "peak_pss_mib": round(r.peak_pss / 2**20, 1),
                    "cpu_s": round(r.cpu_s, 2),
                }
                for r in sorted(self.procs.values(), key=lambda r: r.pid)
            ],
            "shm_peak_growth_mib": round(max(0, self.shm_peak - self.shm_base) / 2**20, 1),
            "samples": self.samples,
        }


def _shm_used() -> int:
    try:
        return shutil.disk_usage("/dev/shm").used
    except OSError:
        return 0


def by_role(processes: list[dict]) -> dict[str, dict[str, Any]]:
    """Per role: process count, largest peak RSS and PSS (MiB), summed CPU-seconds."""
    out: dict[str, dict[str, Any]] = {}
    for p in processes:
        r = out.setdefault(p["role"], {"n": 0, "peak_rss_mib": 0.0, "peak_pss_mib": 0.0, "cpu_s": 0.0})
        r["n"] += 1
        r["peak_rss_mib"] = max(r["peak_rss_mib"], p["peak_rss_mib"])
        r["peak_pss_mib"] = max(r["peak_pss_mib"], p.get("peak_pss_mib", 0.0))
        r["cpu_s"] = round(r["cpu_s"] + p["cpu_s"], 2)
    return out


def measure(name: str, cmd: list[str], *, log_dir: Path, env: dict, interval: float, timeout: float) -> dict:
    """Run ``cmd`` as a child, sampling its tree; wall, CPU-seconds, peak RSS per process, /dev/shm."""
    log = log_dir / f"{name}.log"
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO if REPO.is_dir() else None)
        sampler = TreeSampler(proc.pid, interval).start()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        tree = sampler.stop()
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    rusage_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    sampled_cpu = sum(p["cpu_s"] for p in tree["processes"])
    rec = {
        "stage": name,
        "command": " ".join(map(str, cmd[2:] if cmd[1:2] == ["-m"] else cmd)),
        "rc": rc,
        "wall_s": round(wall, 2),
        "cpu_s": round(max(rusage_cpu, sampled_cpu), 2),
        "cpu_s_rusage": round(rusage_cpu, 2),
        "cpu_s_sampled": round(sampled_cpu, 2),
        "load_avg_end": round(os.getloadavg()[0], 2),
        **tree,
        "roles": by_role(tree["processes"]),
        "peak_rss_mib": max((p["peak_rss_mib"] for p in tree["processes"]), default=0.0),
        "log": str(log),
    }
    print(
        f"rehearsal {name}: rc {rc}, {wall:.1f} s wall, {rec['cpu_s']:.1f} CPU-s, "
        f"peak RSS {rec['peak_rss_mib']:.0f} MiB, /dev/shm +{rec['shm_peak_growth_mib']} MiB",
        flush=True,
    )
    if rc != 0:
        rec["log_tail"] = log.read_text()[-3000:]
        print(rec["log_tail"], file=sys.stderr, flush=True)
    return rec


# -- sizes ----------------------------------------------------------------------------------------


def _dir_bytes(path: Path, pattern: str = "**/*") -> int:
    return sum(p.stat().st_size for p in Path(path).glob(pattern) if p.is_file())


def shard_bytes(shards: Path) -> dict[str, Any]:
    """Bytes per volume of a shards folder: WebDataset tars and the Zarr store, vs raw int16."""
    import pyarrow.parquet as pq

    t = pq.read_table(shards / "manifest" / "samples.parquet", columns=["status"]).to_pydict()
    ok = sum(s == "ok" for s in t["status"])
    wds, zarr = _dir_bytes(shards / "wds"), _dir_bytes(shards / "zarr")
    return {
        "volumes_ok": ok,
        "volumes_total": len(t["status"]),
        "wds_bytes_per_volume": wds // max(ok, 1),
        "zarr_bytes_per_volume": zarr // max(ok, 1),
        "raw_bytes_per_volume": RAW_VOLUME_BYTES,
        "wds_ratio": round(RAW_VOLUME_BYTES * ok / wds, 2) if wds else None,
        "zarr_ratio": round(RAW_VOLUME_BYTES * ok / zarr, 2) if zarr else None,
    }


def nifti_scans(cohort: Path) -> Path:
    """scans_nifti.parquet: the cohort's scans table with image_path at the NIfTI file of each scan
    (synth --dicom points image_path at the DICOM series and writes the NIfTI files beside)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pq.read_table(cohort / "scans.parquet")
    paths = []
    for p in t.column("image_path").to_pylist():
        parts = Path(p).parts
        nifti = Path("images", *parts[1:-1], parts[-1] + ".nii.gz") if parts[0] == "dicom" else Path(p)
        if not (cohort / nifti).is_file():
            raise FileNotFoundError(f"{cohort / nifti}: no NIfTI file beside the DICOM series {p}")
        paths.append(str(nifti))
    out = cohort / "scans_nifti.parquet"
    pq.write_table(t.set_column(t.schema.get_field_index("image_path"), "image_path", pa.array(paths)), out)
    return out


# -- loader read (run in a child process by the rehearsal) ---------------------------------------


def read_all(shards: str, fmt: str, workers: int, batch: int, split: str, epochs: int) -> dict[str, Any]:
    """``epochs`` epochs of the training loader over ``split`` at full shape. Steady state: from
    after the first (2 * workers + 1) batches (prefetched while the workers start) to the last,
    volumes per second and per CPU-second of the whole tree (this process and its workers, the
    way benchmarks/bench_loader.py counts); plus the slot ring's size."""
    import psutil

    from tte_scale.data import LoaderConfig, build_loader
    from tte_scale.data.shm import ring_bytes

    def tree_cpu() -> dict[int, float]:
        out = {}
        me = psutil.Process()
        for p in [me, *me.children(recursive=True)]:
            try:
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
            except psutil.Error:
                pass
        return out

    cfg = LoaderConfig(format=fmt, batch_size=batch, num_workers=workers, prefetch_factor=2, split=split)
    loader = build_loader(shards, cfg)
    steps = loader.steps_per_epoch * epochs
    skip = min(2 * workers + 1, steps // 2)
    t_start = time.perf_counter()
    n, shape, it = 0, None, iter(loader)
    t0 = c0 = None
    for i in range(steps):
        try:
            b = next(it)
        except StopIteration:  # next epoch: the stream carries on
            it = iter(loader)
            b = next(it)
        if i == skip:
            t0, c0, n = time.perf_counter(), tree_cpu(), 0
        n += b["volume"].shape[0]
        shape = tuple(b["volume"].shape[1:])
    t1, c1 = time.perf_counter(), tree_cpu()
    cpu = sum(t - c0.get(pid, 0.0) for pid, t in c1.items())
    return {
        "format": fmt,
        "workers": workers,
        "batch": batch,
        "epochs": epochs,
        "volumes": n,
        "shape": list(shape or ()),
        "seconds": round(t1 - t0, 3),
        "first_volumes_s": round(t0 - t_start, 3),
        "volumes_per_s": round(n / (t1 - t0), 3),
        "volumes_per_cpu_s": round(n / cpu, 3) if cpu > 0 else None,
        "raw_mb_per_cpu_s": round(n * RAW_VOLUME_BYTES / 1e6 / cpu, 1) if cpu > 0 else None,
        "slot_ring_mib": round(ring_bytes(workers, 2, batch, shape[-3:] if shape else (160, 224, 224)) / 2**20, 1),
    }


# -- training -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    name: str
    precision: str
    zero: int
    checkpointing: bool
    depth: int
    steps: int


def variants(depth: int, steps: int, full_depth_steps: int, quick: bool) -> list[Variant]:
    """A fractional design: each of fp32/bf16, ZeRO-2/3, checkpointing on/off twice in 4 runs."""
    if quick:
        return [Variant("fp32-z2-ckpt", "fp32", 2, True, depth, steps)]
    vs = [
        Variant("fp32-z2", "fp32", 2, False, depth, steps),
        Variant("bf16-z2-ckpt", "bf16", 2, True, depth, steps),
        Variant("fp32-z3-ckpt", "fp32", 3, True, depth, steps),
        Variant("bf16-z3", "bf16", 3, False, depth, steps),
    ]
    if full_depth_steps > 0 and not quick:
        vs.append(Variant("bf16-z2-ckpt-12blocks", "bf16", 2, True, 12, full_depth_steps))
    return vs


def cpu_train_sets(v: Variant, ranks: int) -> list[str]:
    """The overrides that run configs/pretrain/vit_b_8gpu.yaml on ``ranks`` CPU ranks, one volume
    each (tests/e2e/test_rehearsal_trimmed.py trains with these too)."""
    return [
        "device=cpu",
        f"cluster.gpus_per_node={ranks}",
        f"model.depth={v.depth}",
        f"model.grad_checkpointing={'true' if v.checkpointing else 'false'}",
        f"optim.global_batch_size={ranks}",
        "optim.grad_accum_steps=1",
        "optim.warmup_steps=1",
        "data.num_workers=1",
        "data.shuffle_window=2",
        f"zero.stage={v.zero}",
        f"zero.precision={v.precision}",
        f"max_steps={v.steps}",
        f"checkpoint.every_steps={v.steps}",
        "checkpoint.keep_last=1",
        "eval.every_steps=0",
        "eval.max_batches=1",
        "telemetry.log_every=1",
    ]


def train_sets(v: Variant, shards: Path, labels: Path, out: Path, ranks: int) -> list[str]:
    """:func:`cpu_train_sets` plus the run's folders."""
    return [*cpu_train_sets(v, ranks), f"data.shards_dir={shards}", f"data.labels_dir={labels}", f"out_dir={out}"]


def estimate(sets: list[str]) -> dict[str, Any]:
    """DeepSpeed's model-state estimate for the config (what `train --estimate-memory` prints)."""
    from tte_scale.config import load_config
    from tte_scale.train import PretrainConfig
    from tte_scale.train.memory import estimate_memory

    cfg = load_config(PretrainConfig, str(_config_path("configs/pretrain/vit_b_8gpu.yaml")), sets)
    est = estimate_memory(cfg)
    est.pop("deepspeed_table", None)
    return est


def train_figures(run: Path) -> dict[str, Any]:
    """Steps, step time and each rank's model-state bytes from the run's metrics.jsonl."""
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    steps = [r for r in rows if r.get("kind") == "train"]
    mem = next((r for r in rows if r.get("kind") == "memory"), None)
    out: dict[str, Any] = {
        "steps": [r["step"] for r in steps],
        "step_s": [round(r["step_s"], 2) for r in steps],
        "loss": [round(r["loss"], 4) for r in steps],
        "exported": (run / "encoder" / "model.safetensors").is_file(),
    }
    if mem:
        out["param_bytes_per_rank"] = mem["param_bytes_per_rank"]
        out["optim_bytes_per_rank"] = mem["optim_bytes_per_rank"]
        out["model_state_gib_per_rank"] = (mem["param_bytes_per_rank"] + mem["optim_bytes_per_rank"]) / 2**30
    return out


# -- the run --------------------------------------------------------------------------------------


def rehearse(args: argparse.Namespace, work: Path, stages: list[dict]) -> dict[str, Any]:
    """Run the stages in order, appending each one's record to ``stages``."""
    py = sys.executable
    cli = [py, "-m", "tte_scale.cli"]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "DS_ACCELERATOR": "cpu",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONUNBUFFERED": "1",
        "TQDM_DISABLE": "1",
    }
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cohort, labels = work / "cohort", work / "labels"
    shards_ray, shards_loop = work / "shards_ray", work / "shards_loop"
    shard_cfg = _config_path("configs/shard/default.yaml")
    t_start = time.perf_counter()

    def run(name, cmd, timeout=1800.0):
        rec = measure(name, [str(c) for c in cmd], log_dir=logs, env=env, interval=args.sample_s, timeout=timeout)
        stages.append(rec)
        if rec["rc"] != 0 and not name.startswith("eval"):
            raise RuntimeError(f"stage {name} failed (rc {rec['rc']}); log {rec['log']}")
        return rec

    synth_sets = [f"generic_codes={args.generic_codes}", f"generic_zipf_exponent={args.zipf}"]
    rec = run(
        "synth",
        [*cli, "synth", "--out", cohort, "--subjects", args.subjects, "--profile", "realistic", "--dicom",
         "--workers", 2, "--no-progress", *[a for s in synth_sets for a in ("--set", s)]],
    )  # fmt: skip
    import pyarrow.parquet as pq

    scans = pq.read_table(cohort / "scans.parquet").num_rows
    rec["scans"] = scans
    rec["bytes_per_volume"] = {
        "nifti": _dir_bytes(cohort / "images") // scans,
        "dicom": _dir_bytes(cohort / "dicom") // scans,
    }

    rec = run("labels", [*cli, "labels", "--meds", cohort, "--scans", cohort / "scans.parquet", "--out", labels,
                         "--tasks", args.tasks, "--bins", 8, "--no-progress"])  # fmt: skip
    summ = json.loads((labels / "summary.json").read_text())
    rec["tasks_requested"], rec["tasks_kept"] = summ["tasks_requested"], summ["tasks_kept"]

    nifti = nifti_scans(cohort)
    rec = run("shard_ray2_dicom", [*cli, "shard", "--scans", cohort / "scans.parquet", "--labels", labels, "--out",
                                   shards_ray, "--config", shard_cfg, "--workers", 2, "--no-progress"])  # fmt: skip
    rec["bytes"] = shard_bytes(shards_ray)
    rec["volumes_per_s"] = round(rec["bytes"]["volumes_ok"] / rec["wall_s"], 3)
    rec = run("shard_loop_nifti", [*cli, "shard", "--scans", nifti, "--labels", labels, "--out", shards_loop,
                                   "--config", shard_cfg, "--workers", 0, "--no-progress"])  # fmt: skip
    rec["bytes"] = shard_bytes(shards_loop)
    rec["volumes_per_s"] = round(rec["bytes"]["volumes_ok"] / rec["wall_s"], 3)
    rec["same_volumes_as_dicom_build"] = _same_volumes(shards_ray, shards_loop)
    rec["voxel_difference_vs_dicom_build"] = _voxel_difference(shards_ray, shards_loop)

    for fmt in ("wds", "zarr"):
        out_json = work / f"loader_{fmt}.json"
        rec = run(f"loader_{fmt}", [py, "-m", "tte_scale.benchmarks.bench_rehearsal", "--read-loader", shards_ray,
                                    "--format", fmt, "--workers", 2, "--result", out_json])  # fmt: skip
        rec["loader"] = json.loads(out_json.read_text())

    ranks = 2
    encoder = None
    for v in variants(args.depth, args.steps, args.full_depth_steps, args.quick):
        out = work / f"train_{v.name}"
        sets = train_sets(v, shards_ray, labels, out, ranks)
        rec = run(f"train_{v.name}", [*cli, "launch", "local", "--nproc", ranks, "--config",
                                      _config_path("configs/pretrain/vit_b_8gpu.yaml"),
                                      *[a for s in sets for a in ("--set", s)]])  # fmt: skip
        rec["variant"] = v.__dict__
        rec["train"] = train_figures(out)
        rec["estimate"] = estimate(sets)
        got = rec["train"].get("model_state_gib_per_rank")
        if got:
            rec["train"]["measured_over_estimate"] = round(got / rec["estimate"]["per_device_gib"], 3)
        if encoder is None and v.depth == args.depth:
            encoder = out / "encoder"

    emb_rows = {}
    for n in (1, 2):
        out = work / f"embed_{n}rank"
        args_embed = ["embed", "--encoder", encoder, "--shards", shards_ray, "--out", out, "--format", "wds",
                      "--batch-size", 1, "--threads", 1]  # fmt: skip
        cmd = [*cli, *args_embed] if n == 1 else [*cli, "launch", "local", "--nproc", n, "--", *args_embed]
        rec = run(f"embed_{n}rank", cmd)
        rec["scans_per_s"] = round(scans / rec["wall_s"], 3)
        rec["scans_per_cpu_s"] = round(scans / rec["cpu_s"], 4) if rec["cpu_s"] else None
        emb_rows[n] = pq.read_table(out / "embeddings.parquet").replace_schema_metadata(None)
    stages[-1]["same_rows_as_1rank"] = emb_rows[1].equals(emb_rows[2])

    ev = ["eval", "--checkpoint", encoder, "--shards", shards_ray, "--labels", labels, "--out", work / "eval",
          "--batch-size", 1, "--bootstrap", 20, "--probes", "logistic,cox", "--no-progress"]  # fmt: skip
    rec = run("eval_2rank", [*cli, "launch", "local", "--nproc", 2, "--", *ev])
    if rec["rc"] == 0:
        rec["summary"] = json.loads((work / "eval" / "summary.json").read_text()).get("scans_evaluated")
    return {"stages": stages, "total_wall_s": round(time.perf_counter() - t_start, 1), "scans": scans}


def _same_volumes(a: Path, b: Path) -> bool | None:
    """Whether two builds hold the same voxels per scan (the manifest's volume digests)."""
    import pyarrow.parquet as pq

    cols = pq.read_schema(a / "manifest" / "samples.parquet").names
    key = next((c for c in ("volume_sha256", "sha256") if c in cols), None)
    if key is None:
        return None
    ta, tb = (pq.read_table(x / "manifest" / "samples.parquet", columns=["scan_id", key]).to_pydict() for x in (a, b))
    return dict(zip(ta["scan_id"], ta[key])) == dict(zip(tb["scan_id"], tb[key]))


def _voxel_difference(a: Path, b: Path) -> dict[str, Any]:
    """Largest |HU difference| and fraction of differing voxels between the two builds' volumes
    of the train split (read through the loader's reader, as training reads them)."""
    import numpy as np

    from tte_scale.embed.scans import open_reader, split_scans

    sa, sb = split_scans(str(a), "train", "zarr"), split_scans(str(b), "train", "zarr")
    ra, rb = open_reader(sa), open_reader(sb)
    va = np.empty(sa.index.shape, np.int16)
    vb = np.empty(sb.index.shape, np.int16)
    worst, frac = 0, []
    try:
        for i in range(min(len(sa), 4)):
            ra.read(int(sa.order[i]), va)
            rb.read(int(sb.order[i]), vb)
            d = np.abs(va.astype(np.int32) - vb.astype(np.int32))
            worst = max(worst, int(d.max()))
            frac.append(float((d > 0).mean()))
    finally:
        ra.close()
        rb.close()
    return {"scans_compared": len(frac), "max_abs_hu": worst, "mean_fraction_differing": round(float(np.mean(frac)), 5)}


# -- report ---------------------------------------------------------------------------------------


def _gib(b) -> str:
    return f"{b / 2**30:.2f}"


def to_markdown(result: dict) -> str:
    m = result["meta"]
    cfg = result["config"]
    lines = [
        f"# Full-size rehearsal ({result['machine']})",
        "",
        f"{m['cpu']}, {m['cpu_count']} cores, {m['mem_gib']} GiB, no GPU; load average {m['load_avg_1m']} at the "
        f"start, {result['load_avg_end']} at the end (the machine is shared with other jobs); {m['date']}.",
        (f"**Stopped: {result['error']}**. " if result.get("error") else "")
        + f"Total {result['total_wall_s']:.0f} s wall ({result['total_wall_s'] / 60:.1f} min)"
        + (" (--quick)" if cfg["quick"] else "")
        + f". Cohort: {cfg['subjects']} subjects, {result['scans']} scans, `synth --profile realistic --dicom` "
        f"(512x512 slices, 0.6-1 mm), `--set generic_codes={cfg['generic_codes']} --set "
        f"generic_zipf_exponent={cfg['zipf']}`; volumes 160x224x224 (configs/shard/default.yaml); training: "
        f"configs/pretrain/vit_b_8gpu.yaml on 2 gloo ranks, width 768, 1,960 tokens (patch 16), "
        f"{cfg['depth']} blocks (12 in the `12blocks` variant), 1 volume per rank, {cfg['steps']} steps.",
        "",
        "Peak RSS is per process (shared pages count in every process that maps them"
        + (
            "; PSS, in brackets, splits them between their users, so PSS sums over processes"
            if any(p.get("peak_pss_mib") for s in result["stages"] for p in s["processes"])
            else ""
        )
        + "); x N: N processes of that role, the largest shown; CPU-s is the "
        "whole process tree's; /dev/shm is the peak growth of its use during the stage (other jobs use it too).",
        "",
    ]
    has_pss = any(p.get("peak_pss_mib") for s in result["stages"] for p in s["processes"])
    head = ["stage", "wall s", "CPU-s", f"peak RSS{' (PSS)' if has_pss else ''} per process, MiB", "/dev/shm MiB",
            "bytes/volume, notes"]  # fmt: skip
    rows = []
    for s in result["stages"]:
        procs = "; ".join(
            f"{role}{' x' + str(r['n']) if r['n'] > 1 else ''} {r['peak_rss_mib']:.0f}"
            for role, r in s["roles"].items()
        )
        notes = []
        if "bytes_per_volume" in s:
            notes.append(", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in s["bytes_per_volume"].items()))
        if "tasks_kept" in s:
            notes.append(f"K kept {s['tasks_kept']:,} of {s['tasks_requested']:,}")
        if "bytes" in s:
            b = s["bytes"]
            notes.append(
                f"{b['volumes_ok']} volumes, {s['volumes_per_s']} vol/s; wds {b['wds_bytes_per_volume'] / 1e6:.2f} MB "
                f"(x{b['wds_ratio']}), zarr {b['zarr_bytes_per_volume'] / 1e6:.2f} MB (x{b['zarr_ratio']}), raw "
                f"{b['raw_bytes_per_volume'] / 1e6:.2f} MB"
            )
        if s.get("same_volumes_as_dicom_build") is not None:
            v = s.get("voxel_difference_vs_dicom_build") or {}
            notes.append(
                f"same voxels as the DICOM build: {s['same_volumes_as_dicom_build']}"
                + (f" (max |diff| {v['max_abs_hu']} HU, {100 * v['mean_fraction_differing']:.2f}% of voxels, "
                   f"{v['scans_compared']} scans)" if v else "")
            )  # fmt: skip
        if "loader" in s:
            ld = s["loader"]
            notes.append(
                f"steady state of {ld['epochs']} epochs: {ld['volumes']} volumes {ld['shape']}, {ld['volumes_per_s']} "
                f"vol/s, {ld['volumes_per_cpu_s']} vol/CPU-s ({ld['raw_mb_per_cpu_s']} MB/CPU-s raw), {ld['workers']} "
                f"workers, slot ring {ld['slot_ring_mib']} MiB; first volumes after {ld['first_volumes_s']} s"
            )
        if "train" in s:
            t = s["train"]
            notes.append(f"steps {t['steps']}, step s {t['step_s']}")
        if "scans_per_s" in s:
            notes.append(f"{s['scans_per_s']} scans/s, {s['scans_per_cpu_s']} scans/CPU-s")
        if "same_rows_as_1rank" in s:
            notes.append(f"rows identical to 1 rank: {s['same_rows_as_1rank']}")
        if s.get("summary"):
            notes.append("scans evaluated " + ", ".join(f"{k} {v}" for k, v in s["summary"].items()))
        if s["rc"] != 0:
            notes.append(f"**failed** (rc {s['rc']})")
        rows.append([s["stage"], f"{s['wall_s']:.1f}", f"{s['cpu_s']:.1f}", procs, s["shm_peak_growth_mib"],
                     "; ".join(notes)])  # fmt: skip
    lines += md_table(head, rows)
    tr = [s for s in result["stages"] if "train" in s]
    if tr:
        lines += ["", "Model-state memory per rank (parameters + optimizer state, metrics.jsonl `memory`) vs "
                  "DeepSpeed's estimate for the same config (`tte-scale train --estimate-memory`, 2 ranks):", ""]  # fmt: skip
        head = ["variant", "blocks", "params", "measured GiB/rank", "estimate GiB/rank", "measured/estimate",
                "peak RSS per rank (MiB)"]  # fmt: skip
        rows = []
        for s in tr:
            t, e = s["train"], s["estimate"]
            rank_rss = max((r["peak_rss_mib"] for k, r in s["roles"].items() if k.startswith("rank") and "worker" not in k),
                           default=0)  # fmt: skip
            rows.append([s["variant"]["name"], s["variant"]["depth"], f"{e['params'] / 1e6:.1f} M",
                         f"{t.get('model_state_gib_per_rank', float('nan')):.3f}", f"{e['per_device_gib']:.3f}",
                         t.get("measured_over_estimate", "n/a"), f"{rank_rss:.0f}"])  # fmt: skip
        lines += md_table(head, rows)
    lines += ["", f"Command: `{result['command']}`"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smaller: 4 subjects, 1 training variant of 1 step with 1 block, no 12-block variant",
    )
    ap.add_argument("--subjects", type=int, default=None, help="synthetic subjects (default 24; --quick 4)")
    ap.add_argument("--tasks", type=int, default=8192, help="K asked of labels (default 8192)")
    ap.add_argument("--generic-codes", type=int, default=20000, help="synth generic_codes (default 20000)")
    ap.add_argument("--zipf", type=float, default=0.5, help="synth generic_zipf_exponent (default 0.5)")
    ap.add_argument("--depth", type=int, default=None, help="ViT-B blocks of the training variants (default 2)")
    ap.add_argument("--steps", type=int, default=None, help="steps per training variant (default 3; --quick 1)")
    ap.add_argument("--full-depth-steps", type=int, default=1, help="steps of the 12-block variant (0: none)")
    ap.add_argument("--sample-s", type=float, default=0.25, help="process-tree sampling interval (s)")
    ap.add_argument("--work", type=Path, default=None, help="working folder kept afterwards (default: a temp dir)")
    # internal: the loader-read stage's child process
    ap.add_argument("--read-loader", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--format", default="wds", help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--epochs", type=int, default=4, help=argparse.SUPPRESS)
    add_output_args(ap)
    args = ap.parse_args(argv)
    if args.read_loader:
        res = read_all(args.read_loader, args.format, args.workers, 1, "train", args.epochs)
        args.result.write_text(json.dumps(res))
        print(json.dumps(res))
        return 0
    args.subjects = args.subjects or (4 if args.quick else 24)
    args.depth = args.depth or (1 if args.quick else 2)
    args.steps = args.steps or (1 if args.quick else 3)
    meta = machine_info("cpu")
    keep = args.work is not None
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_rehearsal_"))
    work.mkdir(parents=True, exist_ok=True)
    stages: list[dict] = []
    t0 = time.perf_counter()
    try:
        res = rehearse(args, work, stages)
    except Exception as exc:  # keep the stages measured so far, say where it stopped
        res = {"stages": stages, "total_wall_s": round(time.perf_counter() - t0, 1), "scans": None,
               "error": f"{type(exc).__name__}: {exc}"}  # fmt: skip
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    result = {
        "machine": args.machine or machine_name("cpu"),
        "meta": meta,
        "load_avg_end": round(os.getloadavg()[0], 2),
        "command": "python -m tte_scale.benchmarks.bench_rehearsal "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "config": {
            k: getattr(args, k)
            for k in (
                "quick",
                "subjects",
                "tasks",
                "generic_codes",
                "zipf",
                "depth",
                "steps",
                "full_depth_steps",
                "sample_s",
            )
        },  # fmt: skip
        **res,
    }
    js, md = write_results(args.out, NAME, result, to_markdown(result))
    print(md.read_text())
    print(f"wrote {js}, {md}")
    return 0 if "error" not in res and all(s["rc"] == 0 for s in res["stages"]) else 1


if __name__ == "__main__":
    sys.exit(main())
