"""The evaluation report: a markdown page, PNG figures and the results as JSON, in one folder.

``write_report(out_dir, results, loss_curves, km_inputs)`` writes

* ``report.md``: the comparison table (also returned by ``format_table``), figure links;
* ``results.json`` (every model's tidy rows) and ``results.parquet``;
* ``figures/auroc.png``, ``figures/c_index.png``: per task, one bar per model, 95% CI whiskers;
* ``figures/km_<model>.png``: held-out Kaplan-Meier curves by quartile of predicted risk;
* ``figures/calibration_<model>.png``: reliability of the logistic probe (probability bins) and
  of the survival probes at each task's horizon (risk deciles vs Kaplan-Meier);
* ``figures/label_efficiency.png`` (with label-efficiency rows): task means vs training size;
* ``figures/loss.png``: training loss curves (``read_loss_curve`` reads a telemetry JSONL).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from tte_scale.errors import InputError
from tte_scale.eval.compare import METRICS, compare_models, format_differences, format_table, paired_differences
from tte_scale.eval.protocol import EvalResult
from tte_scale.eval.survival import kaplan_meier

HEADLINE = [("logistic", "auroc"), ("cox", "c_index")]
"""(probe, metric) pairs of the headline: the paper's AUROC (logistic probe) and Harrell's C at
each task's horizon (Cox probe), each averaged over the tasks."""
HEADLINE_TEXT = (
    "Headline: the mean over the tasks of the logistic probe's AUROC and of the Cox probe's "
    "`c_index`, Harrell's C at each task's horizon (events after the horizon are censored there). "
    "`c_index_full`, Harrell's C over the whole follow-up, is reported once per outcome (mortality at "
    "1, 6 and 12 months is one outcome) and its mean is over outcomes."
)

__all__ = ["write_report", "read_loss_curve", "risk_quartile_km"]


def read_loss_curve(path: str | Path) -> list[tuple[int, float]]:
    """(step, loss) pairs of the train records of a trainer's metrics.jsonl, in step order: after a
    resume, the records the resumed run wrote replace those of the steps it repeated
    (``tte_scale.train.metrics_log.read_metrics``); records without a loss are skipped."""
    from tte_scale.train.metrics_log import read_metrics

    recs = read_metrics(path, kind="train")
    return sorted((int(r["step"]), float(r["loss"])) for r in recs if r.get("loss") is not None)


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
            curves.append(
                (f"Q{g + 1} ({'lowest' if g == 0 else 'highest' if g == 3 else 'mid'} risk), n={int(m.sum())}", t, s)
            )
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


