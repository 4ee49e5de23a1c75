"""`tte-scale embed` as one library call: an exported encoder over a shards folder -> Parquet.

``run_embed(EmbedJob(...))`` writes ``out/embeddings.parquet`` (one row per readable scan:
scan_id, subject_id, split, vector as a fixed-size list of float32), ``out/embed.json`` (the
metadata record: encoder fingerprint, shards build id, HU window, dtype, ...; counts; the scans
that could not be read) and, on the way, ``out/parts/part-NNNNN.parquet``.

Ranks: under ``torchrun`` / ``tte-scale launch local --nproc N -- embed ...`` / SLURM (RANK and
WORLD_SIZE in the environment) every rank loads the encoder and takes the parts ``p`` with
``p % world_size == rank`` (:mod:`tte_scale.embed.parts`); ranks talk over torch.distributed
(gloo: only small Python objects travel). Rank 0 alone creates and checks the output folder,
then merges: it checks every part again and that every scan of the plan is in exactly one part,
as a row or as an unreadable scan, before it writes ``embeddings.parquet``.

Re-runs (the three rules of docs/contributing.md):
* ``--out`` is refused unless it is absent, empty, or written by ``tte-scale embed`` (owner
  marker) and holds no input; one written for another encoder, shards build, HU window, dtype,
  batch or part size is refused too (the line says what differs) unless ``--overwrite``, which
  deletes only a folder carrying embed's marker.
* A part file is kept only when :func:`tte_scale.embed.parts.check_part` accepts it (same key,
  same block of scans, finite vectors); any other part is reported and computed again.
* Non-finite vectors are refused, naming the scan; more than ``max_bad_fraction`` unreadable
  scans in a split stop the run (the training loader's limit), fewer are listed in embed.json.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tte_scale.config import check
from tte_scale.errors import InputError, TteScaleError
from tte_scale.outputs import check_not_input, check_replaceable, mark, read_marker, remove_own

__all__ = ["EmbedJob", "run_embed", "embed_key", "COMMAND", "RECORD_VERSION"]

COMMAND = "embed"
RECORD_VERSION = 1
"""Bump when what a vector depends on, or the files' layout, changes (old parts are then recomputed)."""
DIST_TIMEOUT = datetime.timedelta(hours=12)
"""How long a rank waits for the others at the end (the slowest rank's share of the scans)."""


@dataclass(kw_only=True, slots=True)
class EmbedJob:
    """One embedding run."""

    encoder: str
    """Exported encoder folder (or its model.safetensors) written by `tte-scale train`."""
    shards: str
    """Shards folder (local path or fsspec URL) written by `tte-scale shard`."""
    out: str
    """Output folder: embeddings.parquet, embed.json, parts/."""
    splits: tuple[str, ...] | None = None
    """Splits to embed, in this order; None: every split with `ok` scans, in manifest order."""
    format: str = "auto"
    """wds, zarr, or auto (the Zarr copy when the build wrote one, else WebDataset)."""
    batch_size: int = 8
    """Volumes per forward pass."""
    part_size: int = 256
    """Scans per part file (the unit of work of a rank and of resuming)."""
    hu_window: tuple[float, float] | None = None
    """HU window for exports that do not store theirs; a different one than stored is refused."""
    device: str = "cpu"
    """Torch device; with several ranks on GPUs each rank uses cuda:LOCAL_RANK."""
    dtype: str = "float32"
    """Compute dtype: float32, or bfloat16 (autocast); vectors are stored as float32."""
    max_bad_fraction: float | None = None
    """Stop when more than this fraction of a split's scans cannot be read; None: the loader's."""
    overwrite: bool = False
    """Replace an embed output folder computed for another key (only one carrying embed's marker)."""
    progress_every_s: float = 10.0
    """Seconds between progress lines of a rank (and one line per finished part)."""
    threads: int | None = None
    """Intra-op CPU threads per rank (torch.set_num_threads); None: torch's default (OMP_NUM_THREADS,
    which torchrun sets to 1, else one per core). On shared cores 1 per rank was 13x faster than 2
    for the tiny test encoder (0.9 s vs 12 s for 160 scans, dev CPU under load)."""

    def __post_init__(self) -> None:
        from tte_scale.embed.scans import COMPUTE_DTYPES, FORMATS

        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.part_size >= 1, "part_size", f"must be >= 1, got {self.part_size}")
        check(self.format in FORMATS, "format", f"must be one of {', '.join(FORMATS)}, got {self.format!r}")
        check(self.dtype in COMPUTE_DTYPES, "dtype", f"must be one of {', '.join(COMPUTE_DTYPES)}, got {self.dtype!r}")
        check(self.progress_every_s > 0, "progress_every_s", f"must be > 0, got {self.progress_every_s}")
        if self.threads is not None:
            check(self.threads >= 1, "threads", f"must be >= 1, got {self.threads}")
        if self.splits is not None:
            check(len(self.splits) > 0, "splits", "must name at least one split")
            check(len(set(self.splits)) == len(self.splits), "splits", f"names repeat: {list(self.splits)}")
        if self.max_bad_fraction is not None:
            check(
                0.0 <= self.max_bad_fraction <= 1.0,
                "max_bad_fraction",
                f"must be in [0, 1], got {self.max_bad_fraction}",
            )


