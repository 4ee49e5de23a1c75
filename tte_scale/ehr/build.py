"""`tte-scale labels`: one read of each MEDS shard, one shard in memory at a time.

Pass 1 (scan, per shard): end of record per subject, exclusions, the benchmark labels (they do
not depend on the vocabulary), for each code the number of *train* rows after which it occurs
(with ontology closure), and a spill of the shard's future events grouped by subject (row, code
id, time: 16 bytes each) to the partial output folder. The K best codes become tasks.
Pass 2 (labels, per shard): the spilled events of the task codes -> dense ``[rows, K]`` labels,
in row blocks that bound the memory, staged into whole ``tte.zarr`` chunks; the train event-time
histogram that fixes the bins. Parquet is decoded once; pass 2 reads a few flat arrays back.
The per-event work is in the compiled ``kernels`` (their numpy reference is in tests/unit/ehr/numpy_ref.py).
Everything goes to ``.OUT.partial`` and is renamed at the end, so a killed run never leaves a
half-valid labels folder. Folders are replaced only when they carry the labels owner marker
(``tte_scale.outputs``): a command never deletes what it did not write.

Legend: E events, F future events, R rows (labelled scans), K tasks, T benchmark tasks, S
subjects of a shard, C code columns of a shard.
Semantics (docs/formats.md, "MEDS input"): end of record = the subject's last timed event (any code); an event is
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
from tte_scale.ehr import core, kernels
from tte_scale.ehr.config import LabelsConfig, TaskSet
from tte_scale.ehr.meds import (
    SPLITS,
    Scans,
    ShardEvents,
    open_meds,
    read_parents,
    read_scans,
    read_shard,
    read_splits,
    unknown_splits,
)
from tte_scale.ehr.precomputed import PrecomputedBench
from tte_scale.ehr.store import (
    BENCH_SCHEMA,
    EXCLUDED_SCHEMA,
    FORMAT_VERSION,
    ROWS_SCHEMA,
    TteWriter,
    bench_table,
    write_vocab,
)
from tte_scale.ehr.summary import summarize
from tte_scale.ehr.vocab import CodeRegistry, Ontology
from tte_scale.errors import InputError
from tte_scale.outputs import check_not_input, check_replaceable, mark, remove_own

__all__ = ["build_labels"]

COMMAND = "labels"
"""Owner name in the ``tte_scale.outputs`` marker of a labels folder."""

_SPILL = (("r", np.int32), ("gid", np.int32), ("t", np.int64))


@dataclass
class _ShardPlan:
    path: Path
    num_subjects: int
    """S: subjects of the shard (``subj_R`` indexes them)."""
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
    spill: Path | None = None
    """Prefix of the spilled future events (``.r``/``.gid``/``.t``), when the shard has rows."""
    fut_off: np.ndarray | None = None
    """int64 [S + 1]: subject s's spilled events are ``fut_off[s]:fut_off[s + 1]``."""
    offset: int = 0


@dataclass
class _Stats:
    events: int = 0
    static_events: int = 0
    subjects: int = 0
    excluded: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)
    """What the input checks found and the limits they used (summary.json ``checks``)."""


def _progress(items, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="file", disable=not enabled, dynamic_ncols=True)


def _spill_write(prefix: Path, **arrays: np.ndarray) -> None:
    for name, dtype in _SPILL:
        arrays[name].astype(dtype, copy=False).tofile(f"{prefix}.{name}")


