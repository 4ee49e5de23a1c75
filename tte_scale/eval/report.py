"""The evaluation report: a markdown page, PNG figures and the results as JSON, in one folder.

``write_report(out_dir, results, loss_curves, km_inputs)`` writes

* ``report.md``: the comparison table (also returned by ``format_table``), figure links;
* ``results.json`` (every model's tidy rows) and ``results.parquet``;
* ``figures/auroc.png``, ``figures/c_index.png``: per task, one bar per model, 95% CI whiskers;
* ``figures/km_<model>.png``: held-out Kaplan-Meier curves by quartile of predicted risk;
* ``figures/loss.png``: training loss curves (``read_loss_curve`` reads a telemetry JSONL).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from tte_scale.errors import InputError
from tte_scale.eval.compare import compare_models, format_differences, format_table, paired_differences

HEADLINE = [("logistic", "auroc"), ("cox", "c_index")]
"""(probe, metric) pairs of the headline: the paper's AUROC and Harrell's C-index."""
from tte_scale.eval.protocol import EvalResult
from tte_scale.eval.survival import kaplan_meier

__all__ = ["write_report", "read_loss_curve", "risk_quartile_km"]


def read_loss_curve(path: str | Path) -> list[tuple[int, float]]:
    """(step, loss) pairs from a JSONL file; lines without both fields are skipped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: loss telemetry file not found")
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: line {i} is not JSON: {exc}") from None
        if isinstance(rec, dict) and "step" in rec and "loss" in rec and rec["loss"] is not None:
            out.append((int(rec["step"]), float(rec["loss"])))
    return out


def risk_quartile_km(risk_N, time_N, event_N) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Kaplan-Meier curve of each quartile of predicted risk: (label, times, survival)."""
    risk_N, time_N, event_N = np.asarray(risk_N, float), np.asarray(time_N, float), np.asarray(event_N, bool)
    # rank-based quartiles so that tied risks cannot empty a group
    q = np.minimum((np.argsort(np.argsort(risk_N, kind="stable"), kind="stable") * 4) // max(len(risk_N), 1), 3)
    curves = []
    for g in range(4):
        m = q == g
        if m.any():
            km = kaplan_meier(time_N[m], event_N[m])
            t = np.concatenate([[0.0], km.time_U.numpy()])
            s = np.concatenate([[1.0], km.value_U.numpy()])
            curves.append((f"Q{g + 1} ({'lowest' if g == 0 else 'highest' if g == 3 else 'mid'} risk), n={int(m.sum())}", t, s))
    return curves


def _bars(ax, rows, models, tasks, metric):
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(tasks))
    for i, m in enumerate(models):
        vals, lo, hi = [], [], []
        for t in tasks:
            r = rows.get((m, t, metric))
            v = r["value"] if r and r["value"] is not None else math.nan
            vals.append(v)
            lo.append(v - r["ci_low"] if r and r["ci_low"] is not None else 0.0)
            hi.append(r["ci_high"] - v if r and r["ci_high"] is not None else 0.0)
        ax.bar(x + (i - (len(models) - 1) / 2) * width, vals, width, yerr=[lo, hi], capsize=2, label=m)
    ax.set_xticks(x, tasks, rotation=30, ha="right")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)


def write_report(out_dir: str | Path, results: dict[str, EvalResult],
                 loss_curves: dict[str, list[tuple[int, float]]] | None = None,
                 km_inputs: dict[str, dict[str, dict[str, np.ndarray]]] | None = None,
                 *, title: str = "tte_scale evaluation") -> Path:
    """Write the report folder; returns the path of ``report.md``.

    ``km_inputs[model][task] = {"risk", "time", "event"}`` (held-out); defaults to each
    result's ``km`` (the Cox probe's risks). Bars show the paper's pairing: the logistic
    probe's AUROC and the Cox probe's C-index (the oracle's own where it is the model).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not results:
        raise InputError("write_report: no results to report")
    out = Path(out_dir)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    table = compare_models(results)
    models = list(results)
    tasks = list(dict.fromkeys(r["task"] for r in table if r["task"] != "mean"))
    figs: list[tuple[str, str]] = []

    for metric, probes in (("auroc", ("logistic", "oracle")), ("c_index", ("cox", "oracle"))):
        sel = {(r["model"], r["task"], metric): r for r in table if r["metric"] == metric and r["probe"] in probes}
        if sel:
            fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(tasks) * max(1, len(models)) ** 0.5), 4))
            _bars(ax, sel, models, tasks, metric)
            ax.set_title(f"{metric} on held_out (95% bootstrap CI)")
            fig.tight_layout()
            fig.savefig(fig_dir / f"{metric}.png", dpi=110)
            plt.close(fig)
            figs.append((f"{metric} per task", f"figures/{metric}.png"))

    km_inputs = km_inputs if km_inputs is not None else {m: r.km for m, r in results.items() if r.km}
    for model, per_task in km_inputs.items():
        if not per_task:
            continue
        cols = min(4, len(per_task))
        rows_n = math.ceil(len(per_task) / cols)
        fig, axes = plt.subplots(rows_n, cols, figsize=(3.6 * cols, 3.0 * rows_n), squeeze=False)
        for ax, (task, d) in zip(axes.flat, per_task.items()):
            for label, t, s in risk_quartile_km(d["risk"], d["time"], d["event"]):
                ax.step(t, s, where="post", label=label)
            ax.set_title(task, fontsize=9)
            ax.set_xlabel("days")
            ax.set_ylim(0, 1.02)
            ax.legend(fontsize=6)
        for ax in list(axes.flat)[len(per_task):]:
            ax.axis("off")
        fig.suptitle(f"{model}: Kaplan-Meier by predicted-risk quartile (held_out)")
        fig.tight_layout()
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in model)
        fig.savefig(fig_dir / f"km_{safe}.png", dpi=110)
        plt.close(fig)
        figs.append((f"Kaplan-Meier, {model}", f"figures/km_{safe}.png"))

    if loss_curves:
        fig, ax = plt.subplots(figsize=(6, 4))
        for model, curve in loss_curves.items():
            if curve:
                steps, losses = zip(*sorted(curve))
                ax.plot(steps, losses, label=model)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.legend()
        fig.tight_layout()
        fig.savefig(fig_dir / "loss.png", dpi=110)
        plt.close(fig)
        figs.append(("training loss", "figures/loss.png"))

    text = format_table(table)
    (out / "results.json").write_text(json.dumps({m: json.loads(r.to_json()) for m, r in results.items()}, indent=1))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(table), out / "results.parquet")
    md = [f"# {title}", "", "Held-out metrics, 95% subject-level bootstrap intervals in brackets "
          "(↑ higher is better, ↓ lower is better). Probes fit on train, l2 chosen on tuning.", "", text, ""]
    reference = "tte" if "tte" in results else models[0]
    diffs = format_differences(paired_differences(results, reference, HEADLINE)) if len(models) > 1 else ""
    if diffs:
        md += ["## Paired differences of the task means", "",
               f"{reference}'s mean over the tasks minus each other model's, on the same bootstrap resamples "
               "of held-out subjects (a CI above 0 means the difference is not resampling noise).", "", diffs, ""]
    notes = [f"- {r['model']} / {r['task']} / {r['probe']} / {r['metric']}: {r['note']}" for r in table if r.get("note")]
    if notes:
        md += ["## Notes", "", *notes, ""]
    for caption, rel in figs:
        md += [f"## {caption}", "", f"![{caption}]({rel})", ""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path