@dataclass(frozen=True)
class Outcome:
    """What the run wrote (rank 0), for the CLI's last lines."""

    path: Path
    record: dict
    text: str


def embed_key(job: EmbedJob, encoder, hu_window, fmt: str, splits: list[str], device_type: str) -> dict:
    """Everything the vectors depend on: the metadata record of every file the run writes."""
    from tte_scale.data.storage import join
    from tte_scale.embed.digests import file_digest, weights_digest

    cfg = encoder.cfg
    manifest = join(job.shards, "manifest")
    return {
        "version": RECORD_VERSION,
        "encoder": {
            "class": type(encoder).__name__,
            "architecture": cfg.to_json(),
            "weights_sha256": weights_digest(encoder),
            "embed_dim": int(cfg.embed_dim),
        },
        "shards": {
            "build_id": file_digest(join(manifest, "samples.parquet"), join(manifest, "shards.parquet")),
            "format": fmt,
            "splits": list(splits),
        },
        "hu_window": [float(hu_window[0]), float(hu_window[1])],
        "normalizer": "tte_scale.data.hu_to_float",
        "dtype": job.dtype,
        "vector_dtype": "float32",
        "device_type": device_type,
        "batch_size": job.batch_size,
        "part_size": job.part_size,
    }


def _digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append(f"{prefix}{k}")
    return out


def _prepare_out(job: EmbedJob, key: dict) -> str:
    """Rank 0: make ``out`` ours for ``key`` (see the module doc); returns what was found there."""
    out = Path(job.out)
    check_not_input(out, [job.encoder, job.shards])
    check_replaceable(out, COMMAND, [job.encoder, job.shards])  # absent, empty, or embed's
    found = "new"
    owner = read_marker(out) if out.exists() else None
    if owner is not None:
        old = owner.get("key")
        if old == key:
            found = "resumed"
        elif job.overwrite:
            remove_own(out, COMMAND, [job.encoder, job.shards])
            found = "replaced"
        else:
            what = ", ".join(_differences(old, key)) if isinstance(old, dict) else "key not recorded"
            raise InputError(
                f"--out {out}: holds embeddings computed for another encoder, input or setting (differs in: "
                f"{what}); pass --overwrite to replace them, or choose another folder"
            )
    (out / "parts").mkdir(parents=True, exist_ok=True)
    mark(out, COMMAND, key=key)
    # Temporary files of a killed run are ours (the folder carries our marker) and never complete.
    for tmp in (out / "parts").glob("part-*.parquet.tmp*"):
        tmp.unlink()
    return found


