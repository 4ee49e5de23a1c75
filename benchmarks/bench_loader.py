"""Loader throughput, side by side on one set of volumes (volumes/s, and per core).

Rows:
- the decode limit: numcodecs decode of the shards' compressed volume bytes in a tight loop (one core);
- the usual MONAI pipeline (LoadImaged + EnsureChannelFirstd + Orientationd + Spacingd +
  ScaleIntensityRanged + ResizeWithPadOrCropd, one process, one torch thread) from NIfTI files
  (a) at scanner geometry (LPS, 0.75 x 0.75 mm in-plane, 1.25 mm slices: what a user has on disk,
  so Orientationd and Spacingd really work), and (b) already at the canonical geometry (MONAI's
  best case: those transforms are no-ops; it bounds what skipping the resampling alone gives);
- our loader from WebDataset and from Zarr shards with 1 and 2 workers (batch in the main process).
The shards hold exactly the volumes MONAI makes from the scanner-geometry files (its pipeline
without the intensity scaling, rounded back to int16 HU), so every row serves the same volumes.

"Per core" divides by the cores a pipeline keeps busy: volumes/s / workers (wall clock), and,
less sensitive to other processes on a shared machine, volumes per CPU-second (all processes of
the pipeline: workers, and our main process that copies batches out of the shared slots).
Files are freshly written, so reads hit the page cache: this measures CPU cost, not the disk.

    .venv/bin/python benchmarks/bench_loader.py [--n 32] [--repeat 8] [--shape 96 128 128] [--out DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tte_scale.benchmarks.common import REPO, add_output_args, machine_info, machine_name, md_table, write_results


def _test_writer():
    """tests/support/shards.py of the checkout: the shards-folder writer the loader tests use."""
    if REPO is None:
        raise SystemExit("bench_loader writes its shards with tests/support/shards.py: run it from a checkout")
    if str(REPO / "tests") not in sys.path:
        sys.path.insert(0, str(REPO / "tests"))
    import support.shards

    return support.shards


SPACING_DHW = (1.5, 1.0, 1.0)  # canonical spacing (mm) of the shards / MONAI's Spacingd target
NATIVE_DHW = (1.25, 0.75, 0.75)  # scanner geometry of the NIfTI files users start from
MONAI_ROW = "MONAI NIfTI pipeline, scanner geometry (1 process, 1 thread)"
MONAI_CANON_ROW = "MONAI NIfTI pipeline, canonical geometry: no-op resampling (1 process, 1 thread)"
DECODE_ROW = "decode limit (numcodecs, 1 core)"


def monai_transform(shape_DHW, scale: bool, spacing_DHW=SPACING_DHW):
    import torch
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        LoadImaged,
        Orientationd,
        ResizeWithPadOrCropd,
        ScaleIntensityRanged,
        Spacingd,
    )

    torch.set_num_threads(1)
    D, H, W = shape_DHW
    tfs = [
        LoadImaged(keys="img"),
        EnsureChannelFirstd(keys="img"),
        Orientationd(keys="img", axcodes="RAS"),
        Spacingd(keys="img", pixdim=tuple(spacing_DHW)[::-1], mode="bilinear"),
    ]
    if scale:
        tfs.append(ScaleIntensityRanged(keys="img", a_min=-1000, a_max=1000, b_min=0.0, b_max=1.0, clip=True))
    tfs.append(ResizeWithPadOrCropd(keys="img", spatial_size=(W, H, D)))
    return Compose(tfs)


def make_inputs(tmp: Path, n: int, shape_DHW) -> tuple[list[str], list[str], list[np.ndarray]]:
    """(scanner-geometry NIfTI paths, canonical NIfTI paths, canonical int16 [D, H, W] volumes)."""
    import nibabel as nib

    phantom = _test_writer().phantom

    rng = np.random.default_rng(0)
    native_shape = tuple(round(s * c / t) for s, c, t in zip(shape_DHW, SPACING_DHW, NATIVE_DHW))
    to_canonical = monai_transform(shape_DHW, scale=False)
    native, canon, vols = [], [], []
    for i in range(n):
        # x = W axis (right->left flipped: LPS), y = H, z = D: a typical scanner export
        xyz = np.ascontiguousarray(phantom(native_shape, rng).transpose(2, 1, 0))
        p = tmp / f"native{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(xyz, np.diag([-NATIVE_DHW[2], -NATIVE_DHW[1], NATIVE_DHW[0], 1.0])), p)
        native.append(str(p))
        ras = to_canonical({"img": str(p)})["img"][0].numpy()  # [W, H, D] in RAS
        vol = np.ascontiguousarray(np.rint(ras).astype(np.int16).transpose(2, 1, 0))
        vols.append(vol)
        p = tmp / f"canon{i:03d}.nii.gz"
        nib.save(
            nib.Nifti1Image(
                np.ascontiguousarray(vol.transpose(2, 1, 0)),
                np.diag([SPACING_DHW[2], SPACING_DHW[1], SPACING_DHW[0], 1.0]),
            ),
            p,
        )
        canon.append(str(p))
    return native, canon, vols


def bench_monai(paths: list[str], shape_DHW, spacing_DHW=SPACING_DHW) -> dict:
    tf = monai_transform(shape_DHW, scale=True, spacing_DHW=spacing_DHW)
    tf({"img": paths[0]})  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    for p in paths:
        tf({"img": p})
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"volumes_per_s": len(paths) / wall, "volumes_per_cpu_s": len(paths) / cpu, "cores": 1}


def bench_decode(blobs: list[bytes], codec, shape_DHW, reps: int = 3) -> dict:
    out = np.empty(shape_DHW, dtype=np.int16)
    for b in blobs[:2]:
        codec.decode(b, out=out)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(reps):
        for b in blobs:
            codec.decode(b, out=out)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"volumes_per_s": reps * len(blobs) / wall, "volumes_per_cpu_s": reps * len(blobs) / cpu, "cores": 1}


def _tree_cpu(proc) -> dict[int, float]:
    """CPU seconds of each live descendant of `proc` (DataLoader workers, the forkserver), by pid."""
    out = {}
    for c in proc.children(recursive=True):
        try:
            t = c.cpu_times()
            out[c.pid] = t.user + t.system
        except Exception:  # a process that just exited
            pass
    return out


def _cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    # by pid: a process that ended in between (an earlier loader's worker being reaped) must not
    # subtract its whole CPU time from the sum
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def bench_ours(root: str, fmt: str, workers: int, batch: int) -> dict:
    """Steady state of one epoch: from after the first (2 * workers + 1) batches (prefetched while
    the workers started) to the last batch, when the workers are still alive (they are joined
    after it), so their CPU time can be read at both ends."""
    import psutil

    from tte_scale.data import LoaderConfig, build_loader

    loader = build_loader(root, LoaderConfig(format=fmt, batch_size=batch, num_workers=workers, prefetch_factor=2))
    me = psutil.Process()
    steps = loader.steps_per_epoch
    skip = min(2 * workers + 1, steps // 2)
    t_start = time.perf_counter()
    n = 0
    for i, b in enumerate(loader):
        if i == skip:
            t0, c0, w0, n = time.perf_counter(), time.process_time(), _tree_cpu(me), 0
        n += b["volume"].shape[0]
        if i == steps - 1:
            t1, c1, w1 = time.perf_counter(), time.process_time(), _tree_cpu(me)
    epoch = time.perf_counter() - t_start
    workers_cpu = _cpu_between(w0, w1)
    return {
        "volumes_per_s": n / (t1 - t0),
        "volumes_per_cpu_s": n / ((c1 - c0) + workers_cpu),
        # where the CPU goes: the workers (read, check, decode) and the main process (copy out of
        # the slot into the batch tensor, queue)
        "main_cpu_ms_per_volume": 1e3 * (c1 - c0) / n,
        "workers_cpu_ms_per_volume": 1e3 * workers_cpu / n,
        "first_epoch_volumes_per_s": steps * batch / epoch,
        "cores": workers,
        "samples": n,
    }


# -- the user's geometry: 512 x 512 scanner slices in, 160 x 224 x 224 canonical volumes --------

S512_WDS1 = "tte_scale loader, wds, 1 worker"
S512_ZARR1 = "tte_scale loader, zarr, 1 worker"


def _canonical_volumes(paths: list[Path]):
    """What the shards hold: tte_scale's own per-scan path (sharding.samples) on each file."""
    from tte_scale.imaging import ImagingConfig, canonicalize, check_scan, read_scan

    cfg = ImagingConfig()
    vols = []
    for p in paths:
        raw, _ = check_scan(read_scan(p, "CT", cfg), cfg)
        vols.append(canonicalize(raw, cfg)[0])
    return cfg, vols


