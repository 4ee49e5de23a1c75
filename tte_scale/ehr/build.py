"""`tte-scale labels`: two streaming passes over the MEDS shards, one shard in memory at a time.

Pass 1 (vocabulary): end of record per subject, exclusions, and for each code the number of
*train* scans after which it occurs (with ontology closure). The K best codes become tasks.
Pass 2 (labels): for each shard, dense ``[rows, K]`` first-occurrence times (row blocks bound
the memory), written straight into ``tte.zarr``; bench labels; the train event-time histogram
that fixes the bins. Everything goes to ``OUT.partial`` and is renamed at the end, so a killed
run never leaves a half-valid labels folder.

Legend: E events, R rows (labelled scans), K tasks, T benchmark tasks, S subjects of a shard.
Semantics (DESIGN.md): end of record = the subject's last timed event (any code); an event is
in a scan's future iff its time is strictly after the prediction time; static rows (null time)
are never future, but count as prior for ``exclude_prior``.
"""

from __future__ import annotations

import json
import shutil
import time as _time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tte_scale.config import to_dict
from tte_scale.ehr import core
from tte_scale.ehr.config import LabelsConfig, TaskSet
from tte_scale.ehr.meds import Scans, ShardEvents, open_meds, read_parents, read_scans, read_shard, read_splits
from tte_scale.ehr.store import (
    BENCH_SCHEMA, EXCLUDED_SCHEMA, FORMAT_VERSION, ROWS_SCHEMA, bench_table, open_tte_arrays, write_vocab,
)
from tte_scale.ehr.summary import summarize
from tte_scale.ehr.vocab import CodeRegistry, Ontology
from tte_scale.errors import InputError

__all__ = ["build_labels"]


@dataclass
class _ShardPlan:
    path: Path
    scan_idx: np.ndarray
    """int64 [R] labelled scans of this shard (indices into Scans), in row order."""
    subj_R: np.ndarray
    """int64 [R] subject index within the shard."""
    eor_R: np.ndarray
    """int64 [R] end of record (us)."""
    train_R: np.ndarray
    """bool [R]."""
    split_R: np.ndarray
    """object [R] split names."""
    offset: int = 0


@dataclass
class _Stats:
    events: int = 0
    static_events: int = 0
    subjects: int = 0
    excluded: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)


def _progress(items, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="file", disable=not enabled, dynamic_ncols=True)