class _Comm:
    """The few collectives the run needs; one process without torch.distributed is world 1."""

    def __init__(self):
        import torch.distributed as dist

        from tte_scale.train.dist import dist_env

        env = dist_env()
        self.rank, self.world, self.local_rank = env.rank, env.world_size, env.local_rank
        self._dist = dist if self.world > 1 else None
        if self._dist is not None and not dist.is_initialized():
            dist.init_process_group("gloo", timeout=DIST_TIMEOUT)

    def broadcast(self, obj):
        if self._dist is None:
            return obj
        box = [obj]
        self._dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        if self._dist is None:
            return [obj]
        box = [None] * self.world
        self._dist.all_gather_object(box, obj)
        return box

    def close(self) -> None:
        if self._dist is not None and self._dist.is_initialized():
            self._dist.destroy_process_group()


def _agreed(comm: _Comm, fn):
    """Run ``fn`` on rank 0 and give every rank its result, or raise its error on every rank."""
    if comm.world == 1:
        return fn()
    result = None
    if comm.rank == 0:
        try:
            result = ("ok", fn())
        except TteScaleError as exc:
            result = ("error", str(exc))
        except Exception as exc:  # any rank-0 failure must stop the others too, not hang them
            result = ("crash", f"{type(exc).__name__}: {exc}")
    status, value = comm.broadcast(result)
    if status != "ok":
        raise (InputError if status == "error" else TteScaleError)(value)
    return value


def _all_ok(comm: _Comm, fn):
    """Run ``fn`` on every rank; if it fails on any, raise the first failure's message on all."""
    if comm.world == 1:
        return [fn()]
    try:
        mine = ("ok", fn())
    except TteScaleError as exc:
        mine = ("error", str(exc))
    except Exception as exc:
        mine = ("crash", f"{type(exc).__name__}: {exc}")
    results = comm.gather(mine)
    for r, (status, value) in enumerate(results):
        if status != "ok":
            where = f"rank {r}: " if comm.world > 1 else ""
            raise (InputError if status == "error" else TteScaleError)(where + value)
    return [v for _, v in results]


def _say(comm: _Comm, text: str) -> None:
    tag = f"embed [rank {comm.rank}/{comm.world}]" if comm.world > 1 else "embed"
    print(f"{tag}: {text}", file=sys.stderr, flush=True)


def run_embed(job: EmbedJob) -> Outcome | None:
    """Embed every readable `ok` scan of the shards; rank 0 returns the Outcome, others None."""
    import torch

    if job.threads is not None:
        torch.set_num_threads(job.threads)
    comm = _Comm()
    try:
        return _run(job, comm, torch)
    finally:
        comm.close()


def _run(job: EmbedJob, comm: _Comm, torch) -> Outcome | None:
    from tte_scale.data.split_index import read_manifest_table
    from tte_scale.data.storage import join
    from tte_scale.embed.encoder import load_export
    from tte_scale.embed.parts import plan_parts
    from tte_scale.embed.scans import resolve_format, split_scans

    device = job.device
    if comm.world > 1 and torch.device(device).type == "cuda" and torch.device(device).index is None:
        device = f"cuda:{comm.local_rank}"

    def inputs():
        fmt = resolve_format(job.shards, job.format)
        if job.splits is not None:
            splits = list(job.splits)
        else:
            t = read_manifest_table(join(job.shards, "manifest", "samples.parquet"), ["split", "status"]).to_pydict()
            splits = list(dict.fromkeys(s for s, st in zip(t["split"], t["status"]) if st == "ok"))
        scans = {s: split_scans(job.shards, s, fmt) for s in splits}
        encoder, window = load_export(job.encoder, job.hu_window)
        return fmt, scans, encoder, window

    # Every rank reads the same inputs; a bad one is refused on every rank with the same line.
    fmt, scans, encoder, window = _all_ok(comm, inputs)[comm.rank]
    key = embed_key(job, encoder, window, fmt, list(scans), torch.device(device).type)
    found = _agreed(comm, lambda: _prepare_out(job, key))
    parts = plan_parts({s: v.scan_ids for s, v in scans.items()}, job.part_size)
    subjects = {sid: int(sub) for v in scans.values() for sid, sub in zip(v.scan_ids, v.subject_ids.tolist())}
    mine = [p for p in parts if p.number % comm.world == comm.rank]
    total = sum(p.stop - p.start for p in mine)
    if comm.rank == 0:
        _say(
            comm,
            f"{found} output {job.out}: {sum(len(v) for v in scans.values())} scans in {len(parts)} parts "
            f"({', '.join(f'{s} {len(v)}' for s, v in scans.items())}) from {fmt}, {comm.world} rank(s)",
        )
    _say(comm, f"{len(mine)} parts, {total} scans")
    encoder = encoder.to(device).eval()
    stats = _all_ok(comm, lambda: _embed_parts(job, comm, encoder, window, device, key, scans, mine, subjects))
    if comm.rank != 0:
        _agreed(comm, lambda: None)
        return None
    outcome = _agreed(comm, lambda: _merge(job, key, parts, subjects, stats))
    return outcome