def _wds_members(root: Path, n: int) -> list[tuple[str, int, int]]:
    from tte_scale.data.tarindex import index_tar

    out = []
    for tar in sorted((root / "wds").glob("*.tar")):
        out += [(str(tar), *m["volume.bin"]) for m in index_tar(str(tar)).members.values()]
    return out[:n]


def read_phases(root: Path, codec, shape, n: int, rounds: int = 3) -> dict[str, float]:
    """CPU ms per volume of each step of one read, in this process, timed in interleaved rounds
    (so load from other jobs hits every step alike): where the loader's time goes, and the Zarr
    read before (zarr's array API + the copy into the slot) and after (tte_scale.data.zarr_chunks)."""
    import os

    import google_crc32c
    import zarr

    from tte_scale.data.readers import WdsReader, ZarrReader
    from tte_scale.data.split_index import read_split_index
    from tte_scale.data.storage import ShardCache

    members = _wds_members(root, n)
    fds = {path: os.open(path, os.O_RDONLY) for path in {m[0] for m in members}}
    blobs = [os.pread(fds[path], size, off) for path, off, size in members]
    wds = WdsReader(read_split_index(str(root), "train", "wds"), ShardCache(None, 0))
    zr = ZarrReader(read_split_index(str(root), "train", "zarr"))
    arr = zarr.open_array(str(root / "zarr" / "volumes"), mode="r")
    out = np.empty(shape, dtype=np.int16)
    slot = np.empty(shape, dtype=np.int16)
    steps = {
        "pread of the encoded volume member": lambda k: os.pread(fds[members[k][0]], members[k][2], members[k][1]),
        "crc32c of the encoded bytes": lambda k: google_crc32c.value(blobs[k]),
        "decode into the slot (numcodecs)": lambda k: codec.decode(blobs[k], out=out),
        "copy of a volume out of the slot (main process)": lambda k: np.copyto(slot, out),
        "WebDataset read, whole (WdsReader.read)": lambda k: wds.read(k, out),
        "Zarr read, whole (ZarrReader.read: one chunk, one pread)": lambda k: zr.read(k, out),
        "Zarr read before: zarr array API + copy into the slot": lambda k: np.copyto(out, arr[int(zr.index.rows[k])]),
    }
    for f in steps.values():
        f(0)
    cpu = dict.fromkeys(steps, 0.0)
    for _ in range(rounds):
        for name, f in steps.items():
            c0 = time.process_time()
            for k in range(n):
                f(k)
            cpu[name] += time.process_time() - c0
    for fd in fds.values():
        os.close(fd)
    wds.close()
    zr.close()
    return {name: 1e3 * t / (rounds * n) for name, t in cpu.items()}