def _future_events(ev: ShardEvents, rows: core.RowIndex, pred_R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(event positions, row_before) of the timed events after some row's prediction time."""
    has_rows = rows.end_S > rows.start_S
    first_pred_S = np.full(len(has_rows), core.INT64_MAX, np.int64)
    first_pred_S[has_rows] = pred_R[rows.start_S[has_rows]]
    # Cheap prefilter: most events are before the subject's first scan or of subjects without scans.
    pos = np.flatnonzero(ev.timed_E & (ev.time_E > first_pred_S[ev.subj_E]))
    r = core.row_before(ev.subj_E[pos], ev.time_E[pos], rows, pred_R)
    return pos, r


def _blocks_events(r_E: np.ndarray, bounds: list[tuple[int, int]]):
    """Yield (b0, b1, event selector) per row block; one stable radix-style sort, no Python loop per event."""
    if len(bounds) == 1:
        yield bounds[0][0], bounds[0][1], slice(None)
        return
    starts = np.array([b[0] for b in bounds])
    blk = np.searchsorted(starts, r_E, side="right") - 1
    order = np.argsort(blk.astype(np.uint16 if len(bounds) < 65536 else np.int64), kind="stable")
    cuts = np.searchsorted(blk[order], np.arange(len(bounds) + 1), side="left")
    for i, (b0, b1) in enumerate(bounds):
        yield b0, b1, order[cuts[i] : cuts[i + 1]]


def _sub_rows(rows: core.RowIndex, b0: int, b1: int) -> core.RowIndex:
    subj = rows.subj_R[b0:b1]
    return core.RowIndex(subj - subj[0], int(subj[-1] - subj[0] + 1)) if len(subj) else core.RowIndex(subj, 0)


def _pass_vocab(ds, scans: Scans, splits: dict, ontology: Ontology, cfg: LabelsConfig, stats: _Stats, progress: bool):
    """Pass 1: plans per shard, exclusions, train counts per code."""
    registry = CodeRegistry()
    plans: list[_ShardPlan] = []
    excluded: list[tuple[int, str]] = []
    seen: list[np.ndarray] = []
    seen_files: list[Path] = []
    num_train_rows = 0
    bar = _progress(ds.data_files, "labels 1/2 vocabulary", progress)
    for path in bar:
        ev = read_shard(path)
        stats.events += ev.num_events
        stats.static_events += int((~ev.timed_E).sum())
        seen.append(ev.subject_ids)
        seen_files.append(path)
        S = len(ev.subject_ids)
        eor_S = np.full(S, core.INT64_MIN, np.int64)
        np.maximum.at(eor_S, ev.subj_E[ev.timed_E], ev.time_E[ev.timed_E])
        # Scans are sorted by subject: each shard subject's scans are one contiguous range.
        lo = np.searchsorted(scans.subject_id, ev.subject_ids, "left")
        cnt = np.searchsorted(scans.subject_id, ev.subject_ids, "right") - lo
        sel = np.repeat(lo, cnt) + np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        subj = np.searchsorted(ev.subject_ids, scans.subject_id[sel])
        eor = eor_S[subj]
        split = np.array([splits.get(int(s)) for s in scans.subject_id[sel]], dtype=object)
        reason = np.full(len(sel), None, dtype=object)
        reason[scans.pred_us[sel] >= eor] = "prediction_time_at_or_after_end_of_record"
        reason[eor == core.INT64_MIN] = "no_timed_events"
        reason[split == None] = "subject_not_in_splits"  # noqa: E711
        bad = reason != None  # noqa: E711
        excluded.extend(zip(sel[bad].tolist(), reason[bad].tolist()))
        ok = ~bad
        plan = _ShardPlan(path, sel[ok], subj[ok], eor[ok], split[ok] == "train", split[ok])
        plans.append(plan)
        # Counting runs on the train rows only: tuning/held_out events cannot influence the vocabulary.
        tr = plan.train_R
        num_train_rows += int(tr.sum())
        if tr.any():
            rows = core.RowIndex(plan.subj_R[tr], S)
            pred_R = scans.pred_us[plan.scan_idx[tr]]
            pos, r = _future_events(ev, rows, pred_R)
            offsets, targets, cols_gid = registry.csr(ev.codes, ontology)
            src, col = core.expand_csr(ev.code_E[pos], offsets, targets)
            r = r[src]
            for b0, b1, sel_e in _blocks_events(r, core.row_blocks(rows, len(cols_gid), cfg.block_cells)):
                D = core.occurs_after(r[sel_e] - b0, col[sel_e], _sub_rows(rows, b0, b1), len(cols_gid))
                registry.counts[cols_gid] += D.sum(axis=0)
        bar.set_postfix(events=stats.events)
    all_seen = np.concatenate(seen) if seen else np.zeros(0, np.int64)
    uniq, first, counts = np.unique(all_seen, return_index=True, return_counts=True)
    if (counts > 1).any():  # checked once at the end (cheap); nothing is written before this
        dup = uniq[counts > 1]
        files = [f for f, ids in zip(seen_files, seen) if np.isin(ids, dup).any()]
        raise InputError(f"{files[-1]}: subjects {dup[:5].tolist()} also appear in {files[0]}; a MEDS subject must live in one file")
    stats.subjects = len(all_seen)
    unknown = np.flatnonzero(~np.isin(scans.subject_id, all_seen))
    excluded.extend((int(i), "unknown_subject") for i in unknown)
    return registry, plans, excluded, num_train_rows


def _code_csr(codes: list[str], columns_of) -> tuple[np.ndarray, np.ndarray]:
    """Shard code dictionary -> column lists (CSR); Python per distinct code, never per event."""
    lists = [columns_of(c) for c in codes]
    offsets = np.zeros(len(lists) + 1, np.int64)
    np.cumsum([len(x) for x in lists], out=offsets[1:])
    return offsets, np.fromiter((j for x in lists for j in x), np.int64, count=int(offsets[-1]))


def _bench_csr(codes: list[str], tasks: TaskSet):
    """Bench task columns of each code (exact match; a code may feed several tasks)."""
    by_code: dict[str, list[int]] = {}
    for j, t in enumerate(tasks.tasks):
        for c in t.codes:
            by_code.setdefault(c, []).append(j)
    return _code_csr(codes, lambda c: by_code.get(c, []))


def _pass_labels(plans, scans, vocab_gid, registry, ontology, tasks: TaskSet, cfg, tmp: Path, progress):
    """Pass 2: fill tte.zarr and bench.parquet shard by shard; returns stats for bins/summary."""
    K, T = len(vocab_gid), len(tasks.tasks)
    N = sum(len(p.scan_idx) for p in plans)
    time_arr, event_arr = open_tte_arrays(tmp / "tte.zarr", N, K, cfg.chunk_rows)
    task_of = {registry.codes[g]: k for k, g in enumerate(vocab_gid)}
    hist = np.zeros(24 * 366, np.int64)
    events_K = np.zeros(K, np.int64)
    train_events_K = np.zeros(K, np.int64)
    horizon = [t.horizon_days for t in tasks.tasks]
    excl_prior = [t.exclude_prior for t in tasks.tasks]
    writer = pq.ParquetWriter(tmp / "bench.parquet", BENCH_SCHEMA)
    buf = np.empty(0, np.int64)  # reused [rows, K] block: fresh 100 MB arrays per block cost page faults
    try:
        for plan in _progress(plans, "labels 2/2 labels", progress):
            if len(plan.scan_idx) == 0:
                continue
            ev = read_shard(plan.path)
            S = len(ev.subject_ids)
            rows = core.RowIndex(plan.subj_R, S)
            pred_R = scans.pred_us[plan.scan_idx]
            pos, r = _future_events(ev, rows, pred_R)
            # Shard codes -> task columns (closure ∩ vocabulary), as CSR.
            toff, ttgt = _code_csr(ev.codes, lambda c: [task_of[a] for a in ontology.closure(c) if a in task_of])
            src, k = core.expand_csr(ev.code_E[pos], toff, ttgt)
            r_k, t_k = r[src], ev.time_E[pos][src]
            for b0, b1, sel in _blocks_events(r_k, core.row_blocks(rows, K, cfg.block_cells)):
                if buf.size < (b1 - b0) * K:
                    buf = np.empty((b1 - b0) * K, np.int64)
                M = core.first_after(r_k[sel] - b0, k[sel], t_k[sel], _sub_rows(rows, b0, b1), K, out=buf)
                # Dense work stays int64-min + compare; times are computed for event cells only.
                ri, ki = np.nonzero(M != core.INT64_MAX)
                dt_ev = M[ri, ki] - pred_R[b0 + ri]
                time_RK = np.empty((b1 - b0, K), np.float32)
                time_RK[:] = ((plan.eor_R[b0:b1] - pred_R[b0:b1]) / core.US_PER_DAY).astype(np.float32)[:, None]
                time_RK[ri, ki] = (dt_ev / core.US_PER_DAY).astype(np.float32)
                ev_RK = np.zeros((b1 - b0, K), bool)
                ev_RK[ri, ki] = True
                a0 = plan.offset + b0
                time_arr[a0 : a0 + (b1 - b0)] = time_RK
                event_arr[a0 : a0 + (b1 - b0)] = ev_RK
                del time_RK, ev_RK
                events_K += np.bincount(ki, minlength=K)
                tr = plan.train_R[b0 + ri]
                train_events_K += np.bincount(ki[tr], minlength=K)
                hist = core.hour_histogram_add(hist, dt_ev[tr])
            # Bench tasks: exact code sets, all timed events for "first after", static rows as prior.
            boff, btgt = _bench_csr(ev.codes, tasks)
            bsrc, bk = core.expand_csr(ev.code_E[pos], boff, btgt)
            first_RT = core.first_after(r[bsrc], bk, ev.time_E[pos][bsrc], rows, T)
            asrc, ak = core.expand_csr(ev.code_E, boff, btgt)
            ever_ST = np.full((S, T), core.INT64_MAX, np.int64)
            t_any = np.where(ev.timed_E[asrc], ev.time_E[asrc], core.INT64_MIN)
            np.minimum.at(ever_ST.reshape(-1), ev.subj_E[asrc] * T + ak, t_any)
            lab, days, bev, bexc = core.bench_labels(first_RT, ever_ST[plan.subj_R], pred_R, plan.eor_R, horizon, excl_prior)
            writer.write_table(bench_table(scans.scan_id[plan.scan_idx], scans.subject_id[plan.scan_idx], plan.split_R, tasks.names, lab, days, bev, bexc))
    finally:
        writer.close()
    return hist, events_K, train_events_K


def build_labels(meds: str | Path, scans_path: str | Path, out: str | Path, cfg: LabelsConfig, tasks: TaskSet, *, overwrite: bool = False, progress: bool = True) -> dict:
    """Build the labels folder ``out`` (docs/formats.md) and return the run summary."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"{out}: labels folder exists; pass --overwrite to replace it")
    ds = open_meds(meds)
    scans = read_scans(scans_path)
    splits = read_splits(ds)
    ontology = Ontology(read_parents(ds), enabled=cfg.ontology)
    stats = _Stats()
    t0 = _time.perf_counter()
    registry, plans, excluded, num_train_rows = _pass_vocab(ds, scans, splits, ontology, cfg, stats, progress)
    stats.seconds["pass_vocab"] = _time.perf_counter() - t0
    if stats.events == 0:
        raise InputError(f"{ds.root / 'data'}: empty cohort: the event files hold no rows")
    offset = 0
    for p in plans:
        p.offset = offset
        offset += len(p.scan_idx)
    reasons = {}
    for _, why in excluded:
        reasons[why] = reasons.get(why, 0) + 1
    if offset == 0:
        raise InputError(f"{scans.path}: no scan could be labelled (excluded: {reasons})")
    if num_train_rows == 0:
        raise InputError(f"{scans.path}: no labelled scan of a train-split subject; the task vocabulary needs train scans")
    codes = np.array(registry.codes, dtype=object)
    counts = registry.all_counts()
    pick, scores = core.rank_codes(codes, counts, num_train_rows, cfg.num_tasks, cfg.min_count, cfg.ranking)
    if len(pick) == 0:
        raise InputError(f"{ds.root}: no code occurs after >= {cfg.min_count} train scans; no task can be built")

    tmp = out.parent / f".{out.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)  # left by a killed run: never valid
    tmp.mkdir(parents=True)
    write_vocab(tmp / "vocab.parquet", codes[pick].tolist(), counts[pick], scores)
    t1 = _time.perf_counter()
    hist, events_K, train_events_K = _pass_labels(plans, scans, pick, registry, ontology, tasks, cfg, tmp, progress)
    stats.seconds["pass_labels"] = _time.perf_counter() - t1
    if not np.array_equal(train_events_K, counts[pick]):  # both passes must agree exactly
        raise RuntimeError("internal error: pass 2 train event counts differ from pass 1 counts")
    starts = core.bin_starts_from_histogram(hist, cfg.num_bins)
    _write_tables(tmp, plans, scans, excluded)
    from tte_scale import __version__

    bins = {
        "format_version": FORMAT_VERSION,
        "bin_starts_days": starts,
        "num_bins": len(starts),
        "config": {"labels": to_dict(cfg), "requested_num_bins": cfg.num_bins, "bench": to_dict(tasks), "meds": str(meds), "scans": str(scans_path)},
        "bench_tasks": tasks.names,
        "software": _versions(__version__),
    }
    (tmp / "bins.json").write_text(json.dumps(bins, indent=2))
    follow = np.concatenate([(p.eor_R - scans.pred_us[p.scan_idx]) for p in plans]) / core.US_PER_DAY
    summary = summarize(stats, scans, plans, reasons, num_train_rows, events_K, offset, cfg, starts, follow, tmp)
    (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
    if out.exists():
        old = out.parent / f".{out.name}.old"
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)
    return summary


def _write_tables(tmp: Path, plans, scans: Scans, excluded) -> None:
    idx = np.concatenate([p.scan_idx for p in plans]) if plans else np.zeros(0, np.int64)
    rows = pa.table(
        {
            "scan_id": pa.array(scans.scan_id[idx].tolist(), pa.string()),
            "subject_id": pa.array(scans.subject_id[idx], pa.int64()),
            "split": pa.array(np.concatenate([p.split_R for p in plans]).tolist(), pa.string()),
            "prediction_time": pa.array(scans.pred_us[idx], pa.int64()).cast(pa.timestamp("us")),
            "end_of_record": pa.array(np.concatenate([p.eor_R for p in plans]), pa.int64()).cast(pa.timestamp("us")),
        },
        schema=ROWS_SCHEMA,
    )
    pq.write_table(rows, tmp / "rows.parquet")
    excluded = sorted(excluded)
    ei = np.array([i for i, _ in excluded], np.int64)
    exc = pa.table(
        {
            "scan_id": pa.array(scans.scan_id[ei].tolist(), pa.string()),
            "subject_id": pa.array(scans.subject_id[ei], pa.int64()),
            "prediction_time": pa.array(scans.pred_us[ei], pa.int64()).cast(pa.timestamp("us")),
            "reason": pa.array([w for _, w in excluded], pa.string()),
        },
        schema=EXCLUDED_SCHEMA,
    )
    pq.write_table(exc, tmp / "excluded.parquet")


def _versions(version: str) -> dict:
    import zarr

    return {"tte_scale": version, "numpy": np.__version__, "pyarrow": pa.__version__, "zarr": zarr.__version__}