def _embed_parts(job, comm, encoder, window, device, key, scans, mine, subjects) -> dict:
    """This rank's parts: keep each one that checks, compute the others. Returns counts."""
    from tte_scale.embed.parts import check_part, part_path, write_part
    from tte_scale.embed.scans import embed_scans, open_reader

    out = Path(job.out)
    dim = key["encoder"]["embed_dim"]
    total = sum(p.stop - p.start for p in mine)
    done = kept = computed = 0
    start = last = time.monotonic()
    rate_scans, rate_s = 0, 0.0
    readers: dict[str, object] = {}  # one per split, kept across this rank's parts
    try:
        for part in mine:
            path = part_path(out, part.number)
            if path.exists():
                why = check_part(path, part, key, dim, subjects)
                if why is None:
                    kept += 1
                    done += part.stop - part.start
                    _say(comm, f"part {part.number} kept (checked); {done}/{total} scans")
                    continue
                _say(comm, f"{path}: {why}; computing it again")
            t0 = time.monotonic()
            if part.split not in readers:
                readers[part.split] = open_reader(scans[part.split])
            ids = scans[part.split].scan_ids
            bad: list[dict] = []
            got_ids, vecs = [], []
            for got, feats in embed_scans(
                encoder,
                scans[part.split],
                range(part.start, part.stop),
                batch_size=job.batch_size,
                hu_window=window,
                device=device,
                dtype=job.dtype,
                bad=bad,
                reader=readers[part.split],
            ):
                batch_ids = [ids[i] for i in got]
                finite = np.isfinite(feats).all(axis=1)
                if not finite.all():
                    raise TteScaleError(
                        f"non-finite embedding of scan {batch_ids[int(np.argmin(finite))]} (split {part.split}); "
                        "the encoder's weights or the volume are not usable (nothing written for this part)"
                    )
                got_ids += batch_ids
                vecs.append(feats)
                if time.monotonic() - last >= job.progress_every_s:
                    last = time.monotonic()
                    n = done + len(got_ids) + len(bad)
                    _say(comm, _progress(n, total, rate_scans + len(got_ids), rate_s + last - t0))
            vectors = np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32)
            write_part(out, part, key, [subjects[s] for s in got_ids], vectors, bad)
            computed += 1
            done += part.stop - part.start
            rate_scans += len(got_ids)
            rate_s += time.monotonic() - t0
            last = time.monotonic()
            _say(comm, f"part {part.number} written; " + _progress(done, total, rate_scans, rate_s))
    finally:
        for reader in readers.values():
            reader.close()
    return {
        "rank": comm.rank,
        "parts_kept": kept,
        "parts_computed": computed,
        "scans_embedded": rate_scans,
        "embed_s": round(rate_s, 3),
        "wall_s": round(time.monotonic() - start, 3),
    }