def _spill_read(prefix: Path, bufs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The spilled arrays, read into ``bufs`` (grown as needed, kept across shards: fresh
    memory costs page faults) and returned as views of the right length."""
    out = {}
    for name, dtype in _SPILL:
        path = Path(f"{prefix}.{name}")
        n = path.stat().st_size // np.dtype(dtype).itemsize
        if len(bufs.get(name, ())) < n:
            bufs[name] = np.empty(n + n // 4, dtype)
        with open(path, "rb") as f:
            got = f.readinto(memoryview(bufs[name][:n]).cast("B"))
        if got != n * np.dtype(dtype).itemsize:
            raise RuntimeError(f"internal error: {path}: read {got} of {n * np.dtype(dtype).itemsize} bytes")
        out[name] = bufs[name][:n]
    return out


def _code_csr(codes: list[str], columns_of) -> tuple[np.ndarray, np.ndarray]:
    """Code list -> column lists (CSR); Python per distinct code, never per event."""
    lists = [columns_of(c) for c in codes]
    offsets = np.zeros(len(lists) + 1, np.int64)
    np.cumsum([len(x) for x in lists], out=offsets[1:])
    return offsets, np.fromiter((j for x in lists for j in x), np.int64, count=int(offsets[-1]))


def _bench_csr(codes: list[str], tasks: TaskSet):
    """Bench task columns of each code (exact match; a code may feed several tasks). Python per
    benchmark code (a handful), not per code of the shard."""
    pairs = sorted({(codes.index(c), j) for j, t in enumerate(tasks.tasks) for c in t.codes if c in codes})
    deg = np.bincount(np.array([i for i, _ in pairs], np.int64), minlength=len(codes))
    offsets = np.zeros(len(codes) + 1, np.int64)
    np.cumsum(deg, out=offsets[1:])
    return offsets, np.array([j for _, j in pairs], np.int64)


@dataclass(frozen=True)
class _Checks:
    """What makes a scan untrustworthy beyond the end of record (``LabelsConfig`` fields)."""

    birth_code: str
    """"": no birth check."""
    max_event_us: int
    """A subject with a timed event after this is excluded."""


# One reason per excluded scan: the first that applies, in this order (docs/formats.md).
EXCLUSION_REASONS = (
    "subject_not_in_splits",
    "unknown_split",
    "no_timed_events",
    "event_after_max_time",
    "prediction_time_before_birth",
    "prediction_time_at_or_after_end_of_record",
    "unknown_subject",
)


def _birth(ev: ShardEvents, code: str) -> np.ndarray:
    """int64 [S]: each subject's first timed ``code`` event (INT64_MIN: none, so that no
    prediction time is before it)."""
    birth_S = np.full(len(ev.subject_ids), core.INT64_MAX, np.int64)
    if code and code in ev.codes:
        m = (ev.code_E == ev.codes.index(code)) & ev.timed_E  # one vector pass; the hits are few
        np.minimum.at(birth_S, ev.subj_E[m], ev.time_E[m])
    birth_S[birth_S == core.INT64_MAX] = core.INT64_MIN
    return birth_S


def _plan_shard(path: Path, ev: ShardEvents, scans: Scans, splits: dict, excluded: list, checks: _Checks) -> _ShardPlan:
    """The shard's labelled rows (row order) and its excluded scans."""
    S = len(ev.subject_ids)
    eor_S = kernels.end_of_record(ev.subj_E, ev.time_E, ev.timed_E, S)
    # Scans are sorted by subject: each shard subject's scans are one contiguous range.
    lo = np.searchsorted(scans.subject_id, ev.subject_ids, "left")
    cnt = np.searchsorted(scans.subject_id, ev.subject_ids, "right") - lo
    sel = np.repeat(lo, cnt) + np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    subj = np.searchsorted(ev.subject_ids, scans.subject_id[sel])
    eor = eor_S[subj]
    pred = scans.pred_us[sel]
    split = np.array([splits.get(int(s)) for s in scans.subject_id[sel]], dtype=object)
    reason = np.full(len(sel), None, dtype=object)
    # Assigned from the last reason of EXCLUSION_REASONS to the first: the first that applies wins.
    reason[pred >= eor] = "prediction_time_at_or_after_end_of_record"
    reason[pred < _birth(ev, checks.birth_code)[subj]] = "prediction_time_before_birth"
    reason[(eor > checks.max_event_us) & (eor != core.INT64_MIN)] = "event_after_max_time"
    reason[eor == core.INT64_MIN] = "no_timed_events"
    reason[np.array([s is not None and s not in SPLITS for s in split], bool)] = "unknown_split"
    reason[split == None] = "subject_not_in_splits"  # noqa: E711
    bad = reason != None  # noqa: E711
    excluded.extend(zip(sel[bad].tolist(), reason[bad].tolist()))
    ok = ~bad
    return _ShardPlan(path, S, sel[ok], subj[ok], eor[ok], split[ok] == "train", split[ok])


