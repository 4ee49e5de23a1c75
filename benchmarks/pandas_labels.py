"""A plain pandas implementation of the labels (merge + groupby): the test oracle on small
cohorts and the speed baseline of ``benchmarks/bench_labels.py``. Written independently of
``core``/``build`` on purpose (same definitions, different mechanics); not for large data.

Input frames: ``events`` (subject_id int64, time datetime64[us] with NaT for static rows, code
str), ``scans`` (subject_id, scan_id, prediction_time datetime64[us]).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from tte_scale.formats.units import US_PER_DAY

__all__ = ["reference_labels", "read_meds_frames"]


def _closure(code: str, parents: dict, enabled: bool) -> list[str]:
    if not enabled:
        return [code]
    out, todo = {code}, [code]
    while todo:
        for p in parents.get(todo.pop(), []):
            if p not in out:
                out.add(p)
                todo.append(p)
    return sorted(out)


def _us(s: pd.Series) -> pd.Series:
    return s.astype("datetime64[us]").astype("int64")


def reference_labels(events: pd.DataFrame, scans: pd.DataFrame, splits: dict, parents: dict, cfg, tasks) -> dict:
    """Everything ``build_labels`` computes, keyed by scan id (dict of plain numpy/pandas)."""
    ev = events[["subject_id", "time", "code"]].copy()
    timed = ev[ev["time"].notna()].copy()
    timed["t"] = _us(timed["time"])
    eor = timed.groupby("subject_id")["t"].max()
    sc = scans[["subject_id", "scan_id", "prediction_time"]].copy()
    sc["p"] = _us(sc["prediction_time"])
    sc["split"] = sc["subject_id"].map(splits)
    sc["eor"] = sc["subject_id"].map(eor)
    known = set(ev["subject_id"].tolist())
    reason = {}
    for r in sc.itertuples():
        if r.subject_id not in known:
            reason[r.scan_id] = "unknown_subject"
        elif not isinstance(r.split, str):
            reason[r.scan_id] = "subject_not_in_splits"
        elif pd.isna(r.eor):
            reason[r.scan_id] = "no_timed_events"
        elif r.p >= r.eor:
            reason[r.scan_id] = "prediction_time_at_or_after_end_of_record"
    lab = sc[~sc["scan_id"].isin(list(reason))].copy()
    lab["eor"] = lab["eor"].astype("int64")

    # Vocabulary: codes (with ancestors) occurring strictly after train prediction times.
    if cfg.ontology and parents:
        exp = timed.assign(code=timed["code"].astype(str).map(lambda c: _closure(c, parents, True))).explode("code")
    else:
        exp = timed
    fut = lab.merge(exp[["subject_id", "t", "code"]], on="subject_id")
    fut = fut[fut["t"] > fut["p"]]
    n_train = int((lab["split"] == "train").sum())
    counts = fut[fut["split"] == "train"].groupby("code", observed=True)["scan_id"].nunique()
    counts = counts[counts >= cfg.min_count]
    items = []
    for code, c in counts.items():
        if cfg.ranking == "frequency":
            s = float(c)
        else:
            p = c / n_train
            s = 0.0 if p >= 1.0 else -(p * math.log(p) + (1 - p) * math.log1p(-p))
        items.append((-round(s, 12), -int(c), str(code), s, int(c)))
    items.sort()
    items = items[: cfg.num_tasks]
    vocab = [x[2] for x in items]
    first = fut[fut["code"].isin(vocab)].groupby(["scan_id", "code"], observed=True)["t"].min().reset_index()

    K, ids = len(vocab), lab["scan_id"].tolist()
    end = np.repeat(lab["eor"].to_numpy()[:, None], K, axis=1)
    event = np.zeros((len(ids), K), bool)
    ri = pd.Index(ids).get_indexer(first["scan_id"])
    ci = pd.Index(vocab).get_indexer(first["code"].astype(str))
    end[ri, ci] = first["t"].to_numpy()
    event[ri, ci] = True
    dt = end - lab["p"].to_numpy()[:, None]
    time = (dt / US_PER_DAY).astype(np.float32)

    train = (lab["split"] == "train").to_numpy()
    # Bins: the stored float32 days (whole hours = floor(days * 24) in float64) of the train
    # rows of a hashed subject sample, every m-th subject when there are >= 2x the target count.
    m = 1 if cfg.bin_sample_events <= 0 else max(1, int(event[train].sum()) // cfg.bin_sample_events)
    h = lab["subject_id"].to_numpy().astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    fit = train & ((h >> np.uint64(33)) % np.uint64(m) == 0)
    hours = np.sort(np.floor(time[fit][event[fit]].astype(np.float64) * 24.0).astype(np.int64))
    starts = [0.0]
    for j in range(1, cfg.num_bins):
        if len(hours) == 0:
            break
        c = (int(hours[-(-j * len(hours) // cfg.num_bins) - 1]) + 1) / 24.0
        if c > starts[-1]:
            starts.append(c)

    # Benchmark tasks: exact code sets.
    T = len(tasks.tasks)
    b_label = np.zeros((len(ids), T), np.int8)
    b_time = np.zeros((len(ids), T), np.float32)
    b_event = np.zeros((len(ids), T), bool)
    b_exc = np.full((len(ids), T), None, object)
    bench_codes = sorted({c for t in tasks.tasks for c in t.codes})
    allev = lab.merge(ev[ev["code"].isin(bench_codes)], on="subject_id")
    allev["t"] = np.where(allev["time"].notna(), _us(allev["time"].fillna(pd.Timestamp(0))), np.iinfo(np.int64).min)
    p_R, eor_R = lab["p"].to_numpy(), lab["eor"].to_numpy()
    for j, task in enumerate(tasks.tasks):
        mine = allev[allev["code"].isin(task.codes)]
        nxt = mine[mine["time"].notna() & (mine["t"] > mine["p"])].groupby("scan_id")["t"].min().reindex(ids)
        prior = pd.Index(ids).isin(mine[mine["t"] <= mine["p"]]["scan_id"])
        e = nxt.notna().to_numpy()
        d = (np.where(e, nxt.fillna(0).to_numpy(np.int64), eor_R) - p_R) / US_PER_DAY
        b_time[:, j], b_event[:, j] = d, e
        lab_j = (e & (d <= task.horizon_days)).astype(np.int8)
        early = ~e & (d < task.horizon_days)
        b_exc[early, j] = "censored_before_horizon"
        lab_j[early] = -1
        if task.exclude_prior:
            b_exc[prior, j] = "prior_event"
            lab_j[prior] = -1
        b_label[:, j] = lab_j
    return {
        "vocab": vocab,
        "train_count": [x[4] for x in items],
        "score": [x[3] for x in items],
        "scan_ids": ids,
        "time": time,
        "event": event,
        "bin_starts": starts,
        "excluded": reason,
        "end_of_record": lab["eor"].to_numpy(),
        "bench_label": b_label,
        "bench_time": b_time,
        "bench_event": b_event,
        "bench_excluded": b_exc,
    }


def read_meds_frames(meds_root, scans_path):
    """Load a (small) MEDS folder into the frames ``reference_labels`` takes."""
    import glob
    import os

    import pyarrow.parquet as pq

    files = sorted(glob.glob(os.path.join(meds_root, "data", "**", "*.parquet"), recursive=True))
    events = pd.concat(
        [pq.read_table(f, columns=["subject_id", "time", "code"]).to_pandas() for f in files], ignore_index=True
    )
    events["code"] = events["code"].astype(str)
    splits_tab = pq.read_table(os.path.join(meds_root, "metadata", "subject_splits.parquet")).to_pandas()
    splits = dict(zip(splits_tab["subject_id"].astype("int64"), splits_tab["split"]))
    parents = {}
    codes_path = os.path.join(meds_root, "metadata", "codes.parquet")
    if os.path.exists(codes_path):
        ct = pq.read_table(codes_path).to_pandas()
        if "parent_codes" in ct:
            for c, ps in zip(ct["code"], ct["parent_codes"]):
                if ps is not None and len(ps):
                    parents.setdefault(c, []).extend(p for p in ps if p and p != c)
    scans = pq.read_table(scans_path).to_pandas()
    return events, scans, splits, parents