def _progress(done: int, total: int, scans: int, seconds: float) -> str:
    rate = scans / seconds if seconds > 0 else 0.0
    eta = f", ETA {(total - done) / rate:.0f} s" if rate > 0 and done < total else ""
    return f"{done}/{total} scans, {rate:.2f} scans/s{eta}"


def _merge(job: EmbedJob, key: dict, parts, subjects: dict, stats: list[dict]) -> Outcome:
    """Rank 0: check every part again, every scan exactly once, the bad fraction; write the result."""
    import pyarrow as pa

    from tte_scale.data import DataIntegrityError, LoaderConfig
    from tte_scale.embed.parts import META_KEY, check_part, part_path, read_part, write_atomic

    out = Path(job.out)
    dim = key["encoder"]["embed_dim"]
    tables, excluded, seen = [], [], {}
    for part in parts:
        path = part_path(out, part.number)
        why = check_part(path, part, key, dim, subjects) if path.exists() else "missing"
        if why is not None:
            raise TteScaleError(f"{path}: {why} after every rank finished; run the same command again")
        table, record = read_part(path)
        tables.append(table.replace_schema_metadata(None))
        excluded += record["excluded"]
        for sid in table.column("scan_id").to_pylist() + [e["scan_id"] for e in record["excluded"]]:
            seen[(part.split, sid)] = seen.get((part.split, sid), 0) + 1
    planned = {(p.split, s) for p in parts for s in p.scan_ids}
    twice = sorted(k for k, n in seen.items() if n > 1)
    lost = sorted(planned - set(seen))
    if twice or lost or len(seen) != len(planned):
        raise TteScaleError(
            f"{out}/parts: scans not present exactly once (twice: {twice[:5]}, missing: {lost[:5]}); "
            "run the same command again"
        )
    limit = LoaderConfig().max_bad_fraction if job.max_bad_fraction is None else job.max_bad_fraction
    per_split = {s: sum(1 for p in parts if p.split == s for _ in p.scan_ids) for s in key["shards"]["splits"]}
    for split, n in per_split.items():
        bad = [e for e in excluded if e["split"] == split]
        if len(bad) > limit * n:
            first = "; ".join(f"{b['scan_id']} (row {b['row']}, {b['where']}: {b['reason']})" for b in bad[:10])
            raise DataIntegrityError(
                f"{len(bad)} corrupt or missing samples of split {split!r} under {job.shards}, more than "
                f"max_bad_fraction={limit} of {n}; first ones: {first} (the readable scans' parts are kept)"
            )
    table = pa.concat_tables(tables)
    counts = {
        "scans_planned": len(planned),
        "scans_embedded": table.num_rows,
        "scans_excluded": len(excluded),
        "per_split": {s: n - sum(e["split"] == s for e in excluded) for s, n in per_split.items()},
    }
    record = {
        **key,
        "encoder": {**key["encoder"], "path": str(job.encoder)},
        "shards": {**key["shards"], "root": str(job.shards)},
        "counts": counts,
        "excluded": excluded,
    }
    path = out / "embeddings.parquet"
    write_atomic(table.replace_schema_metadata({META_KEY: json.dumps(record, sort_keys=True)}), path)
    tmp = out / "embed.json.tmp"
    tmp.write_text(json.dumps({**record, "ranks": stats}, indent=1) + "\n")
    tmp.replace(out / "embed.json")
    kept = sum(s["parts_kept"] for s in stats)
    scans = sum(s["scans_embedded"] for s in stats)
    seconds = max((s["embed_s"] for s in stats), default=0.0)
    text = (
        f"wrote {path}: {table.num_rows} scans x {dim} ({', '.join(f'{s} {n}' for s, n in counts['per_split'].items())})"
        + (f", {len(excluded)} unreadable scans left out (embed.json lists them)" if excluded else "")
        + f"; {len(parts) - kept} parts computed, {kept} kept"
        + (f"; {scans} scans in {seconds:.1f} s on the slowest of {len(stats)} rank(s)" if scans else "")
    )
    return Outcome(path=path, record=record, text=text)
