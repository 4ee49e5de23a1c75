"""Combine several models' results into one tidy table, and print it as markdown."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tte_scale.eval import bootstrap as bs
from tte_scale.eval.protocol import EvalResult

__all__ = [
    "compare_models",
    "format_table",
    "format_differences",
    "paired_differences",
    "mean_replicates",
    "HIGHER_IS_BETTER",
    "METRICS",
]

HIGHER_IS_BETTER = {
    "auroc": True,
    "auprc": True,
    "c_index": True,
    "c_index_uno": True,
    "c_index_full": True,
    "c_index_td": True,
    "ibs": False,
    "ece": False,
    "km_cal_error": False,
}
TARGETS = {"cal_slope": "→1", "cal_intercept": "→0"}
"""Metrics best at a value, not at an end (the table's arrow column)."""

METRICS = {
    "auroc": "AUROC of the binary label at the task's horizon",
    "auprc": "average precision (AUPRC) of the binary label at the task's horizon",
    "c_index": "Harrell's C at the task's horizon: only events before it anchor a pair (administrative "
    "censoring at the horizon), so 1-, 6- and 12-month tasks of one outcome are three different measures",
    "c_index_uno": "Uno's C at the task's horizon: the same pairs weighted by 1/G(t)^2 (inverse probability "
    "of censoring, G from the train split), less dependent on the held-out censoring",
    "c_index_full": "Harrell's C over the whole follow-up, horizon-free: reported once per outcome (tasks "
    "with the same code set share it; its task mean is over outcomes, not tasks)",
    "c_index_td": "Antolini's time-dependent C from the probe's survival curves, at the task's horizon",
    "ibs": "integrated Brier score (IPCW) up to the task's horizon",
    "cal_slope": "calibration slope b of logit P(event) = a + b * logit(prediction): 1 is calibrated, < 1 "
    "predictions too extreme",
    "cal_intercept": "calibration intercept a of logit P(event) = a + logit(prediction): 0 is calibrated, > 0 "
    "predictions too low on average",
    "ece": "expected calibration error: size-weighted mean |observed - predicted| over equal-width probability bins "
    "(no CI: resampling inflates a binned absolute deviation, its bootstrap interval would sit above the estimate)",
    "km_cal_error": "calibration at the horizon: size-weighted mean |observed - predicted| risk by the horizon "
    "over deciles of predicted risk, observed = 1 - Kaplan-Meier at the horizon (no CI, as for ece)",
}
"""What each metric name means: report legend, summary.json and docs/formats.md."""


def mean_replicates(res: EvalResult, probe: str, metric: str, tasks: list[str]) -> np.ndarray | None:
    """Per bootstrap replicate, the mean over ``tasks`` ([B]); None unless every task has replicates."""
    reps = [res.replicates.get((t, probe, metric)) for t in tasks]
    if not tasks or any(r is None for r in reps) or len({r.shape for r in reps}) != 1:
        return None
    with np.errstate(invalid="ignore"):
        return np.stack(reps).mean(0)  # a replicate where any task is undefined stays NaN


def _mean_groups(res: EvalResult) -> dict[tuple[str, str], list[str]]:
    """(probe, metric) -> the tasks that have a value."""
    groups: dict[tuple[str, str], list[str]] = {}
    for r in res.rows:
        tasks = groups.setdefault((r["probe"], r["metric"]), [])
        if r["value"] is not None:
            tasks.append(r["task"])
    return groups


def compare_models(results: dict[str, EvalResult], ci_level: float = 0.95) -> list[dict[str, Any]]:
    """All rows of all models with a ``model`` column, plus per (model, probe, metric) a row
    with ``task == "mean"``: the mean over the tasks that have a value (``n`` counts those
    tasks). Its CI is the percentile interval of the per-replicate task means: every task is
    bootstrapped with the same subject resamples, so the replicate means carry the tasks'
    correlation (no independence assumed)."""
    out: list[dict[str, Any]] = []
    for model, res in results.items():
        out += [{"model": model, **r} for r in res.rows]
        values = {(r["task"], r["probe"], r["metric"]): r["value"] for r in res.rows}
        for (probe, metric), tasks in _mean_groups(res).items():
            vals = [values[(t, probe, metric)] for t in tasks]
            reps = mean_replicates(res, probe, metric, tasks)
            lo, hi, nb = bs.percentile_ci(reps, ci_level) if reps is not None else (None, None, 0)
            out.append(
                {
                    "model": model,
                    "task": "mean",
                    "probe": probe,
                    "metric": metric,
                    "value": sum(vals) / len(vals) if vals else None,
                    "ci_low": lo,
                    "ci_high": hi,
                    "n": len(vals),
                    "n_positive": None,
                    "n_boot": nb,
                    "l2": None,
                    "note": "" if vals else "no task has a value",
                }
            )
    return out


def paired_differences(
    results: dict[str, EvalResult], reference: str, probe_metrics: list[tuple[str, str]], ci_level: float = 0.95
) -> list[dict[str, Any]]:
    """Mean over tasks of ``reference`` minus each other model's, with a paired bootstrap CI.

    Both means are taken over the tasks where both models have a value, replicate by
    replicate (the same subject resamples), so the interval is that of the difference itself,
    narrower than comparing two separate CIs. ``p_le_0``: the fraction of finite replicates
    where the difference is <= 0 (for a higher-is-better metric, how often the reference did
    not win). The oracle has its own probe name, so it is compared on ``probe_metrics`` with
    its probe replaced by "oracle".
    """
    out = []
    ref = results[reference]
    for model, res in results.items():
        if model == reference:
            continue
        for probe, metric in probe_metrics:
            other_probe = "oracle" if any(r["probe"] == "oracle" for r in res.rows) else probe
            a = {r["task"]: r["value"] for r in ref.rows if r["probe"] == probe and r["metric"] == metric}
            b = {r["task"]: r["value"] for r in res.rows if r["probe"] == other_probe and r["metric"] == metric}
            tasks = [t for t in a if a[t] is not None and b.get(t) is not None]
            if not tasks:
                continue
            diff = sum(a[t] - b[t] for t in tasks) / len(tasks)
            ra = mean_replicates(ref, probe, metric, tasks)
            rb = mean_replicates(res, other_probe, metric, tasks)
            lo = hi = p = None
            nb = 0
            if ra is not None and rb is not None and ra.shape == rb.shape:
                d = ra - rb
                lo, hi, nb = bs.percentile_ci(d, ci_level)
                fin = d[np.isfinite(d)]
                p = float((fin <= 0).mean()) if fin.size else None
            out.append(
                {
                    "reference": reference,
                    "model": model,
                    "probe": probe,
                    "metric": metric,
                    "tasks": len(tasks),
                    "diff": diff,
                    "ci_low": lo,
                    "ci_high": hi,
                    "n_boot": nb,
                    "p_le_0": p,
                }
            )
    return out


def format_differences(rows: list[dict[str, Any]]) -> str:
    """Markdown table of ``paired_differences`` rows."""
    if not rows:
        return ""
    ref = rows[0]["reference"]
    lines = [
        f"| {ref} minus | probe | metric | difference of task means [95% paired CI] | P(diff <= 0) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        ci = f" [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]" if r["ci_low"] is not None else ""
        p = f"{r['p_le_0']:.3f}" if r["p_le_0"] is not None else "-"
        lines.append(f"| {r['model']} | {r['probe']} | {r['metric']} | {r['diff']:+.3f}{ci} | {p} |")
    return "\n".join(lines)


def _cell(r: dict | None) -> str:
    if r is None:
        return "-"
    if r["value"] is None:
        return "n/a"
    s = f"{r['value']:.3f}"
    if r.get("ci_low") is not None and not math.isnan(r["ci_low"]):
        s += f" [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
    return s


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: one line per (task, probe, metric), one column per model."""
    models = list(dict.fromkeys(r.get("model", "model") for r in rows))
    keys = list(dict.fromkeys((r["task"], r["probe"], r["metric"]) for r in rows))
    # the per-task lines first, the means last
    keys.sort(key=lambda k: (k[0] == "mean",))
    index = {(r.get("model", "model"), r["task"], r["probe"], r["metric"]): r for r in rows}
    lines = ["| task | probe | metric | " + " | ".join(models) + " |", "|---|---|---|" + "---|" * len(models)]
    for task, probe, metric in keys:
        cells = [_cell(index.get((m, task, probe, metric))) for m in models]
        arrow = TARGETS.get(metric) or ("↑" if HIGHER_IS_BETTER.get(metric, True) else "↓")
        lines.append(f"| {task} | {probe} | {metric} {arrow} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