def _bench_rows(
    ev: ShardEvents, plan: _ShardPlan, rows: core.RowIndex, pred_R, scans: Scans, tasks: TaskSet
) -> pa.Table:
    """Benchmark labels of the shard's rows: exact code sets, all timed events for "first after",
    static rows as prior."""
    boff, btgt = _bench_csr(ev.codes, tasks)
    first_RT, ever_ST = kernels.bench_first(
        ev.subj_E,
        ev.time_E,
        ev.timed_E,
        ev.code_E,
        boff,
        btgt,
        len(tasks.tasks),
        rows.start_S,
        rows.end_S - rows.start_S,
        pred_R,
        np.array([round(t.start_days * core.US_PER_DAY) for t in tasks.tasks], np.int64),
    )
    horizon = [t.horizon_days for t in tasks.tasks]
    excl_prior = [t.exclude_prior for t in tasks.tasks]
    lab, days, bev, bexc = core.bench_labels(first_RT, ever_ST[plan.subj_R], pred_R, plan.eor_R, horizon, excl_prior)
    return bench_table(
        scans.scan_id[plan.scan_idx], scans.subject_id[plan.scan_idx], plan.split_R, tasks.names, lab, days, bev, bexc
    )


def _train_counts(
    ev: ShardEvents,
    plan: _ShardPlan,
    rows: core.RowIndex,
    off_S,
    row_F,
    code_F,
    gid_C,
    registry: CodeRegistry,
    ontology: Ontology,
) -> None:
    """Add to ``registry.counts`` the number of train rows after which each code occurs.
    Runs on train subjects' events only: tuning/held_out events cannot influence the vocabulary."""
    train_S = np.zeros(plan.num_subjects, bool)
    train_S[plan.subj_R[plan.train_R]] = True
    if not train_S.any():
        return
    offsets, targets, cols_gid = registry.csr(ev.codes, ontology, gid_C)
    identity = not ontology.has_ancestors(ev.codes)  # column = code (``registry.csr``)
    counts = kernels.count_rows_after(
        off_S, row_F, code_F, rows.start_S, train_S, offsets, targets, identity, len(cols_gid)
    )
    registry.counts[cols_gid] += counts