def write_report(
    out_dir: str | Path,
    results: dict[str, EvalResult],
    loss_curves: dict[str, list[tuple[int, float]]] | None = None,
    km_inputs: dict[str, dict[str, dict[str, np.ndarray]]] | None = None,
    *,
    title: str = "tte_scale evaluation",
    excluded: list[dict] | None = None,
    efficiency: list[dict] | None = None,
) -> Path:
    """Write the report folder; returns the path of ``report.md``.

    ``excluded``: scans that were not evaluated, each ``{"split", "scan_id", "reason", ...}``
    (e.g. a volume that failed its integrity check); listed with counts per split and reason.

    ``efficiency``: label-efficiency rows (``efficiency.label_efficiency``): a table of the
    headline task means per training size, ``label_efficiency.json`` and
    ``figures/label_efficiency.png``.

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
        fig, axes = _task_grid(plt, len(per_task), (3.6, 3.0))
        for ax, (task, d) in zip(axes.flat, per_task.items()):
            for label, t, s in risk_quartile_km(d["risk"], d["time"], d["event"]):
                ax.step(t, s, where="post", label=label)
            ax.set_title(task, fontsize=9)
            ax.set_xlabel("days")
            ax.set_ylim(0, 1.02)
            ax.legend(fontsize=6)
        name = f"km_{_file_name(model)}.png"
        _save_grid(
            plt,
            fig,
            axes,
            len(per_task),
            f"{model}: Kaplan-Meier by predicted-risk quartile (held_out)",
            fig_dir / name,
        )
        figs.append((f"Kaplan-Meier, {model}", f"figures/{name}"))

    for model, res in results.items():
        if res.calibration:
            safe = _file_name(model)
            _calibration_figure(plt, model, res.calibration, fig_dir / f"calibration_{safe}.png")
            figs.append((f"calibration, {model}", f"figures/calibration_{safe}.png"))

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

    eff_md: list[str] = []
    if efficiency:
        from tte_scale.eval.efficiency import efficiency_means

        means = efficiency_means(efficiency)
        (out / "label_efficiency.json").write_text(json.dumps({"rows": efficiency, "means": means}, indent=1))
        _efficiency_figure(plt, means, fig_dir / "label_efficiency.png")
        figs.append(("label efficiency", "figures/label_efficiency.png"))
        eff_md = _efficiency_section(means)

    text = format_table(table)
    (out / "results.json").write_text(json.dumps({m: json.loads(r.to_json()) for m, r in results.items()}, indent=1))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(table), out / "results.parquet")
    md = [
        f"# {title}",
        "",
        "Held-out metrics, 95% subject-level bootstrap intervals in brackets "
        "(↑ higher is better, ↓ lower is better). Probes fit on train, l2 chosen on tuning.",
        "",
        HEADLINE_TEXT,
        "",
        text,
        "",
        *_metric_legend(table),
    ]
    reference = "tte" if "tte" in results else models[0]
    diffs = format_differences(paired_differences(results, reference, HEADLINE)) if len(models) > 1 else ""
    if diffs:
        md += [
            "## Paired differences of the task means",
            "",
            f"{reference}'s mean over the tasks minus each other model's, on the same bootstrap resamples "
            "of held-out subjects (a CI above 0 means the difference is not resampling noise).",
            "",
            diffs,
            "",
        ]
    md += eff_md
    if excluded:
        md += _excluded_section(excluded)
    notes = [
        f"- {r['model']} / {r['task']} / {r['probe']} / {r['metric']}: {r['note']}" for r in table if r.get("note")
    ]
    if notes:
        md += ["## Notes", "", *notes, ""]
    for caption, rel in figs:
        md += [f"## {caption}", "", f"![{caption}]({rel})", ""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path


def _calibration_figure(plt, model: str, calibration: dict[str, dict], path: Path) -> None:
    """Per task: observed vs predicted risk by the horizon; the logistic probe's probability
    bins and each survival probe's risk deciles (Kaplan-Meier observed); marker area ~ rows."""
    tasks = list(dict.fromkeys(k.split("/")[0] for k in calibration))
    fig, axes = _task_grid(plt, len(tasks), (3.4, 3.2))
    for ax, task in zip(axes.flat, tasks):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        for key, d in calibration.items():
            t, probe = key.split("/")
            if t != task or not d["pred"]:
                continue
            size = 8 + 60 * np.asarray(d["n"], float) / max(d["n"])
            what = "bins" if d["kind"] == "binary" else "deciles, KM"
            (line,) = ax.plot(d["pred"], d["obs"], lw=0.8)
            ax.scatter(d["pred"], d["obs"], s=size, color=line.get_color(), label=f"{probe} ({what})")
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("predicted risk by the horizon", fontsize=8)
        ax.set_ylabel("observed", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=6)
    _save_grid(plt, fig, axes, len(tasks), f"{model}: calibration on held_out", path)


