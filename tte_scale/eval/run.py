"""`tte-scale eval` as one library call: encoders -> embeddings -> probes -> report.

``run_eval(EvalRun(...))`` evaluates the exported encoder and its baselines on the benchmark
tasks of a labels folder with the protocol of ``protocol.py`` and writes the report folder
(``report.write_report``) plus ``summary.json``; it returns that summary. The CLI
(``tte_scale/commands/eval.py``) only parses arguments into an :class:`EvalRun`.

Example::

    summary = run_eval(EvalRun(checkpoint="runs/x/encoder", shards="shards", labels="labels",
                               out="eval", baselines=[("random_init", None)]))
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tte_scale.config import check, resolve_config_path
from tte_scale.embed.encoder import DEFAULT_HU_WINDOW
from tte_scale.embed.encoder import export_hu_window as _hu_window  # noqa: F401 (tests call it by this name)
from tte_scale.embed.encoder import load_export as _exported
from tte_scale.errors import InputError
from tte_scale.outputs import check_replaceable, mark

__all__ = ["EvalRun", "EvalOutcome", "run_eval", "RESERVED", "DEFAULT_HU_WINDOW", "DEFAULT_TASKS"]

RESERVED = ("tte", "random_init", "oracle")
"""Model names the run gives itself: the checkpoint, the random baseline, the oracle."""
DEFAULT_TASKS = "configs/tasks/inspect.yaml"
COMMAND = "eval"
"""Owner name in the ``tte_scale.outputs`` marker of a report folder."""


@dataclass(kw_only=True, slots=True)
class EvalRun:
    """One evaluation: which encoders, which data, where the report goes."""

    checkpoint: str
    """Exported encoder (folder or .safetensors written by `tte-scale train`): the model "tte"."""
    shards: str
    """Shards folder; its Zarr copy is read."""
    labels: str
    """Labels folder the shards were built from (its bench.parquet holds the benchmark labels)."""
    out: str
    """Report folder."""
    tasks: str = DEFAULT_TASKS
    """Benchmark task set (names and horizons)."""
    baselines: list[tuple[str, str | None]] = field(default_factory=list)
    """(name, export path) per baseline; path None: the checkpoint's architecture, random init."""
    per_task: list[tuple[str, str]] = field(default_factory=list)
    """(name, folder) per per-task fine-tuned model (the paper's protocol): the folder holds one
    export per benchmark task, ``<folder>/<task>/encoder`` (a `tte-scale train` run folder per
    task, ``supervised_tasks=[task]``) or ``<folder>/<task>``; task t is probed on the embeddings
    of its own export only. Each export must record that it was fine-tuned on that task alone."""
    truth: str | None = None
    """Synthetic cohort truth/ folder: adds the oracle (true log-hazards as risk scores)."""
    loss_curves: list[tuple[str, str]] = field(default_factory=list)
    """(name, telemetry JSONL) pairs plotted in the report."""
    bootstrap: int = 500
    """Bootstrap resamples for the CIs."""
    batch_size: int = 8
    """Volumes per embedding batch."""
    hu_window: tuple[float, float] | None = None
    """HU window for exports that do not store theirs (DEFAULT_HU_WINDOW when None)."""
    device: str = "cpu"
    """Torch device of the embeddings."""
    seed: int = 0
    """Seed of the random baseline and of the bootstrap."""
    max_bad_fraction: float | None = None
    """Stop when more than this fraction of a split's scans cannot be read (missing or corrupt
    volume); below it they are excluded and reported. None: the training loader's limit
    (``LoaderConfig.max_bad_fraction``)."""
    probes: list[str] | None = None
    """Probes to fit (``EvalConfig.probes``; None: its default, the linear ones)."""
    train_subsets: list[int] = field(default_factory=list)
    """Label efficiency: training-split sizes (scans) to refit the probes on; empty: off."""
    train_subset_resamples: int = 5
    """Random subject-level subsets per size."""
    progress: bool = True
    """Progress bars."""

    def __post_init__(self) -> None:
        names = [name for name, _ in self.baselines]
        check(len(set(names)) == len(names), "baselines", f"names repeat: {names}")
        per = [name for name, _ in self.per_task]
        check(
            len(set(per)) == len(per) and not set(per) & {*names, *RESERVED},
            "per_task",
            f"names must be unique and differ from the baselines' and {', '.join(RESERVED)}: {per}",
        )
        check(all("@" not in n and "/" not in n for n in per), "per_task", f"names may not hold '@' or '/': {per}")
        taken = [n for n, path in self.baselines if n in RESERVED and not (n == "random_init" and path is None)]
        check(not taken, "baselines", f"the names {taken} are reserved ({', '.join(RESERVED)})")
        check(self.bootstrap >= 0, "bootstrap", f"must be >= 0, got {self.bootstrap}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        if self.max_bad_fraction is not None:
            check(
                0.0 <= self.max_bad_fraction <= 1.0,
                "max_bad_fraction",
                f"must be in [0, 1], got {self.max_bad_fraction}",
            )

    def inputs(self) -> list[str]:
        """Every file or folder the run reads (the report folder may hold none of them)."""
        paths = [self.checkpoint, self.shards, self.labels, self.truth, self.tasks]
        paths += [p for _, p in self.per_task]
        return [p for p in paths + [p for _, p in self.baselines] + [p for _, p in self.loss_curves] if p]


def per_task_export(folder: str | Path, task: str) -> Path:
    """The export fine-tuned on ``task`` alone under a per-task folder (InputError otherwise)."""
    from tte_scale.models import read_export_config

    base = Path(folder) / task
    path = base if (base / "config.json").is_file() else base / "encoder"
    if not (path / "config.json").is_file():
        raise InputError(
            f"--per-task {folder}: no export for task {task!r} (expected {base}/encoder/ or {base}/ with "
            "config.json: the run of `tte-scale train --set objective=supervised --set supervised_tasks=[TASK]`)"
        )
    tuned = (read_export_config(path).get("pretraining") or {}).get("supervised_tasks")
    if tuned != [task]:
        raise InputError(
            f"{path}/config.json: pretraining.supervised_tasks is {tuned!r}, not [{task!r}]: this export was not "
            f"fine-tuned on {task!r} alone, so it cannot stand for that task in a per-task comparison"
        )
    return path


def _merge_results(name: str, parts: list):
    """One model's EvalResult from per-task results (rows in task order, replicates, KM, calibration)."""
    from tte_scale.eval.protocol import EvalResult

    merged = EvalResult(name, [r for p in parts for r in p.rows], parts[0].config if parts else {})
    for p in parts:
        merged.km.update(p.km)
        merged.calibration.update(p.calibration)
        merged.replicates.update(p.replicates)
    return merged


def _same_scans(embedded: dict, splits) -> tuple[dict, list[dict]]:
    """Every model evaluated on the same scans: what one model could not read (or an embedding
    cached before a volume was damaged) is left out for all, and listed."""
    from tte_scale.eval.embed import Embeddings

    excluded = {(e["split"], e["scan_id"]): e for emb in embedded.values() for e in emb.excluded}
    for s in splits:
        common = set.intersection(*(set(emb.scan_id[s].tolist()) for emb in embedded.values()))
        for name, emb in embedded.items():
            for scan in emb.scan_id[s].tolist():
                if scan not in common and (s, scan) not in excluded:
                    excluded[(s, scan)] = {
                        "split": s,
                        "scan_id": scan,
                        "kind": "not_embedded_by_every_model",
                        "reason": f"not embedded by every model ({name} has it: an embedding cached before the volume "
                        "became unreadable?)",
                    }
    drop = {k for k in excluded}
    out = {}
    for name, emb in embedded.items():
        keep = {s: np.array([(s, x) not in drop for x in emb.scan_id[s].tolist()], bool) for s in splits}
        out[name] = Embeddings(
            {s: emb.scan_id[s][keep[s]] for s in splits}, {s: emb.features[s][keep[s]] for s in splits}
        )
    return out, sorted(excluded.values(), key=lambda e: (list(splits).index(e["split"]), e["scan_id"]))


def _counts(excluded: list[dict]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for e in excluded:
        per = out.setdefault(e["split"], {})
        per[e["kind"]] = per.get(e["kind"], 0) + 1
    return out


def _oracle_risk(truth_dir: Path, tasks: list[str], scan_ids):
    """True log-hazards [N, T] of the held-out scans and the tasks the truth covers (a task set
    beyond the synthetic outcome model, e.g. configs/tasks/paper_tte.yaml, has none: its columns
    are 0 and the oracle skips it). A covered task without a value for some scan is an error."""
    import pyarrow.parquet as pq

    path = truth_dir / "bench.parquet"
    if not path.is_file():
        raise InputError(f"{path}: not found (--truth expects the synthetic cohort's truth/ folder)")
    t = pq.read_table(path, columns=["scan_id", "task", "log_hazard"]).to_pydict()
    lut = {(s, k): h for s, k, h in zip(t["scan_id"], t["task"], t["log_hazard"])}
    covered = [k for k in tasks if k in set(t["task"])]
    risk = np.zeros((len(scan_ids), len(tasks)))
    for i, s in enumerate(scan_ids.tolist()):
        for j, k in enumerate(tasks):
            if k in covered:
                risk[i, j] = lut.get((s, k), np.nan)
    if np.isnan(risk).any():
        raise InputError(f"{path}: no true log-hazard for some held-out scans/tasks")
    return risk, covered


@dataclass(frozen=True)
class EvalOutcome:
    """What ``run_eval`` wrote: the content of summary.json and the text the CLI prints."""

    summary: dict
    text: str


def run_eval(run: EvalRun) -> EvalOutcome | None:
    """Evaluate every encoder of ``run`` and write the report folder; rank 0 returns the outcome,
    the other ranks (which only embed) None."""
    from tte_scale.embed.run import _Comm

    # Ranks (`tte-scale launch local --nproc N -- eval ...`, torchrun, SLURM): every rank embeds
    # its share of the scans (tte_scale/eval/embed.py); rank 0 alone checks and writes the report
    # folder and fits the probes. One process without RANK/WORLD_SIZE is world 1.
    comm = _Comm()
    try:
        return _run_eval(run, comm)
    finally:
        comm.close()


def _run_eval(run: EvalRun, comm) -> EvalOutcome | None:
    import pyarrow.parquet as pq
    import torch

    from tte_scale.ehr.config import load_task_set
    from tte_scale.embed.run import _agreed, _all_ok
    from tte_scale.eval.compare import METRICS, compare_models, format_differences, format_table, paired_differences
    from tte_scale.eval.config import EvalConfig
    from tte_scale.eval.efficiency import efficiency_means, label_efficiency
    from tte_scale.eval.embed import embed_shards
    from tte_scale.eval.protocol import evaluate_embeddings, evaluate_risk_scores
    from tte_scale.eval.report import HEADLINE, HEADLINE_TEXT, read_loss_curve, write_report
    from tte_scale.eval.tables import align_to_scans, bench_tables_from_long

    out, labels, shards = Path(run.out), Path(run.labels), str(run.shards)  # shards: a folder or a URL
    no_truth: list[str] = []

    def prepare():
        # Re-using --out replaces the report of an earlier eval, so only an eval folder (its marker)
        # that holds no input may be used; checked before any work.
        check_replaceable(out, COMMAND, [*run.inputs(), resolve_config_path(run.tasks)])
        task_set = load_task_set(run.tasks)
        bench = labels / "bench.parquet"
        if not bench.is_file():
            raise InputError(f"{bench}: not found; is {labels} a folder written by `tte-scale labels`?")
        return task_set

    # Rank 0 checks the report folder and the labels; a refusal stops every rank with its line.
    task_set = _agreed(comm, prepare)
    tasks = task_set.names
    horizons = {t.name: float(t.horizon_days) for t in task_set.tasks}
    cfg = EvalConfig(
        bootstrap=run.bootstrap,
        seed=run.seed,
        horizons_days=horizons,
        train_subsets=list(run.train_subsets),
        train_subset_resamples=run.train_subset_resamples,
        **({"probes": list(run.probes)} if run.probes else {}),
    )
    splits = tuple(cfg.splits)

    encoders: dict = {}

    def load_encoders() -> None:  # every rank loads them; a bad export is refused on every rank
        encoders["tte"] = _exported(run.checkpoint, run.hu_window)
        for name, path in run.baselines:
            if path is None:  # same architecture and normalization as the checkpoint, random weights
                torch.manual_seed(run.seed)  # the same weights on every rank
                tte_model, window = encoders["tte"]
                encoders[name] = (type(tte_model)(tte_model.cfg), window)
            else:
                encoders[name] = _exported(path, run.hu_window)
        for name, folder in run.per_task:  # keyed NAME@task until the per-task results are merged
            for t in tasks:
                encoders[f"{name}@{t}"] = _exported(str(per_task_export(folder, t)), run.hu_window)

    _all_ok(comm, load_encoders)

    def mark_out():
        out.mkdir(parents=True, exist_ok=True)
        mark(out, COMMAND)

    _agreed(comm, mark_out)
    device = run.device
    if comm.world > 1 and torch.device(device).type == "cuda" and torch.device(device).index is None:
        device = f"cuda:{comm.local_rank}"

    embedded = {
        name: embed_shards(
            model,
            shards,
            splits,
            batch_size=run.batch_size,
            hu_window=window,
            device=device,
            cache_dir=out / "embeddings",
            name=name,
            max_bad_fraction=run.max_bad_fraction,
            progress=run.progress,
            comm=comm if comm.world > 1 else None,
        )
        for name, (model, window) in encoders.items()
    }
    if comm.rank != 0:  # the probes and the report are rank 0's
        return None
    tables = bench_tables_from_long(
        pq.read_table(labels / "bench.parquet"), tasks, source=str(labels / "bench.parquet")
    )
    embedded, excluded = _same_scans(embedded, splits)
    results, efficiency = {}, []
    for name, emb in embedded.items():
        if "@" in name:
            continue
        aligned = {s: align_to_scans(tables[s], emb.scan_id[s]) for s in splits}
        results[name] = evaluate_embeddings(emb.features, aligned, tasks, cfg, name=name, progress=run.progress)
        if cfg.train_subsets:
            efficiency += label_efficiency(emb.features, aligned, tasks, cfg, name=name)
    for name, _ in run.per_task:  # task t on its own export's embeddings (same scans as every model)
        parts = []
        for t in tasks:
            emb = embedded[f"{name}@{t}"]
            aligned = {s: align_to_scans(tables[s], emb.scan_id[s]) for s in splits}
            parts.append(evaluate_embeddings(emb.features, aligned, [t], cfg, name=name, progress=run.progress))
            if cfg.train_subsets:
                efficiency += label_efficiency(emb.features, aligned, [t], cfg, name=name)
        results[name] = _merge_results(name, parts)
    ids = embedded["tte"].scan_id
    if run.truth:
        ho = splits[2]
        table = align_to_scans(tables[ho], ids[ho])
        train = align_to_scans(tables[splits[0]], ids[splits[0]])  # Uno's censoring distribution
        risk, covered = _oracle_risk(Path(run.truth), tasks, ids[ho])
        no_truth = [k for k in tasks if k not in covered]
        if covered:
            results["oracle"] = evaluate_risk_scores(risk, {ho: table, splits[0]: train}, covered, cfg)

    curves = {name: read_loss_curve(path) for name, path in run.loss_curves}
    report = write_report(out, results, curves, excluded=excluded, efficiency=efficiency or None)
    rows = compare_models(results)
    diffs = paired_differences(results, "tte", HEADLINE)
    means = HEADLINE + [("cox", "c_index_uno"), ("cox", "c_index_full")]
    means += [("oracle", m) for _, m in means]
    headline = {
        f"{r['model']}/{r['probe']}/{r['metric']}": [r["value"], r["ci_low"], r["ci_high"]]
        for r in rows
        if r["task"] == "mean" and (r["probe"], r["metric"]) in means
    }
    summary = {
        "report": str(report),
        "models": list(results),
        "headline": {"pairs": [f"{p}/{m}" for p, m in HEADLINE], "text": HEADLINE_TEXT},
        "metrics": {m: METRICS[m] for _, m in means},
        "mean_over_tasks": headline,
        "tte_minus": diffs,
        "label_efficiency": [r for r in efficiency_means(efficiency) if (r["probe"], r["metric"]) in HEADLINE],
        "oracle_tasks_without_truth": no_truth,
        "scans_evaluated": {s: len(ids[s]) for s in splits},
        "scans_excluded": _counts(excluded),
        "excluded": excluded,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    lines = [format_table(rows)]
    if diffs:
        lines.append("\n" + format_differences(diffs))
    if no_truth:
        lines.append(f"\noracle: the truth has no log-hazard for {', '.join(no_truth)} (left out)")
    lines.append(f"\nreport: {report}")
    return EvalOutcome(summary=summary, text="\n".join(lines))