def _pass_scan(
    ds,
    scans: Scans,
    splits: dict,
    ontology: Ontology,
    tasks: TaskSet,
    checks: _Checks,
    tmp: Path,
    stats: _Stats,
    progress: bool,
    pre: PrecomputedBench | None = None,
):
    """Pass 1: plans per shard, exclusions, bench.parquet, train counts per code, spills.
    ``pre``: precomputed benchmark labels that replace the computed ones of their tasks."""
    registry = CodeRegistry()
    plans: list[_ShardPlan] = []
    excluded: list[tuple[int, str]] = []
    seen: list[np.ndarray] = []
    seen_files: list[Path] = []
    num_train_rows = 0
    spill_dir = tmp / "spill"
    spill_dir.mkdir()
    work = np.zeros(0, np.int64)
    writer = pq.ParquetWriter(tmp / "bench.parquet", BENCH_SCHEMA)
    try:
        bar = _progress(ds.data_files, "labels 1/2 scan", progress)
        for i, path in enumerate(bar):
            ev = read_shard(path)
            stats.events += ev.num_events
            stats.static_events += int((~ev.timed_E).sum())
            seen.append(ev.subject_ids)
            seen_files.append(path)
            plan = _plan_shard(path, ev, scans, splits, excluded, checks)
            plans.append(plan)
            num_train_rows += int(plan.train_R.sum())
            if len(plan.scan_idx):
                rows = core.RowIndex(plan.subj_R, plan.num_subjects)
                pred_R = scans.pred_us[plan.scan_idx]
                if len(work) < 2 * (ev.num_events + 1):  # scratch kept across shards: fresh memory costs page faults
                    work = np.empty(2 * (ev.num_events + 1), np.int64)
                off_S, row_F, code_F, time_F = kernels.future_events(
                    ev.subj_E, ev.time_E, ev.timed_E, ev.code_E, rows.start_S, rows.end_S - rows.start_S, pred_R, work
                )
                gid_C = registry.ids_of(ev.codes)
                plan.spill, plan.fut_off = spill_dir / f"{i:06d}", off_S
                _spill_write(plan.spill, r=row_F, gid=gid_C[code_F], t=time_F)
                _train_counts(ev, plan, rows, off_S, row_F, code_F, gid_C, registry, ontology)
                bench = _bench_rows(ev, plan, rows, pred_R, scans, tasks)
                writer.write_table(pre.apply(bench) if pre is not None else bench)
            bar.set_postfix(events=stats.events)
    finally:
        writer.close()
    all_seen = np.concatenate(seen) if seen else np.zeros(0, np.int64)
    all_sorted = np.sort(all_seen)
    dup = np.unique(all_sorted[1:][all_sorted[1:] == all_sorted[:-1]])
    if len(dup):  # checked once at the end (cheap); the output folder is still partial
        files = [f for f, ids in zip(seen_files, seen) if np.isin(ids, dup).any()]
        raise InputError(
            f"{files[-1]}: subjects {dup[:5].tolist()} also appear in {files[0]}; a MEDS subject must live in one file"
        )
    stats.subjects = len(all_seen)
    unknown = np.flatnonzero(~np.isin(scans.subject_id, all_seen))
    excluded.extend((int(i), "unknown_subject") for i in unknown)
    return registry, plans, excluded, num_train_rows


def _task_csr(registry: CodeRegistry, vocab_gid: np.ndarray, ontology: Ontology) -> tuple[np.ndarray, np.ndarray]:
    """Global code id -> task columns (closure ∩ vocabulary), as CSR."""
    G = len(registry.codes)
    if not ontology.has_ancestors(registry.codes):
        deg = np.zeros(G, np.int64)
        deg[vocab_gid] = 1
        offsets = np.zeros(G + 1, np.int64)
        np.cumsum(deg, out=offsets[1:])
        targets = np.empty(len(vocab_gid), np.int32)
        targets[offsets[vocab_gid]] = np.arange(len(vocab_gid))
        return offsets, targets
    task_of = {registry.codes[g]: k for k, g in enumerate(vocab_gid)}
    offsets, targets = _code_csr(registry.codes, lambda c: [task_of[a] for a in ontology.closure(c) if a in task_of])
    return offsets, targets.astype(np.int32)