def run_scanner512(args) -> int:
    from tte_scale.benchmarks import scanner512
    from tte_scale.sharding.codec import get_codec, zarr_compressor
    from tte_scale.sharding.config import DEFAULT_CODEC

    write_shards = _test_writer().write_shards
    from zarr.codecs import Crc32cCodec

    folder = scanner512.cohort(Path(args.cohort) if args.cohort else scanner512.DEFAULT_CACHE)
    paths = scanner512.nifti_paths(folder)[: args.n]
    t0 = time.process_time()
    cfg, vols = _canonical_volumes(paths)
    shape = tuple(cfg.shape)
    codec = get_codec(DEFAULT_CODEC)  # the job's codec; one thread (Blosc's threads off in this process)
    repeat = max(args.repeat, -(-24 * args.batch // len(vols)))
    n_samples = len(vols) * repeat
    tmp = Path(tempfile.mkdtemp(prefix="bench_loader512_"))

    def write(root: Path, codec_conf: dict) -> None:
        """The volumes as the job would shard them with ``codec_conf`` (both formats, 16 per shard)."""
        write_shards(
            root,
            n=n_samples,
            shape=shape,
            volumes=vols * repeat,
            samples_per_shard=16,
            codec=get_codec(codec_conf),
            zarr_shard_rows=16,
            label_chunk_rows=LABEL_CHUNK_ROWS,
            zarr_compressors=[zarr_compressor(codec_conf), Crc32cCodec()],
            K=64,
            T=8,
        )

    try:
        write(tmp / "shards", DEFAULT_CODEC)
        print(f"shards written ({time.process_time() - t0:.0f} CPU-s so far)", flush=True)
        blobs = [b for *_, b in _blobs(tmp / "shards", len(vols))]
        raw = int(np.prod(shape)) * 2
        ratio = raw * len(blobs) / sum(len(b) for b in blobs)
        phases = read_phases(tmp / "shards", codec, shape, len(vols))
        rows: dict[str, dict] = {}
        rows[DECODE_ROW] = bench_decode(blobs, codec, shape)
        rows[MONAI_512_ROW] = bench_monai([str(p) for p in paths], shape, spacing_DHW=cfg.spacing_mm)
        # alternated rounds, medians: other jobs' load hits every configuration alike
        runs: dict[str, list[dict]] = {}
        for _ in range(args.rounds):
            for fmt in ("wds", "zarr"):
                for w in (1, 2):
                    runs.setdefault(f"tte_scale loader, {fmt}, {w} worker{'s' if w > 1 else ''}", []).append(
                        bench_ours(str(tmp / "shards"), fmt, w, args.batch)
                    )
        rows.update({name: _medians(rs) for name, rs in runs.items()})
        shutil.rmtree(tmp / "shards", ignore_errors=True)
        # The same volumes with bit shuffle, the codec bench_shard picks (sharding.config.DEFAULT_CODEC
        # waits for this measurement): the decode limit bounds every loader, so it bounds the ratio too.
        alt_conf = {**DEFAULT_CODEC, "shuffle": 2}
        alt = get_codec(alt_conf)
        write(tmp / "alt", alt_conf)
        alt_blobs = [b for *_, b in _blobs(tmp / "alt", len(vols))]
        alt_ratio = raw * len(alt_blobs) / sum(len(b) for b in alt_blobs)
        rows[ALT + DECODE_ROW] = bench_decode(alt_blobs, alt, shape)
        for fmt in ("wds", "zarr"):
            rows[f"{ALT}tte_scale loader, {fmt}, 1 worker"] = bench_ours(str(tmp / "alt"), fmt, 1, args.batch)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ratio = {"default": ratio, "bitshuffle": alt_ratio}
    return _report_512(args, rows, phases, shape, raw, ratio, n_samples, len(vols), folder)


def _medians(runs: list[dict]) -> dict:
    """Field-wise medians of repeated bench_ours results (and how many rounds)."""
    import statistics

    out = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    out["rounds"] = len(runs)
    return out


def _blobs(root: Path, n: int):
    import os

    out = []
    for path, off, size in _wds_members(root, n):
        fd = os.open(path, os.O_RDONLY)
        out.append((path, off, os.pread(fd, size, off)))
        os.close(fd)
    return out


MONAI_512_ROW = "MONAI NIfTI pipeline from 512x512 slices (1 process, 1 thread)"
ALT = "[bit shuffle] "
# as the sharding job writes them (ShardConfig.label_chunk_rows): with the test writer's 5 rows, a
# shuffled Zarr epoch re-read a label chunk through zarr for almost every sample (+3-5 CPU ms)
LABEL_CHUNK_ROWS = 1024


def _fig(key: str, scale: float = 1.0) -> str:
    """Source marker of a summary figure of loader_512.json (tests/support/doc_figures.py)."""
    return f"<!--fig loader_512.json:summary.{key}" + (f" scale={scale:g}" if scale != 1.0 else "") + "-->"


def _report_512(args, rows, phases, shape, raw, ratio, n_samples, n_vols, folder) -> int:
    from tte_scale.benchmarks import scanner512

    for r in rows.values():
        r["per_core_volumes_per_s"] = r["volumes_per_s"] / r["cores"]
    ours = {k: r for k, r in rows.items() if k.startswith("tte_scale loader")}
    alt = {k: r for k, r in rows.items() if k.startswith(ALT + "tte_scale loader")}
    alt_best = max(alt, key=lambda k: alt[k]["volumes_per_cpu_s"])
    alt_limit = rows[ALT + DECODE_ROW]
    best_wall = max(ours, key=lambda k: ours[k]["per_core_volumes_per_s"])
    best_cpu = max(ours, key=lambda k: ours[k]["volumes_per_cpu_s"])
    limit, monai = rows[DECODE_ROW], rows[MONAI_512_ROW]
    wds1, zarr1 = rows[S512_WDS1], rows[S512_ZARR1]
    summary = {
        "best_per_core_wall": best_wall,
        "best_per_cpu_s": best_cpu,
        "vs_monai_per_core_wall": ours[best_wall]["per_core_volumes_per_s"] / monai["per_core_volumes_per_s"],
        "vs_monai_per_cpu_s": ours[best_cpu]["volumes_per_cpu_s"] / monai["volumes_per_cpu_s"],
        "fraction_of_decode_limit_wall": ours[best_wall]["per_core_volumes_per_s"] / limit["volumes_per_s"],
        "fraction_of_decode_limit_cpu": ours[best_cpu]["volumes_per_cpu_s"] / limit["volumes_per_cpu_s"],
        "zarr_over_wds_time_1_worker_wall": wds1["volumes_per_s"] / zarr1["volumes_per_s"],
        "zarr_over_wds_time_1_worker_cpu": wds1["volumes_per_cpu_s"] / zarr1["volumes_per_cpu_s"],
        "zarr_read_before_over_after_cpu": phases["Zarr read before: zarr array API + copy into the slot"]
        / phases["Zarr read, whole (ZarrReader.read: one chunk, one pread)"],
        "decode_limit_vs_monai_per_cpu_s": limit["volumes_per_cpu_s"] / monai["volumes_per_cpu_s"],
        "bitshuffle": {
            "best_per_cpu_s": alt_best,
            "vs_monai_per_cpu_s": alt[alt_best]["volumes_per_cpu_s"] / monai["volumes_per_cpu_s"],
            "vs_monai_per_core_wall": max(r["per_core_volumes_per_s"] for r in alt.values())
            / monai["per_core_volumes_per_s"],
            "fraction_of_decode_limit_cpu": alt[alt_best]["volumes_per_cpu_s"] / alt_limit["volumes_per_cpu_s"],
            "decode_limit_vs_monai_per_cpu_s": alt_limit["volumes_per_cpu_s"] / monai["volumes_per_cpu_s"],
            "zarr_over_wds_time_1_worker_cpu": rows[ALT + S512_WDS1]["volumes_per_cpu_s"]
            / rows[ALT + S512_ZARR1]["volumes_per_cpu_s"],
            "compression_ratio": ratio["bitshuffle"],
        },
        "targets": {"vs_monai_per_core": 150.0, "fraction_of_decode_limit_cpu": 0.85, "zarr_over_wds": 1.2},
    }
    machine = args.machine or machine_name()
    result = {
        "meta": machine_info(),
        "machine": machine,
        "input": scanner512.GEOMETRY,
        "cohort": str(folder),
        "n_volumes": n_vols,
        "n_samples": n_samples,
        "shape": list(shape),
        "volume_mb": raw / 2**20,
        "codec": "blosc-zstd3-shuffle (sharding.config.DEFAULT_CODEC)",
        "compression_ratio": ratio["default"],
        "batch_size": args.batch,
        "rows": rows,
        "read_phases_cpu_ms_per_volume": phases,
        "volumes_per_s": {k: r["volumes_per_s"] for k, r in rows.items()},
        "summary": summary,
        "note": "page-cache-hot files; loader rows are steady state after the batches prefetched at start-up",
    }
    table = md_table(
        ["pipeline", "volumes/s", "cores", "per core (vol/s)", "vol per CPU-s", "CPU ms per volume (workers + main)"],
        [
            [
                k,
                f"{r['volumes_per_s']:.2f}"
                + (f" ({r['first_epoch_volumes_per_s']:.1f})" if "first_epoch_volumes_per_s" in r else ""),
                int(r["cores"]),
                f"{r['per_core_volumes_per_s']:.2f}",
                f"{r['volumes_per_cpu_s']:.2f}",
                f"{1e3 / r['volumes_per_cpu_s']:.1f}"
                + (
                    f" ({r['workers_cpu_ms_per_volume']:.1f} + {r['main_cpu_ms_per_volume']:.1f})"
                    if "main_cpu_ms_per_volume" in r
                    else ""
                ),
            ]
            for k, r in rows.items()
        ],
    )
    ptable = md_table(
        ["step of one read (in-process)", "CPU ms per volume"], [[k, f"{v:.2f}"] for k, v in phases.items()]
    )
    s = summary
    lines = [
        f"# Loader throughput from the user's geometry ({machine})",
        "",
        f"Input: {n_vols} synthetic chest CTs of {scanner512.GEOMETRY} (NIfTI, `synth --profile realistic` pinned to "
        f"that geometry). MONAI runs its transform chain on those files (load, orient, spacing to 3 x 1.5 x 1.5 mm, "
        f"HU window, crop/pad to {list(shape)}); the loader reads the {list(shape)} int16 volumes tte_scale's per-scan "
        f"path made of the same files ({raw / 2**20:.1f} MiB raw, blosc-zstd3-shuffle ratio {ratio['default']:.2f}; "
        f"rows marked {ALT.strip()}: the same volumes as blosc-zstd3-bitshuffle, ratio {ratio['bitshuffle']:.2f}), "
        f"{n_samples} samples per epoch, batch {args.batch}; the decode limit is numcodecs decoding the same bytes "
        f"on one core. Load average at start: {result['meta']['load_avg_1m']} on {result['meta']['cpu_count']} cores "
        "(shared with other jobs); same run, side by side. Loader volumes/s are steady state (whole epoch incl. "
        "worker start-up in brackets), medians of alternated rounds of the default-codec rows; vol per CPU-s "
        "counts every process of the pipeline. Zarr label arrays in chunks of 1024 rows, as the sharding job "
        "writes them.",
        "",
        *table,
        "",
        f"- Per core, best loader vs MONAI from 512x512 input: {s['vs_monai_per_core_wall']:.0f}x{_fig('vs_monai_per_core_wall')} "
        f"by wall clock ({best_wall}), {s['vs_monai_per_cpu_s']:.0f}x{_fig('vs_monai_per_cpu_s')} per CPU-second "
        f"({best_cpu}); target 150x.",
        f"- Fraction of the decode limit: {100 * s['fraction_of_decode_limit_cpu']:.0f}%"
        f"{_fig('fraction_of_decode_limit_cpu', 100)} per CPU-second, "
        f"{100 * s['fraction_of_decode_limit_wall']:.0f}%{_fig('fraction_of_decode_limit_wall', 100)} per core by "
        "wall clock; target 85% per CPU-second.",
        f"- Zarr / WebDataset time per volume, 1 worker: {s['zarr_over_wds_time_1_worker_cpu']:.2f}x"
        f"{_fig('zarr_over_wds_time_1_worker_cpu')} per CPU-second, {s['zarr_over_wds_time_1_worker_wall']:.2f}x"
        f"{_fig('zarr_over_wds_time_1_worker_wall')} by wall clock; target <= 1.2x.",
        f"- The decode limit itself is {s['decode_limit_vs_monai_per_cpu_s']:.0f}x"
        f"{_fig('decode_limit_vs_monai_per_cpu_s')} MONAI per CPU-second with the default codec: 150x needs a "
        "codec that decodes faster. With bit shuffle (same run): "
        f"{s['bitshuffle']['vs_monai_per_cpu_s']:.0f}x{_fig('bitshuffle.vs_monai_per_cpu_s')} MONAI per CPU-second "
        f"({s['bitshuffle']['best_per_cpu_s']}), "
        f"{100 * s['bitshuffle']['fraction_of_decode_limit_cpu']:.0f}%"
        f"{_fig('bitshuffle.fraction_of_decode_limit_cpu', 100)} of its decode limit, which is "
        f"{s['bitshuffle']['decode_limit_vs_monai_per_cpu_s']:.0f}x{_fig('bitshuffle.decode_limit_vs_monai_per_cpu_s')}"
        f" MONAI; Zarr / WebDataset {s['bitshuffle']['zarr_over_wds_time_1_worker_cpu']:.2f}x"
        f"{_fig('bitshuffle.zarr_over_wds_time_1_worker_cpu')}; compression ratio "
        f"{ratio['bitshuffle']:.2f}{_fig('bitshuffle.compression_ratio')} instead of {ratio['default']:.2f}.",
        "",
        "## Where a read's time goes",
        "",
        f"CPU ms per volume in one process, {n_vols} volumes x 3 interleaved rounds. The whole reads include "
        "the steps above them plus the header, label and manifest checks.",
        "",
        *ptable,
        "",
        f"The Zarr read before this change (zarr's array API, then a copy into the slot) cost "
        f"{s['zarr_read_before_over_after_cpu']:.2f}x{_fig('zarr_read_before_over_after_cpu')} the direct chunk "
        "read, same run.",
    ]
    js, md = write_results(Path(args.out), "loader_512", result, "\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {js} and {md}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="number of distinct volumes")
    ap.add_argument("--repeat", type=int, default=8, help="the shards hold each volume this many times")
    ap.add_argument("--shape", type=int, nargs=3, default=[96, 128, 128], help="canonical volume shape D H W")
    ap.add_argument("--batch", type=int, default=4, help="batch size of our loader")
    ap.add_argument(
        "--input",
        choices=["phantom", "scanner512"],
        default="phantom",
        help="phantom: NIfTI phantoms at 0.75/1.25 mm of a --shape canonical volume (loader.json); scanner512: "
        "512x512 slices at 0.7/1.25 mm from a cached realistic synth cohort, 160x224x224 volumes (loader_512.json)",
    )
    ap.add_argument("--cohort", default=None, help="scanner512: cohort folder (default runs/bench_cache/scanner512)")
    ap.add_argument("--rounds", type=int, default=2, help="scanner512: alternated rounds of the loader rows (medians)")
    add_output_args(ap)
    args = ap.parse_args(argv)
    if args.input == "scanner512":
        if args.n == 32:
            args.n = 10
        return run_scanner512(args)

    import numcodecs

    write_shards = _test_writer().write_shards

    from tte_scale.data.tarindex import index_tar

    shape = tuple(args.shape)
    tmp = Path(tempfile.mkdtemp(prefix="bench_loader_"))
    try:
        native, canon, vols = make_inputs(tmp, args.n, shape)
        codec = numcodecs.Zstd(level=3)
        # epochs long enough for a steady state after the batches prefetched at start-up (>= 24 steps)
        repeat = max(args.repeat, -(-24 * args.batch // args.n))
        n_samples = args.n * repeat
        write_shards(
            tmp / "shards",
            n=n_samples,
            shape=shape,
            volumes=vols * repeat,
            samples_per_shard=16,
            codec=codec,
            zarr_shard_rows=16,
            K=64,
            T=8,
        )
        blobs: list[bytes] = []
        for tar in sorted((tmp / "shards" / "wds").glob("*.tar")):
            data = tar.read_bytes()
            blobs += [data[o : o + s] for m in index_tar(str(tar)).members.values() for o, s in [m["volume.bin"]]]
        blobs = blobs[: args.n]
        raw = int(np.prod(shape)) * 2
        ratio = raw * len(blobs) / sum(len(b) for b in blobs)

        rows: dict[str, dict] = {}
        rows[DECODE_ROW] = bench_decode(blobs, codec, shape)
        rows[MONAI_ROW] = bench_monai(native, shape)
        rows[MONAI_CANON_ROW] = bench_monai(canon, shape)
        for fmt in ("wds", "zarr"):
            for w in (1, 2):
                rows[f"tte_scale loader, {fmt}, {w} worker{'s' if w > 1 else ''}"] = bench_ours(
                    str(tmp / "shards"), fmt, w, args.batch
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    for r in rows.values():
        r["per_core_volumes_per_s"] = r["volumes_per_s"] / r["cores"]
    ours = {k: r for k, r in rows.items() if k.startswith("tte_scale loader")}
    best_wall = max(ours, key=lambda k: ours[k]["per_core_volumes_per_s"])
    best_cpu = max(ours, key=lambda k: ours[k]["volumes_per_cpu_s"])
    limit, monai, canon_m = rows[DECODE_ROW], rows[MONAI_ROW], rows[MONAI_CANON_ROW]
    summary = {
        "best_per_core_wall": best_wall,
        "best_per_cpu_s": best_cpu,
        "vs_monai_per_core_wall": ours[best_wall]["per_core_volumes_per_s"] / monai["per_core_volumes_per_s"],
        "vs_monai_per_cpu_s": ours[best_cpu]["volumes_per_cpu_s"] / monai["volumes_per_cpu_s"],
        "vs_monai_canonical_per_core_wall": ours[best_wall]["per_core_volumes_per_s"]
        / canon_m["per_core_volumes_per_s"],
        "vs_monai_canonical_per_cpu_s": ours[best_cpu]["volumes_per_cpu_s"] / canon_m["volumes_per_cpu_s"],
        "fraction_of_decode_limit_wall": ours[best_wall]["per_core_volumes_per_s"] / limit["volumes_per_s"],
        "fraction_of_decode_limit_cpu": ours[best_cpu]["volumes_per_cpu_s"] / limit["volumes_per_cpu_s"],
        "decode_limit_vs_monai_per_cpu_s": limit["volumes_per_cpu_s"] / monai["volumes_per_cpu_s"],
        "decode_limit_vs_monai_canonical_per_cpu_s": limit["volumes_per_cpu_s"] / canon_m["volumes_per_cpu_s"],
        "targets": {"vs_monai_per_core": 20.0, "fraction_of_decode_limit": 0.70},
    }
    machine = args.machine or machine_name()
    result = {
        "meta": machine_info(),
        "machine": machine,
        "n_volumes": args.n,
        "n_samples": n_samples,
        "shape": list(shape),
        "volume_mb": raw / 2**20,
        "compression_ratio": ratio,
        "batch_size": args.batch,
        "rows": rows,
        "volumes_per_s": {k: r["volumes_per_s"] for k, r in rows.items()},
        "summary": summary,
        "note": "page-cache-hot files; loader rows are steady state after the batches prefetched at start-up",
    }
    table = md_table(
        ["pipeline", "volumes/s", "cores", "per core (vol/s)", "vol per CPU-s", "MiB/s (raw)"],
        [
            [
                k,
                f"{r['volumes_per_s']:.1f}"
                + (f" ({r['first_epoch_volumes_per_s']:.1f})" if "first_epoch_volumes_per_s" in r else ""),
                r["cores"],
                f"{r['per_core_volumes_per_s']:.1f}",
                f"{r['volumes_per_cpu_s']:.1f}",
                f"{r['volumes_per_s'] * raw / 2**20:.0f}",
            ]
            for k, r in rows.items()
        ],
    )
    s = summary
    lines = [
        f"# Loader throughput ({machine})",
        "",
        f"{args.n} volumes {list(shape)} int16 ({raw / 2**20:.1f} MiB raw, zstd-3 ratio {ratio:.2f}), batch "
        f"{args.batch}; loader epochs of {n_samples} samples, steady state (whole epoch incl. worker start-up in "
        f"brackets). Load average at start: {result['meta']['load_avg_1m']} on {result['meta']['cpu_count']} "
        "cores; same run, side by side.",
        "",
        *table,
        "",
        f"Best loader per core: {s['vs_monai_per_core_wall']:.1f}x MONAI (scanner geometry) per core by wall clock "
        f"({best_wall}), {s['vs_monai_per_cpu_s']:.1f}x per CPU-second ({best_cpu}); target 20x.",
        f"Against MONAI on already-canonical files: {s['vs_monai_canonical_per_core_wall']:.1f}x per core, "
        f"{s['vs_monai_canonical_per_cpu_s']:.1f}x per CPU-second; the decode limit itself is "
        f"{s['decode_limit_vs_monai_canonical_per_cpu_s']:.1f}x that baseline, so 20x is out of reach there "
        "for any loader that decodes these bytes.",
        f"Fraction of the decode limit: {100 * s['fraction_of_decode_limit_wall']:.0f}% per core by wall clock, "
        f"{100 * s['fraction_of_decode_limit_cpu']:.0f}% per CPU-second; target 70%.",
    ]
    js, md = write_results(Path(args.out), "loader", result, "\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {js} and {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
