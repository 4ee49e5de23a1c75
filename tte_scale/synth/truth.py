"""Ground truth per scan: true log-hazards and the benchmark labels they produced (pure).

The labels here follow the rules of configs/tasks/inspect.yaml and docs/formats.md (first strictly
later occurrence of a task code; else censored at the last event of the record), so the labels
stage can be checked against them and the oracle C-index (risk = true log-hazard) is known.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from tte_scale.synth import sparse
from tte_scale.synth.ehr import SubjectRecord
from tte_scale.synth.model import BENCH_TASKS, FACTORS, log_hazards

__all__ = ["bench_rows", "factor_rows", "bench_tasks", "BENCH_SCHEMA"]

BENCH_SCHEMA = pa.schema(
    [
        ("scan_id", pa.string()),
        ("subject_id", pa.int64()),
        ("task", pa.string()),
        ("log_hazard", pa.float64()),
        ("time", pa.float32()),
        ("event", pa.bool_()),
        ("label", pa.bool_()),
        ("excluded", pa.string()),
    ]
)


def bench_tasks(rec: SubjectRecord) -> dict[str, tuple[str, tuple[str, ...], float, bool]]:
    """The benchmark tasks of the subject's cohort: the sparse profile's or the INSPECT ones."""
    return sparse.SPARSE_BENCH_TASKS if rec.lesion is not None else BENCH_TASKS


def _true_log_hazard(rec: SubjectRecord, s: int, outcome: str) -> float:
    if outcome in sparse.LESION_OUTCOMES:
        return float(sparse.lesion_log_hazard(rec.lesion.size_S[s], outcome))
    return float(log_hazards(rec.X_SK[s], outcome)[0])


def bench_rows(rec: SubjectRecord) -> dict[str, list]:
    """Long-format truth, one row per (scan, benchmark task), as column lists."""
    cols: dict[str, list] = {
        k: [] for k in ("scan_id", "subject_id", "task", "log_hazard", "time", "event", "label", "excluded")
    }
    timed = ~np.isnan(rec.time_E)
    t_E, c_E = rec.time_E[timed], rec.code_E[timed]
    end = float(t_E.max())
    for s, (scan_id, t0) in enumerate(zip(rec.scan_ids, rec.scan_days)):
        for task, (outcome, codes, horizon, exclude_prior) in bench_tasks(rec).items():
            hit = np.isin(c_E, codes)
            later = t_E[hit & (t_E > t0)]
            event = later.size > 0
            time = (later.min() if event else end) - t0
            if exclude_prior and bool(np.any(t_E[hit] <= t0)):
                label, excluded = None, "prior_event"
            elif event and time <= horizon:
                label, excluded = True, None
            elif time < horizon:
                label, excluded = None, "censored_before_horizon"
            else:
                label, excluded = False, None
            cols["scan_id"].append(scan_id)
            cols["subject_id"].append(rec.subject_id)
            cols["task"].append(task)
            cols["log_hazard"].append(_true_log_hazard(rec, s, outcome))
            cols["time"].append(float(time))
            cols["event"].append(bool(event))
            cols["label"].append(label)
            cols["excluded"].append(excluded)
    return cols


def factor_rows(rec: SubjectRecord) -> dict[str, list]:
    """One row per scan: its latent factors (what the image shows) and hidden covariates."""
    cols: dict[str, list] = {"scan_id": rec.scan_ids, "subject_id": [rec.subject_id] * len(rec.scan_days)}
    for i, f in enumerate(FACTORS):
        cols[f] = [float(v) for v in rec.x_SF[:, i]]
    cols["age_years"] = [float((t - rec.birth_day) / 365.25) for t in rec.scan_days]
    cols["male"] = [rec.male] * len(rec.scan_days)
    cols["frailty"] = [rec.frailty] * len(rec.scan_days)
    if rec.lesion is not None:  # where it is in each scan: the worker adds lesion_center_ras
        cols["lesion_present"] = [rec.lesion.present] * len(rec.scan_days)
        cols["lesion_size"] = [float(v) for v in rec.lesion.size_S]
        cols["lesion_diameter_mm"] = [sparse.diameter_mm(v) if rec.lesion.present else 0.0 for v in rec.lesion.size_S]
    return cols