def _pass_labels(plans, scans, vocab_gid, registry, ontology, cfg, tmp: Path, progress, bin_stride: int):
    """Pass 2: fill tte.zarr from the spills shard by shard; returns stats for bins/summary.
    The bins' histogram takes the train rows of the subjects in ``subject_sample(bin_stride)``."""
    K = len(vocab_gid)
    N = sum(len(p.scan_idx) for p in plans)
    # Blocks of at most a chunk: the writer stages a chunk plus a block, twice (double buffer).
    block_cells = min(cfg.block_cells, cfg.chunk_rows * K)
    block_rows = max(1, block_cells // K)
    out = TteWriter(tmp / "tte.zarr", N, K, cfg.chunk_rows, block_rows)
    work = np.zeros(0, np.int64)
    spill_bufs: dict[str, np.ndarray] = {}
    toff, ttgt = _task_csr(registry, vocab_gid, ontology)
    # At most one task per code (no ontology): a plain lookup table instead of the CSR.
    deg = np.diff(toff)
    task_of = np.zeros(0, np.int32)
    if deg.max(initial=0) <= 1:
        task_of = np.full(len(deg), -1, np.int32)
        task_of[deg == 1] = ttgt[toff[:-1][deg == 1]]
    hist = np.zeros(24 * 366, np.int64)
    events_K = np.zeros(K, np.int64)
    train_events_K = np.zeros(K, np.int64)
    try:
        for plan in _progress(plans, "labels 2/2 labels", progress):
            if len(plan.scan_idx) == 0:
                continue
            sp = _spill_read(plan.spill, spill_bufs)
            for name, _ in _SPILL:
                Path(f"{plan.spill}.{name}").unlink()
            rows = core.RowIndex(plan.subj_R, plan.num_subjects)
            first_R = rows.start_S[rows.subj_R]
            pred_R = scans.pred_us[plan.scan_idx]
            hist_R = plan.train_R & core.subject_sample(scans.subject_id[plan.scan_idx], bin_stride)
            # The hour histogram must reach the longest censoring time among the rows it takes.
            if hist_R.any():
                need = (
                    int(core.hours_of_days(((plan.eor_R - pred_R)[hist_R] / core.US_PER_DAY).astype(np.float32)).max())
                    + 1
                )
                if need > len(hist):
                    hist = np.concatenate([hist, np.zeros(need - len(hist), np.int64)])
            for b0, b1 in core.row_blocks(rows, K, block_cells, align=out.chunk_rows, offset=plan.offset):
                # Blocks end at subject boundaries and the spill is grouped by subject.
                e0, e1 = plan.fut_off[plan.subj_R[b0]], plan.fut_off[plan.subj_R[b1 - 1] + 1]
                time_RK, event_RK = out.reserve(b1 - b0)
                block = kernels.LabelBlock(
                    e0=e0,
                    e1=e1,
                    row_F=sp["r"],
                    gid_F=sp["gid"],
                    time_F=sp["t"],
                    task_of=task_of,
                    task_off=toff,
                    task_tgt=ttgt,
                    b0=b0,
                    first_R=first_R,
                    pred_R=pred_R,
                    eor_R=plan.eor_R,
                    train_R=plan.train_R,
                    hist_R=hist_R,
                    time_RK=time_RK,
                    event_RK=event_RK,
                    events_K=events_K,
                    train_events_K=train_events_K,
                    hist=hist,
                )
                need = kernels.fill_labels(block, work)
                if need:  # grow the scratch (kept across blocks and shards: fresh memory costs page faults)
                    work = np.empty(need + need // 2, np.int64)
                    kernels.fill_labels(block, work)
                out.commit(b1 - b0)
        out.close()
    except BaseException:
        out.abort()
        raise
    shutil.rmtree(tmp / "spill")
    return hist, events_K, train_events_K


def build_labels(
    meds: str | Path,
    scans_path: str | Path,
    out: str | Path,
    cfg: LabelsConfig,
    tasks: TaskSet,
    *,
    overwrite: bool = False,
    progress: bool = True,
    inputs: tuple = (),
) -> dict:
    """Build the labels folder ``out`` (docs/formats.md) and return the run summary.

    ``out`` is replaced only when ``overwrite`` is set and it is a labels folder (it carries the
    ``tte_scale.outputs`` marker of ``labels``) that neither is nor holds an input; the same
    rule covers the ``.OUT.partial``/``.OUT.old`` folders beside it. All of it is checked before
    any work. ``inputs`` names further inputs of the run (the benchmark task file)."""
    out = Path(out)
    tmp = out.parent / f".{out.name}.partial"
    old = out.parent / f".{out.name}.old"
    inputs = [meds, scans_path, cfg.bench_labels, *inputs]
    check_not_input(out, inputs)
    if out.exists() and not overwrite:
        raise InputError(f"{out}: labels folder exists; pass --overwrite to replace it")
    for path in (out, tmp, old):
        check_replaceable(path, COMMAND, inputs, flag="--out" if path == out else "leftover")
    ds = open_meds(meds)
    scans = read_scans(scans_path)
    splits = read_splits(ds)
    other = unknown_splits(splits)
    if other and cfg.unknown_splits == "error":
        named = ", ".join(f"{n!r} ({c} subjects)" for n, c in sorted(other.items()))
        raise InputError(
            f"{ds.splits_path}: field 'split' has names other than {list(SPLITS)}: {named}; their scans could "
            "never be used. Rename them, or pass --unknown-splits exclude to leave those scans out (reported)"
        )
    ontology = Ontology(read_parents(ds) if cfg.ontology else {}, enabled=cfg.ontology)
    checks = _Checks(birth_code=cfg.birth_code, max_event_us=cfg.max_event_us())
    pre = PrecomputedBench(cfg.bench_labels, tasks.names) if cfg.bench_labels else None
    stats = _Stats()
    stats.checks = {
        "unknown_splits": other,
        "birth_code": cfg.birth_code or None,
        "max_event_time": str(np.datetime64(checks.max_event_us, "us")),
        "ontology": cfg.ontology,
    }
    remove_own(tmp, COMMAND, inputs)  # left by a killed run of ours: never valid
    tmp.mkdir(parents=True)
    mark(tmp, COMMAND)  # travels with the folder when it is renamed to ``out``
    try:
        summary = _build(ds, scans, splits, ontology, checks, cfg, tasks, tmp, stats, progress, meds, scans_path, pre)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # ours: created and marked above
        raise
    if out.exists():
        remove_own(old, COMMAND, inputs)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)  # the labels folder checked above, renamed
    else:
        tmp.rename(out)
    return summary


def _build(
    ds,
    scans: Scans,
    splits,
    ontology,
    checks: _Checks,
    cfg: LabelsConfig,
    tasks: TaskSet,
    tmp: Path,
    stats: _Stats,
    progress: bool,
    meds,
    scans_path,
    pre: PrecomputedBench | None = None,
) -> dict:
    t0 = _time.perf_counter()
    registry, plans, excluded, num_train_rows = _pass_scan(
        ds, scans, splits, ontology, tasks, checks, tmp, stats, progress, pre
    )
    stats.seconds["pass_scan"] = _time.perf_counter() - t0
    if stats.events == 0:
        raise InputError(f"{ds.root / 'data'}: empty cohort: the event files hold no rows")
    offset = 0
    for p in plans:
        p.offset = offset
        offset += len(p.scan_idx)
    counted = {}
    for _, why in excluded:
        counted[why] = counted.get(why, 0) + 1
    reasons = {why: counted[why] for why in EXCLUSION_REASONS if why in counted}
    if offset == 0:
        hint = ""
        if "event_after_max_time" in reasons:
            hint = (
                f"; events after {stats.checks['max_event_time']}: for a cohort whose dates are shifted into "
                "the future pass --max-event-time"
            )
        raise InputError(f"{scans.path}: no scan could be labelled (excluded: {reasons}){hint}")
    if num_train_rows == 0:
        raise InputError(
            f"{scans.path}: no labelled scan of a train-split subject; the task vocabulary needs train scans"
        )
    codes = np.array(registry.codes, dtype=object)
    counts = registry.all_counts()
    pick, scores = core.rank_codes(codes, counts, num_train_rows, cfg.num_tasks, cfg.min_count, cfg.ranking)
    if len(pick) == 0:
        raise InputError(f"{ds.root}: no code occurs after >= {cfg.min_count} train scans; no task can be built")
    write_vocab(tmp / "vocab.parquet", codes[pick].tolist(), counts[pick], scores)
    t1 = _time.perf_counter()
    bin_stride = core.sample_stride(int(counts[pick].sum()), cfg.bin_sample_events)
    hist, events_K, train_events_K = _pass_labels(
        plans, scans, pick, registry, ontology, cfg, tmp, progress, bin_stride
    )
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
        "config": {
            "labels": to_dict(cfg),
            "requested_num_bins": cfg.num_bins,
            "bench": to_dict(tasks),
            "meds": str(meds),
            "scans": str(scans_path),
        },
        "bench_tasks": tasks.names,
        "software": _versions(__version__),
    }
    (tmp / "bins.json").write_text(json.dumps(bins, indent=2))
    follow = np.concatenate([(p.eor_R - scans.pred_us[p.scan_idx]) for p in plans]) / core.US_PER_DAY
    summary = summarize(stats, scans, plans, reasons, num_train_rows, events_K, offset, cfg, starts, follow, tmp)
    if pre is not None:
        summary["bench_precomputed"] = pre.report()
    (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
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
