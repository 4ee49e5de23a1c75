"""Combine several models' results into one tidy table, and print it as markdown."""

from __future__ import annotations

import math
from typing import Any

from tte_scale.eval.protocol import EvalResult

__all__ = ["compare_models", "format_table", "HIGHER_IS_BETTER"]

HIGHER_IS_BETTER = {"auroc": True, "auprc": True, "c_index": True, "c_index_td": True, "ibs": False}


def compare_models(results: dict[str, EvalResult]) -> list[dict[str, Any]]:
    """All rows of all models with a ``model`` column, plus per (model, probe, metric) a row
    with ``task == "mean"``: the plain mean over the tasks that have a value (``n`` counts
    those tasks; no CI, the tasks' intervals are not independent)."""
    out: list[dict[str, Any]] = []
    for model, res in results.items():
        rows = [{"model": model, **r} for r in res.rows]
        out += rows
        groups: dict[tuple[str, str], list[float]] = {}
        for r in rows:
            vals = groups.setdefault((r["probe"], r["metric"]), [])
            if r["value"] is not None:
                vals.append(r["value"])
        for (probe, metric), vals in groups.items():
            out.append({
                "model": model, "task": "mean", "probe": probe, "metric": metric,
                "value": sum(vals) / len(vals) if vals else None, "ci_low": None, "ci_high": None,
                "n": len(vals), "n_positive": None, "n_boot": 0, "l2": None,
                "note": "" if vals else "no task has a value",
            })
    return out


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
        arrow = "↑" if HIGHER_IS_BETTER.get(metric, True) else "↓"
        lines.append(f"| {task} | {probe} | {metric} {arrow} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
