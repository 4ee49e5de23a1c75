"""Label efficiency: the probes refit on subject-level subsets of the training split.

``label_efficiency`` draws, for each requested size and resample, a random set of whole
training subjects holding at most that many scans, refits the probes on it (the same l2 grid,
chosen on the whole tuning split, reported on the whole held-out split, no bootstrap) and
returns tidy rows; ``efficiency_means`` averages them over the tasks and summarizes the
resamples. The subsets depend only on the seed, the size, the resample and the training
subjects, so every model of one evaluation is refit on the same subsets (paired).

A size at or above the training split's scan count is the whole split: fit once, flagged
``whole_split``; the whole split is always added as the last point of each curve. Like the paper's code (``--prop_train``, which took the first N training
rows), sizes count scans; unlike it, subjects stay whole and several resamples give a spread.

Legend: N rows, D features.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from tte_scale.eval.config import EvalConfig
from tte_scale.eval.tables import BenchTable

__all__ = ["subject_subset", "label_efficiency", "efficiency_means", "EFFICIENCY_FIELDS"]

EFFICIENCY_FIELDS = ("model", "train_size", "resample", "train_rows", "train_subjects", "whole_split")
"""Columns added to each protocol row (``protocol.ROW_FIELDS``) of a label-efficiency row."""


def subject_subset(subject_N: np.ndarray, size: int, seed: int | tuple) -> np.ndarray:
    """Sorted row indices of whole subjects, drawn in random order, at most ``size`` rows.

    Subjects are visited in a random permutation and taken while they fit, so the subset holds
    ``size`` rows unless no remaining subject fits exactly (then a few fewer)."""
    subj, inv_N, counts = np.unique(np.asarray(subject_N), return_inverse=True, return_counts=True)
    rng = np.random.default_rng(seed if isinstance(seed, int) else list(seed))
    keep = np.zeros(subj.size, bool)
    total = 0
    for s in rng.permutation(subj.size):
        if total + counts[s] <= size:
            keep[s] = True
            total += counts[s]
            if total == size:
                break
    return np.flatnonzero(keep[inv_N])


def label_efficiency(
    emb: dict[str, np.ndarray],
    tables: dict[str, BenchTable],
    tasks: list[str],
    cfg: EvalConfig,
    *,
    name: str = "model",
) -> list[dict[str, Any]]:
    """Held-out rows of ``cfg.train_subset_probes`` refit on subsets of the training split of
    each size in ``cfg.train_subsets``, ``cfg.train_subset_resamples`` times each."""
    from tte_scale.eval.protocol import evaluate_embeddings

    tr = cfg.splits[0]
    sub_cfg = dataclasses.replace(cfg, bootstrap=0, probes=list(cfg.train_subset_probes), train_subsets=[])
    n_train = tables[tr].subject_id.shape[0]
    out: list[dict[str, Any]] = []
    # the whole split closes every curve (the main table's probes, without bootstrap); larger
    # requests are that point too, and say so in their note
    above = sorted(n for n in cfg.train_subsets if n > n_train)
    whole_note = f"whole training split ({n_train} scans; requested {above})" if above else ""
    for size in sorted({*(min(n, n_train) for n in cfg.train_subsets), n_train}):
        whole = size == n_train
        for r in range(1 if whole else cfg.train_subset_resamples):
            idx = np.arange(n_train) if whole else subject_subset(tables[tr].subject_id, size, (cfg.seed, size, r))
            res = evaluate_embeddings(
                {**emb, tr: np.asarray(emb[tr])[idx]},
                {**tables, tr: tables[tr].take(idx)},
                tasks,
                sub_cfg,
                name=name,
                progress=False,
            )
            extra = dict(
                zip(
                    EFFICIENCY_FIELDS,
                    (name, int(size), r, int(idx.size), int(np.unique(tables[tr].subject_id[idx]).size), whole),
                )
            )
            for row in res.rows:
                if whole and whole_note:
                    row = {**row, "note": "; ".join(filter(None, [row["note"], whole_note]))}
                out.append({**extra, **row})
    return out


def efficiency_means(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, probe, metric, size): the mean over tasks of each resample, then the mean,
    sd, min and max of those over the resamples. A resample counts only when every task that
    has a value in some resample has one in it (so that the means cover the same tasks)."""
    per: dict[tuple, dict[int, dict[str, float | None]]] = {}
    rows_n: dict[tuple, list[int]] = {}
    for r in rows:
        key = (r["model"], r["probe"], r["metric"], r["train_size"])
        per.setdefault(key, {}).setdefault(r["resample"], {})[r["task"]] = r["value"]
        rows_n.setdefault(key, []).append(r["train_rows"])
    out = []
    for (model, probe, metric, size), by_res in per.items():
        tasks = sorted({t for v in by_res.values() for t, x in v.items() if x is not None})
        means = [
            float(np.mean([v[t] for t in tasks]))
            for v in by_res.values()
            if tasks and all(v.get(t) is not None for t in tasks)
        ]
        out.append(
            {
                "model": model,
                "probe": probe,
                "metric": metric,
                "train_size": size,
                "train_rows": float(np.mean(rows_n[(model, probe, metric, size)])),
                "tasks": len(tasks),
                "resamples": len(means),
                "mean": float(np.mean(means)) if means else None,
                "sd": float(np.std(means, ddof=1)) if len(means) > 1 else None,
                "min": float(np.min(means)) if means else None,
                "max": float(np.max(means)) if means else None,
            }
        )
    return out
