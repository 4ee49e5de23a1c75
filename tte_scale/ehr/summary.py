"""The run summary of `tte-scale labels` (also written as ``summary.json``) and its text form."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = ["summarize", "format_summary"]


def _dist(x: np.ndarray) -> dict:
    if len(x) == 0:
        return {}
    q = np.quantile(x, [0.0, 0.1, 0.5, 0.9, 1.0])
    return dict(zip(["min", "p10", "median", "p90", "max"], [float(v) for v in q]))


def summarize(
    stats,
    scans,
    plans,
    reasons: dict,
    num_train_rows: int,
    events_K: np.ndarray,
    num_rows: int,
    cfg,
    starts,
    follow_days,
    tmp,
) -> dict:
    # pyarrow + numpy only: pandas is not a runtime dependency.
    bench = pq.read_table(tmp / "bench.parquet", columns=["task", "label", "excluded"])
    # Rows are (scan, task) in task order, so the task of row i is names[i % T]; counts by bincount.
    names = list(dict.fromkeys(bench.column("task").slice(0, 4096).to_pylist()))
    T = max(1, len(names))
    task = np.arange(bench.num_rows) % T
    label = bench.column("label")
    pos = label.fill_null(False).to_numpy(zero_copy_only=False)
    neg = ~label.fill_null(True).to_numpy(zero_copy_only=False)
    excl = bench.column("excluded")
    per_task = {}
    count = lambda mask: np.bincount(task[mask], minlength=T)  # noqa: E731
    cols = {"positive": count(pos), "negative": count(neg)}
    for reason in ("censored_before_horizon", "prior_event"):
        cols[reason] = count(pc.fill_null(pc.equal(excl, reason), False).to_numpy(zero_copy_only=False))
    for j, name in enumerate(names):
        per_task[name] = {k: int(v[j]) for k, v in cols.items()}
    seconds = sum(stats.seconds.values())
    return {
        "subjects": stats.subjects,
        "events_read": stats.events,
        "static_events": stats.static_events,
        "event_files": len(plans),
        "scans": len(scans),
        "scans_labelled": num_rows,
        "scans_train": num_train_rows,
        "scans_excluded": reasons,
        "checks": stats.checks,
        "tasks_requested": cfg.num_tasks,
        "tasks_kept": int(len(events_K)),
        "task_event_rate": _dist(events_K / max(1, num_rows)),
        "bins_requested": cfg.num_bins,
        "bin_starts_days": starts,
        "median_follow_up_days": float(np.median(follow_days)) if len(follow_days) else None,
        "bench": per_task,
        "seconds": {**stats.seconds, "total": seconds},
        "events_per_second": stats.events / seconds if seconds > 0 else None,
    }


def format_summary(s: dict) -> str:
    r = s["task_event_rate"]
    lines = [
        f"subjects {s['subjects']:,}  events read {s['events_read']:,} ({s['static_events']:,} static)  files {s['event_files']}",
        f"scans {s['scans']:,}: labelled {s['scans_labelled']:,} (train {s['scans_train']:,}), excluded {sum(s['scans_excluded'].values()):,} {s['scans_excluded'] or ''}",
        f"tasks kept {s['tasks_kept']:,} of {s['tasks_requested']:,}; event rate per task min {r['min']:.4f} median {r['median']:.4f} max {r['max']:.4f}",
        f"bins {len(s['bin_starts_days'])} (requested {s['bins_requested']}): starts (days) {[round(c, 2) for c in s['bin_starts_days']]}",
        f"median follow-up {s['median_follow_up_days']:.1f} days",
    ]
    c = s.get("checks") or {}
    if c:
        lines.append(
            f"checks: events after {c.get('max_event_time')} exclude their subject's scans; birth code "
            f"{c.get('birth_code') or 'off'}; ontology {'on' if c.get('ontology') else 'off'}"
            + (f"; unknown split names excluded {c['unknown_splits']}" if c.get("unknown_splits") else "")
        )
    for name, b in s["bench"].items():
        lines.append(
            f"  bench {name:<16} pos {b['positive']:>6} neg {b['negative']:>6} censored<horizon {b['censored_before_horizon']:>6} prior {b['prior_event']:>6}"
        )
    lines.append(f"time {s['seconds']['total']:.1f} s ({s['events_per_second'] or 0:,.0f} events/s)")
    return "\n".join(lines)