def _efficiency_figure(plt, means: list[dict], path: Path) -> None:
    """Task mean vs training scans per model, one panel per headline metric; bars: min-max over
    the resamples."""
    from matplotlib.ticker import NullFormatter

    panels = [(p, m) for p, m in HEADLINE if any(r["probe"] == p and r["metric"] == m for r in means)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 3.8), squeeze=False)
    for ax, (probe, metric) in zip(axes[0], panels):
        for model in dict.fromkeys(r["model"] for r in means):
            pts = sorted(
                (r["train_rows"], r["mean"], r["min"], r["max"])
                for r in means
                if r["model"] == model and r["probe"] == probe and r["metric"] == metric and r["mean"] is not None
            )
            if pts:
                x, y, lo, hi = map(np.asarray, zip(*pts))
                ax.errorbar(x, y, yerr=[y - lo, hi - y], marker="o", capsize=3, label=model)
        ax.set_xscale("log")
        ticks = sorted({r["train_rows"] for r in means})
        ax.set_xticks(ticks, [f"{v:.0f}" for v in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("training scans")
        ax.set_ylabel(f"{probe} {metric}, mean over tasks")
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.legend(fontsize=8)
    fig.suptitle("label efficiency (held_out; bars: min-max over resamples)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _efficiency_section(means: list[dict]) -> list[str]:
    """Markdown: the headline task means per training size (mean [min, max] over resamples)."""
    md = [
        "## Label efficiency",
        "",
        "The probes refit on random subject-level subsets of the training split (l2 chosen on the whole tuning "
        "split, held-out metrics without bootstrap): mean over tasks, then mean [min, max] over the resamples. "
        "The last size is the whole training split.",
        "",
        "| model | probe | metric | training scans | resamples | task mean [min, max] |",
        "|---|---|---|---|---|---|",
    ]
    order = {m: i for i, m in enumerate(dict.fromkeys(r["model"] for r in means))}
    pairs = {pm: i for i, pm in enumerate(HEADLINE)}
    for r in sorted(
        means, key=lambda r: (order[r["model"]], pairs.get((r["probe"], r["metric"]), 99), r["train_rows"])
    ):
        if (r["probe"], r["metric"]) not in HEADLINE:
            continue
        v = "n/a" if r["mean"] is None else f"{r['mean']:.3f} [{r['min']:.3f}, {r['max']:.3f}]"
        md.append(f"| {r['model']} | {r['probe']} | {r['metric']} | {r['train_rows']:.0f} | {r['resamples']} | {v} |")
    return md + [""]


def _metric_legend(table: list[dict]) -> list[str]:
    """Markdown: what each metric of the table is."""
    used = list(dict.fromkeys(r["metric"] for r in table))
    lines = [f"- `{m}`: {METRICS[m]}" for m in used if m in METRICS]
    return ["Metrics:", "", *lines, ""] if lines else []


def _excluded_section(excluded: list[dict], limit: int = 50) -> list[str]:
    """Markdown: how many scans of each split were not evaluated and why, then the first ones."""
    counts: dict[tuple[str, str], int] = {}
    for e in excluded:
        k = (e["split"], e.get("kind", "excluded"))
        counts[k] = counts.get(k, 0) + 1
    md = [
        "## Excluded scans",
        "",
        f"{len(excluded)} scan(s) were not evaluated by any model (every model is evaluated on the same scans).",
        "",
        "| split | kind | scans |",
        "|---|---|---|",
        *[f"| {split} | {kind} | {n} |" for (split, kind), n in sorted(counts.items())],
        "",
    ]
    for e in excluded[:limit]:
        where = f" ({e['where']})" if e.get("where") else ""
        md.append(f"- {e['split']} / {e['scan_id']}: {e.get('reason', '')}{where}")
    if len(excluded) > limit:
        md.append(f"- ... and {len(excluded) - limit} more (summary.json)")
    return md + [""]


def _task_grid(plt, n: int, panel_in: tuple[float, float]):
    """A figure with one panel per task, at most 4 a row (``panel_in``: one panel's inches)."""
    cols = min(4, n)
    rows_n = math.ceil(n / cols)
    return plt.subplots(rows_n, cols, figsize=(panel_in[0] * cols, panel_in[1] * rows_n), squeeze=False)


def _save_grid(plt, fig, axes, used: int, title: str, path: Path) -> None:
    """Blank the unused panels, title the grid, write it and free it."""
    for ax in list(axes.flat)[used:]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _file_name(model: str) -> str:
    """A model's name as a file-name part (baseline names are user-given: ``--baseline a/b=...``)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in model)
