"""The suite's summary: one headline row per stage figure, a markdown table, a scaling chart.

Headlines are read from each stage's own results JSON. The stage scripts evolve, so a figure a
script no longer writes is shown as "see <stage>.md" rather than failing the whole summary.
Figures from a shared CPU are quoted as ratios measured within one run (the ``vs`` column).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

Headline = dict[str, Any]  # {"figure": str, "value": str, "vs": str}


def _h(figure: str, value: str, vs: str = "") -> Headline:
    return {"figure": figure, "value": value, "vs": vs}


def _synth(r: dict) -> list[Headline]:
    runs = r["runs"]
    last = runs[-1]
    out = [_h(f"subjects/s at N={last['subjects']:,}", f"{last['subjects_per_s']:.2f}")]
    if len(runs) > 1:
        out.append(
            _h(
                "peak RSS, largest N vs smallest",
                f"{last['peak_rss_mib']:.0f} MiB",
                f"{last['peak_rss_mib'] / runs[0]['peak_rss_mib']:.2f}x at {last['subjects'] / runs[0]['subjects']:.0f}x N",
            )
        )
    else:
        out.append(_h(f"peak RSS at N={last['subjects']:,}", f"{last['peak_rss_mib']:.0f} MiB"))
    return out


def _labels(r: dict) -> list[Headline]:
    res = {x["kind"]: x for x in r["results"]}
    ours = res["ours"]
    out = [
        _h(
            f"events/CPU-s ({r['cohort']['events'] / 1e6:.1f}M events, K={r['tasks']:,})",
            f"{ours['events_per_cpu_s']:,.0f}",
            f"{r['speedup_vs_pandas']:.1f}x pandas" if r.get("speedup_vs_pandas") else "",
        )
    ]
    if "pandas" in res:
        out.append(
            _h(
                "peak RSS",
                f"{ours['peak_rss_mb']:,.0f} MB",
                f"{res['pandas']['peak_rss_mb'] / ours['peak_rss_mb']:.1f}x less than pandas",
            )
        )
    return out


def _shard(r: dict) -> list[Headline]:
    codecs = {c["codec"]: c for c in r["codecs"]}
    pick = codecs[r["pick"]]
    out = [_h(f"codec {r['pick']}: ratio, decode", f"{pick['ratio']:.2f}x, {pick['decode_GBps']:.2f} GB/s")]
    for config in sorted({j["config"] for j in r["jobs"]}):
        rate = {j["runner"]: j["volumes_per_s"] for j in r["jobs"] if j["config"] == config}
        plain = next((v for k, v in rate.items() if k.startswith("plain")), None)
        best = max(rate.items(), key=lambda kv: kv[1])
        out.append(
            _h(
                f"sharding volumes/s ({config} config, best: {best[0]})",
                f"{best[1]:.2f}",
                f"{best[1] / plain:.2f}x plain loop" if plain else "",
            )
        )
    return out


def _loader(r: dict) -> list[Headline]:
    rates = r["volumes_per_s"]
    # Per core where the script says how many cores a row used (2 workers = 2 cores).
    per_core = {k: v.get("per_core_volumes_per_s", v["volumes_per_s"]) for k, v in r.get("rows", {}).items()} or rates
    monai = next(v for k, v in per_core.items() if k.startswith("MONAI"))
    limit = next(v for k, v in per_core.items() if k.startswith("decode limit"))
    ours = {k: v for k, v in per_core.items() if k.startswith("tte_scale loader")}
    best = max(ours.items(), key=lambda kv: kv[1])
    top = max((v for k, v in rates.items() if k.startswith("tte_scale loader")))
    return [
        _h(
            f"volumes/s per core {r['shape']} (best: {best[0].removeprefix('tte_scale loader, ')})",
            f"{best[1]:.1f}",
            f"{best[1] / monai:.1f}x MONAI, {best[1] / limit:.0%} of decode limit",
        ),
        _h("volumes/s, all workers", f"{top:.1f}"),
    ]


def _loss(r: dict) -> list[Headline]:
    rows = r["rows"]
    out = (
        [
            _h(
                f"eager loss fwd+bwd ({r['device']}, {r['dtype']}, {len(rows)} sizes)",
                f"{min(x['eager']['ms'] for x in rows):.2f}-{max(x['eager']['ms'] for x in rows):.2f} ms",
                f"B {min(x['B'] for x in rows)}-{max(x['B'] for x in rows)}, K {min(x['K'] for x in rows):,}-"
                f"{max(x['K'] for x in rows):,}",
            )
        ]
        if rows and all("eager" in x for x in rows)
        else []
    )
    for m in ("compiled", "fused"):
        if f"{m}_speedup_vs_eager" in r:
            out.append(
                _h(
                    f"{m} loss fwd+bwd ({r['device']}, {r['dtype']})",
                    f"{min(x[m]['ms'] for x in r['rows']):.2f}-{max(x[m]['ms'] for x in r['rows']):.2f} ms",
                    f"{r[f'{m}_speedup_vs_eager']:.2f}x eager (geomean over {len(r['rows'])} sizes)",
                )
            )
        elif all(m in x and "eager" in x for x in r["rows"]) and r["rows"]:  # results written before the geomean
            ratios = [x["eager"]["ms"] / x[m]["ms"] for x in r["rows"]]
            out.append(
                _h(
                    f"{m} loss fwd+bwd ({r['device']})",
                    f"{len(ratios)} sizes",
                    f"{min(ratios):.2f}-{max(ratios):.2f}x eager",
                )
            )
    ws = [x["fused_workspace_vs_eager"] for x in r["rows"] if "fused_workspace_vs_eager" in x]
    if ws:
        out.append(_h("fused loss workspace", f"{max(ws):.1%} of eager (worst size)"))
    return out


def _model(r: dict) -> list[Headline]:
    out = []
    for x in r["rows"]:
        vs = f"{x['speedup_vs_monai']:.2f}x MONAI ViT" if "speedup_vs_monai" in x else ""
        mfu = f", MFU {x['ours_mfu']:.1%}" if x.get("ours_mfu") else ""
        out.append(
            _h(
                f"{x['model']} train samples/s at {'x'.join(map(str, x['img']))} ({r['amp']})",
                f"{x['ours_samples_s']:.3f} ({x['ours_tflops']:.3f} TFLOP/s{mfu})",
                vs,
            )
        )
    return out


def _train(r: dict) -> list[Headline]:
    out = []
    for x in r["rows"]:
        if "volumes_per_s" not in x:  # the older ZeRO-only sweep
            continue
        mfu = "n/a" if x.get("mfu") is None else f"{x['mfu']:.1%}"
        vs = (
            f"{x['scaling_efficiency']:.0%} scaling efficiency"
            if x["world_size"] > 1 and "scaling_efficiency" in x
            else ""
        )
        out.append(
            _h(
                f"ZeRO-{x['zero_stage']}, {x['world_size']} rank(s): volumes/s (tokens/s, MFU, data wait)",
                f"{x['volumes_per_s']:.2f} ({x['tokens_per_s']:,.0f}, {mfu}, {x['data_wait_frac']:.0%})",
                vs,
            )
        )
    return out


def _eval(r: dict) -> list[Headline]:
    rows = [x for x in r["rows"] if x["what"] == "harrell_cindex"]
    out = []
    with_ll = [x for x in rows if x.get("lifelines_s")]
    if with_ll:
        x = with_ll[-1]
        out.append(
            _h(
                f"Harrell C-index, n={x['n']:,}",
                f"{x['ours_s']:.4f} s",
                f"{x['lifelines_s'] / x['ours_s']:.1f}x lifelines",
            )
        )
    if rows:
        x = rows[-1]
        out.append(_h(f"Harrell C-index, n={x['n']:,}", f"{x['ours_s']:.3f} s"))
    return out


def _rehearsal(r: dict) -> list[Headline]:
    out = [
        _h("full-size rehearsal, all stages", f"{r['total_wall_s'] / 60:.1f} min", f"load {r['meta']['load_avg_1m']}")
    ]
    train = [s for s in r["stages"] if "train" in s and s["train"].get("model_state_gib_per_rank")]
    for s in train[-1:]:
        out.append(
            _h(
                f"model state per rank, {s['variant']['name']} ({s['estimate']['params'] / 1e6:.0f} M params)",
                f"{s['train']['model_state_gib_per_rank']:.2f} GiB",
                f"{s['train']['measured_over_estimate']:.2f}x DeepSpeed's estimate",
            )
        )
    return out


EXTRACT: dict[str, Callable[[dict], list[Headline]]] = {
    "synth": _synth,
    "labels": _labels,
    "shard": _shard,
    "loader": _loader,
    "loss": _loss,
    "model": _model,
    "train": _train,
    "eval": _eval,
    "rehearsal": _rehearsal,
}


def headlines(stage: str, result: dict) -> list[Headline]:
    try:
        rows = EXTRACT[stage](result)
    except (KeyError, TypeError, ValueError, StopIteration, ZeroDivisionError) as exc:
        return [_h("(figures not recognised)", f"see {stage}.md", f"{type(exc).__name__}: {exc}")]
    return rows or [_h("(no headline figure)", f"see {stage}.md")]


def build_summary(records: list[dict], meta: dict, machine: str) -> dict:
    """The summary JSON: machine info once, per stage its status, command and headlines."""
    stages = []
    for rec in records:
        entry = {k: rec[k] for k in ("stage", "status", "command", "seconds", "error", "device") if k in rec}
        if rec.get("status") == "ok":
            entry["machine"] = rec["result"].get("machine", machine)
            entry["headlines"] = headlines(rec["stage"], rec["result"])
        stages.append(entry)
    return {"machine": machine, "meta": meta, "stages": stages}


def to_markdown(summary: dict, chart: str | None = None) -> str:
    meta = summary["meta"]
    sw = ", ".join(f"{k} {v}" for k, v in meta.get("software", {}).items() if v)
    lines = [
        f"# tte-scale benchmark summary ({summary['machine']})",
        "",
        f"{meta.get('cpu', '?')}, {meta.get('cpu_count', '?')} cores, {meta.get('mem_gib', '?')} GiB"
        + (f"; GPUs: {', '.join(g['name'] for g in meta['gpus'])}" if meta.get("gpus") else "; no GPU")
        + f"; load average {meta.get('load_avg_1m', '?')} at the start; {meta.get('date', '')}.",
        f"Software: {sw}.",
        "",
        "Ratios (`vs`) compare implementations measured side by side in the same run; on a shared CPU the "
        "bare times are noisy, the ratios less so.",
        "",
        "| stage | figure | value | vs baseline | details |",
        "|---|---|---|---|---|",
    ]
    for st in summary["stages"]:
        if st["status"] != "ok":
            lines.append(f"| {st['stage']} | **failed** | {_cell(st.get('error', ''))} | | |")
            continue
        link = f"[{st['stage']}.md]({st['stage']}.md)"
        for i, h in enumerate(st["headlines"]):
            lines.append(
                f"| {st['stage'] if i == 0 else ''} | {_cell(h['figure'])} | {_cell(h['value'])} | "
                f"{_cell(h['vs'])} | {link if i == 0 else ''} |"
            )
    if chart:
        lines += ["", f"![scaling curves]({chart})"]
    lines += ["", "Commands:", ""] + [f"- {st['stage']}: `{st['command']}`" for st in summary["stages"]]
    return "\n".join(lines) + "\n"


def _cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


# -- chart ----------------------------------------------------------------------------------------


def scaling_curves(results: dict[str, dict]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Per panel, per series, (x, y) points: train volumes/s vs ranks, loader and sharding
    volumes/s vs workers. Panels without data are left out."""
    panels: dict[str, dict[str, list[tuple[float, float]]]] = {}
    train = results.get("train", {})
    for x in train.get("rows", []):
        if "volumes_per_s" in x:
            series = panels.setdefault("train: volumes/s vs ranks", {}).setdefault(f"ZeRO-{x['zero_stage']}", [])
            series.append((x["world_size"], x["volumes_per_s"]))
    for name, v in results.get("loader", {}).get("volumes_per_s", {}).items():
        m = re.match(r"tte_scale loader, (\w+), (\d+) worker", name)
        if m:
            panels.setdefault("loader: volumes/s vs workers", {}).setdefault(m[1], []).append((int(m[2]), v))
        elif name.startswith(("MONAI", "decode limit")):
            panels.setdefault("loader: volumes/s vs workers", {})[f"{name.split(' (')[0]} (1 core)"] = [(1, v)]
    jobs = results.get("shard", {}).get("jobs", [])
    for j in jobs:
        m = re.match(r"Ray, (\d+) worker", j["runner"])
        workers = j.get("workers", int(m[1]) if m else 0)
        runner = "" if (m or workers == 0) else f", {j['runner']}"
        series = panels.setdefault("sharding: volumes/s vs Ray workers (0 = plain loop)", {})
        if workers == 0 and "workers" in j:  # the plain loop is the start of every Ray runner's curve
            for other in {o["runner"] for o in jobs if o["config"] == j["config"] and o.get("workers")}:
                series.setdefault(f"{j['config']} config, {other}", []).append((0, j["volumes_per_s"]))
            continue
        series.setdefault(f"{j['config']} config{runner}", []).append((workers, j["volumes_per_s"]))
    return {k: {s: sorted(p) for s, p in v.items()} for k, v in panels.items() if v}


def write_chart(results: dict[str, dict], path: Path, title: str) -> Path | None:
    """PNG of the scaling curves; None when no stage measured a curve."""
    panels = scaling_curves(results)
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (name, series) in zip(axes[0], panels.items()):
        for label, pts in series.items():
            xs, ys = zip(*pts)
            if len(pts) == 1 and not name.startswith("train"):
                ax.axhline(ys[0], ls="--", lw=1, label=label, color="gray" if "MONAI" in label else "black")
            else:
                ax.plot(xs, ys, marker="o", label=label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(name.split(" vs ")[-1].split(" (")[0])
        ax.set_ylabel("volumes/s")
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # ranks and workers are whole
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best", framealpha=0.6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_summary(out: Path, records: list[dict], meta: dict, machine: str) -> dict[str, Path]:
    """summary.json, summary.md and scaling.png (when there is a curve) in ``out``."""
    summary = build_summary(records, meta, machine)
    results = {r["stage"]: r["result"] for r in records if r.get("status") == "ok"}
    chart = write_chart(results, out / "scaling.png", f"tte-scale scaling curves ({machine})")
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    (out / "summary.md").write_text(to_markdown(summary, chart.name if chart else None))
    paths = {"json": out / "summary.json", "md": out / "summary.md"}
    if chart:
        paths["png"] = chart
    return paths
