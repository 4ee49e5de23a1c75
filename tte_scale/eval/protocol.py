"""The evaluation protocol: linear probes on embeddings -> metrics with bootstrap CIs.

``evaluate_embeddings`` fits every probe on the train split, picks its L2 strength on the
tuning split (logistic: AUROC, Cox: Harrell's C, PEM: negative log-likelihood) and reports on
held_out. ``evaluate_risk_scores`` scores given risks (e.g. the synthetic cohort's true
log-hazards) with the same metrics and no probe. Results are tidy rows, one per
(task, probe, metric): see ``ROW_FIELDS``; what each metric is: ``compare.METRICS``. A metric
that cannot be computed (one class only, no event) still gets a row: ``value`` None and the
reason in ``note``.

Tasks that share an outcome (one code set at several horizons, ``tables.outcome_groups``) share
one survival probe, fit on the whole follow-up; each task is then scored at its own horizon
(``c_index``: Harrell's C with administrative censoring at the horizon, ``c_index_uno``), and
the horizon-free ``c_index_full`` is reported once per outcome, on its first task.

Legend: N rows, D features, T tasks, B bootstrap replicates, G grid times.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from tte_scale.config import to_dict
from tte_scale.errors import InputError
from tte_scale.eval import bootstrap as bs
from tte_scale.eval.calibration import expected_calibration_error, km_calibration, recalibration, reliability_bins
from tte_scale.eval.classification import auprc, auroc, weighted_auprc, weighted_auroc
from tte_scale.eval.concordance import antolini_cindex, harrell_cindex, truncate, uno_cindex
from tte_scale.eval.config import EvalConfig
from tte_scale.eval.mlp_probe import fit_mlp_cox
from tte_scale.eval.probes import Standardizer, fit_cox, fit_logistic, fit_pem, pem_edges
from tte_scale.eval.survival import censoring_km, integrated_brier_score
from tte_scale.eval.tables import BenchTable, outcome_groups

__all__ = ["EvalResult", "ROW_FIELDS", "evaluate_embeddings", "evaluate_risk_scores"]

ROW_FIELDS = ("task", "probe", "metric", "value", "ci_low", "ci_high", "n", "n_positive", "n_boot", "l2", "note")
"""n: held-out rows used; n_positive: positives or events among them; n_boot: finite bootstrap
replicates behind the CI; l2: the selected strength (probes only)."""
RESULT_VERSION = 2
"""2: ``c_index`` is Harrell's C at the task's horizon (1: over the whole follow-up, now
``c_index_full``); ``c_index_uno`` added."""
HORIZON_FREE_RISK = ("cox", "deepsurv", "oracle")
"""Probes whose risk score does not depend on the horizon: their ``c_index_full`` (Harrell's C
over the whole follow-up) is reported once per outcome. The PEM's risk is its cumulative hazard
at the task's horizon, so it has none."""


@dataclass
class EvalResult:
    """Per-task metrics of one model (tidy rows) plus held-out risks for Kaplan-Meier plots."""

    name: str
    rows: list[dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)
    km: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    """task -> {"risk", "time", "event"} on held-out rows (Cox probe, or the given risks)."""
    calibration: dict[str, dict[str, Any]] = field(default_factory=dict)
    """"task/probe" -> reliability data: ``kind`` "binary" (the logistic probe's probability
    bins) or "survival" (risk deciles at ``horizon``, Kaplan-Meier observed), with ``pred``,
    ``obs`` and ``n`` per bin. Kept by ``to_json``."""
    replicates: dict[tuple[str, str, str], np.ndarray] = field(default_factory=dict)
    """(task, probe, metric) -> float [B] bootstrap replicate values (NaN where undefined). The
    replicates of every task and model of one evaluation use the same subject resamples (same
    held-out table and seed), so task means and model differences get CIs from them
    (``compare.mean_rows``, ``compare.paired_differences``). Not kept by ``to_json``."""

    def __post_init__(self) -> None:
        for r in self.rows:  # metric blocks hand the replicates over inside their row
            reps = r.pop("_replicates", None)
            if reps is not None:
                self.replicates[(r["task"], r["probe"], r["metric"])] = reps
            cal = r.pop("_calibration", None)
            if cal is not None:
                self.calibration[f"{r['task']}/{r['probe']}"] = cal

    def value(self, task: str, metric: str, probe: str | None = None) -> float | None:
        for r in self.rows:
            if r["task"] == task and r["metric"] == metric and (probe is None or r["probe"] == probe):
                return r["value"]
        raise KeyError(f"no row for task={task!r} metric={metric!r} probe={probe!r}")

    def to_arrow(self):
        import pyarrow as pa

        return pa.Table.from_pylist([{"model": self.name, **r} for r in self.rows])

    def to_json(self) -> str:
        return json.dumps(
            {
                "format_version": RESULT_VERSION,
                "name": self.name,
                "config": self.config,
                "rows": self.rows,
                "calibration": self.calibration,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str, source: str = "<json>") -> EvalResult:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{source}: not valid JSON: {exc}") from None
        if d.get("format_version") != RESULT_VERSION:
            raise InputError(
                f"{source}: format_version {d.get('format_version')!r}, this version reads {RESULT_VERSION}"
            )
        return cls(d["name"], d["rows"], d.get("config", {}), calibration=d.get("calibration", {}))


# ----------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _threads(n: int):
    """torch intra-op threads set to ``n`` (0 = unchanged) for the block."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _finite(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _row(task, probe, metric, value=None, ci=(None, None, 0, None), n=0, n_pos=0, l2=None, note="") -> dict:
    row = dict(
        zip(
            ROW_FIELDS,
            (
                task,
                probe,
                metric,
                _finite(value) if value is not None else None,
                ci[0],
                ci[1],
                int(n),
                int(n_pos),
                ci[2],
                l2,
                note,
            ),
        )
    )
    if ci[3] is not None:
        row["_replicates"] = ci[3]
    return row


def _boot(fn, w_BN: torch.Tensor | None, level: float):
    """(low, high, finite replicates, replicate values) of ``fn(weights)``, in memory-bounded chunks."""
    if w_BN is None or w_BN.shape[0] == 0:
        return (None, None, 0, None)
    vals = torch.cat([fn(w_BN[sl]) for sl in bs.chunks(w_BN.shape[0], w_BN.shape[1])]).numpy().astype(np.float64)
    return (*bs.percentile_ci(vals, level), vals)


def _check_emb(emb: dict, tables: dict, splits: list[str]) -> dict[str, torch.Tensor]:
    out = {}
    for s in splits:
        if s not in emb or s not in tables:
            raise InputError(
                f"embeddings/tables: split {s!r} missing (embeddings have {sorted(emb)}, tables {sorted(tables)})"
            )
        x = np.asarray(emb[s])
        if x.ndim != 2 or x.shape[0] != tables[s].subject_id.shape[0]:
            raise InputError(
                f"embeddings of split {s!r}: shape {x.shape}, expected [{tables[s].subject_id.shape[0]}, D] (one row per table row)"
            )
        bad = ~np.isfinite(x).all(1)
        if bad.any():
            raise InputError(f"embeddings of split {s!r}: NaN/inf at rows {np.flatnonzero(bad)[:10].tolist()}")
        out[s] = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    dims = {s: v.shape[1] for s, v in out.items()}
    if len(set(dims.values())) != 1:
        raise InputError(f"embeddings: feature dimension differs between splits: {dims}")
    return out


def _select(path, score, minimize: bool):
    """Best (l2, model) of a fitted path by a tuning score; ties go to the larger l2."""
    best = None
    for l2, model in path:  # path runs from the largest l2 down
        s = score(model)
        if not math.isfinite(s):
            continue
        if best is None or (s < best[0] if minimize else s > best[0]):
            best = (s, l2, model)
    if best is None:
        return path[0][0], path[0][1], "tuning metric undefined for every l2; used the largest"
    return best[1], best[2], ""


def _fit_path(fit, grid: list[float]):
    """Fit along the l2 grid from strong to weak, each fit warm-started from the previous."""
    path, prev = [], None
    for l2 in sorted(grid, reverse=True):
        prev = fit(l2, prev)
        path.append((l2, prev))
    return path


def _grids(time_N, event_N, horizon, cfg: EvalConfig):
    """Brier grid (linspace up to the horizon) and Antolini grid (held-out event times)."""
    t_lo = float(time_N.min())
    t_hi = float(horizon) if horizon is not None else float(np.quantile(time_N, cfg.ibs_max_quantile))
    t_hi = min(t_hi, float(np.nextafter(time_N.max(), -np.inf)))
    ibs_grid = np.linspace(t_lo, t_hi, cfg.ibs_num_times) if t_hi > t_lo else None
    ev_t = np.unique(time_N[event_N])
    if ev_t.size > 512:  # keeps [N, G] small; S is then read at the nearest lower grid time
        ev_t = np.unique(np.quantile(ev_t, np.linspace(0, 1, 512)))
    return ibs_grid, ev_t


def _td_subset(subject_N, max_rows: int, seed: int) -> np.ndarray:
    """Rows of a fixed random set of whole subjects, about ``max_rows`` rows in all."""
    if subject_N.shape[0] <= max_rows:
        return np.arange(subject_N.shape[0])
    subj = np.unique(subject_N)
    rng = np.random.default_rng(seed)
    keep, total = [], 0
    counts = dict(zip(*np.unique(subject_N, return_counts=True)))
    for s in rng.permutation(subj):
        if total + counts[s] > max_rows:
            break
        keep.append(s)
        total += counts[s]
    return np.flatnonzero(np.isin(subject_N, keep))


# ----------------------------------------------------------------------------- metric blocks
def _binary_rows(task, probe, score_N, label_N, w_BN, cfg, l2=None, note="", calibrate=False) -> list[dict]:
    """AUROC and AUPRC of a score; with ``calibrate`` (the score is a logit of the event
    probability) also the calibration slope, intercept and ECE, and the reliability bins."""
    y = torch.from_numpy(label_N.astype(bool))
    s = torch.as_tensor(score_N, dtype=torch.float64)
    n, npos = len(y), int(y.sum())
    metrics = ("auroc", "auprc") + (("cal_slope", "cal_intercept", "ece") if calibrate else ())
    if npos in (0, n):
        why = note or f"held-out rows have one class only ({npos} positives of {n})"
        return [_row(task, probe, m, n=n, n_pos=npos, l2=l2, note=why) for m in metrics]
    rows = [
        _row(task, probe, "auroc", auroc(s, y), _boot(lambda w: weighted_auroc(s, y, w), w_BN, cfg.ci_level)),
        _row(task, probe, "auprc", auprc(s, y), _boot(lambda w: weighted_auprc(s, y, w), w_BN, cfg.ci_level)),
    ]
    if calibrate:
        p = torch.sigmoid(s)
        rc = recalibration(s, y)
        rows += [
            _row(task, probe, "cal_slope", rc.slope, _boot(lambda w: recalibration(s, y, w).slope, w_BN, cfg.ci_level)),
            _row(
                task,
                probe,
                "cal_intercept",
                rc.intercept,
                _boot(lambda w: recalibration(s, y, w).intercept, w_BN, cfg.ci_level),
            ),
            # no bootstrap CI: resampling inflates a binned absolute deviation, its percentile
            # interval would sit above the estimate (compare.METRICS)
            _row(task, probe, "ece", expected_calibration_error(p, y, n_bins=cfg.calibration_bins)),
        ]
        rows[-1]["_calibration"] = {"kind": "binary", **reliability_bins(p, y, cfg.calibration_bins)}
    for r in rows:
        r.update(n=n, n_positive=npos, l2=l2, note=note)
        if r["metric"] in ("cal_slope", "cal_intercept") and r["value"] is None:
            r["note"] = "; ".join(filter(None, [note, "no maximum likelihood: the predictions separate the classes"]))
    return rows


@dataclass
class _Outcome:
    """Held-out survival rows of one outcome (a group of tasks): what every metric block needs."""

    time_N: np.ndarray
    event_N: np.ndarray
    subject_N: np.ndarray
    w_BN: torch.Tensor | None
    cens: Any
    """Censoring survival G (reverse Kaplan-Meier of the training rows): Uno's C, the Brier score."""


def _survival_rows(task, probe, risk_N, out: _Outcome, cfg, *, horizon=None, surv_fn=None, full=None, l2=None, note=""):
    """Rows of one task: Harrell's and Uno's C at the task's horizon (administrative censoring
    at tau), the horizon-free Harrell C when ``full`` (the group's tasks, once per outcome), and
    with survival curves Antolini's C at the horizon and the integrated Brier score."""
    t = torch.from_numpy(out.time_N.astype(np.float64))
    e = torch.from_numpy(out.event_N.astype(bool))
    r = torch.as_tensor(risk_N, dtype=torch.float64)
    n, nev = len(t), int(e.sum())
    names = ["c_index", "c_index_uno"] + (["c_index_full"] if full else [])
    names += ["c_index_td", "km_cal_error", "ibs"] if surv_fn is not None else []
    if nev == 0:
        return [_row(task, probe, m, n=n, n_pos=0, l2=l2, note=note or "no held-out events") for m in names]
    th, eh = truncate(t, e, horizon)
    nev_h = int(eh.sum())
    at = "at the horizon" if horizon is not None else "no horizon: whole follow-up"
    h_note = "; ".join(filter(None, [note, "" if nev_h else f"no held-out events before the horizon ({horizon:g} d)"]))
    rows = [
        _row(
            task,
            probe,
            "c_index",
            harrell_cindex(t, e, r, tau=horizon),
            _boot(lambda w: harrell_cindex(t, e, r, w, tau=horizon), out.w_BN, cfg.ci_level),
            n,
            nev_h,
            l2,
            h_note if horizon is not None else "; ".join(filter(None, [note, at])),
        )
    ]
    try:
        uno = uno_cindex(t, e, r, out.cens, tau=horizon)
        rows.append(
            _row(
                task,
                probe,
                "c_index_uno",
                uno,
                _boot(lambda w: uno_cindex(t, e, r, out.cens, w, tau=horizon), out.w_BN, cfg.ci_level),
                n,
                nev_h,
                l2,
                h_note,
            )
        )
    except ValueError as exc:
        rows.append(_row(task, probe, "c_index_uno", n=n, n_pos=nev_h, l2=l2, note=str(exc)))
    if full:
        others = [x for x in full if x != task]
        f_note = "whole follow-up" + (f"; the same outcome as {', '.join(others)}" if others else "")
        rows.append(
            _row(
                task,
                probe,
                "c_index_full",
                harrell_cindex(t, e, r),
                _boot(lambda w: harrell_cindex(t, e, r, w), out.w_BN, cfg.ci_level),
                n,
                nev,
                l2,
                "; ".join(filter(None, [note, f_note])),
            )
        )
    if surv_fn is None:
        return rows
    ibs_grid, td_grid = _grids(out.time_N, out.event_N, horizon, cfg)
    sub = _td_subset(out.subject_N, cfg.td_cindex_max_rows, cfg.seed)
    td_note = (
        h_note if sub.size == n else "; ".join(filter(None, [h_note, f"Antolini on a fixed subset of {sub.size} rows"]))
    )
    ts, es = th[sub], eh[sub]
    if not bool(es.any()):
        rows.append(
            _row(task, probe, "c_index_td", n=sub.size, n_pos=0, l2=l2, note=td_note or "no events in the subset")
        )
    else:
        td_grid = td_grid if horizon is None else td_grid[td_grid < horizon]
        s_td = surv_fn(sub, td_grid)
        w_td = None if out.w_BN is None else out.w_BN[:, torch.from_numpy(sub)]
        rows.append(
            _row(
                task,
                probe,
                "c_index_td",
                antolini_cindex(ts, es, s_td, td_grid),
                _boot(lambda w: antolini_cindex(ts, es, s_td, td_grid, w), w_td, cfg.ci_level),
                sub.size,
                int(es.sum()),
                l2,
                td_note,
            )
        )
    if horizon is None:
        rows.append(_row(task, probe, "km_cal_error", n=n, n_pos=nev, l2=l2, note="no horizon"))
    else:
        risk_h = 1.0 - surv_fn(np.arange(n), np.array([horizon]))[:, 0]
        kc = km_calibration(risk_h, t, e, horizon, num_groups=cfg.calibration_bins)
        # no bootstrap CI, as for the ECE
        cal = _row(task, probe, "km_cal_error", kc.error, n=n, n_pos=nev_h, l2=l2, note=note)
        cal["_calibration"] = {
            "kind": "survival",
            "horizon": float(horizon),
            "pred": kc.pred_G.tolist(),
            "obs": kc.obs_G.tolist(),
            "n": kc.n_G.tolist(),
        }
        rows.append(cal)
    if ibs_grid is None:
        rows.append(_row(task, probe, "ibs", n=n, n_pos=nev, l2=l2, note="held-out times span no interval"))
    else:
        s_ibs = surv_fn(np.arange(n), ibs_grid)
        rows.append(
            _row(
                task,
                probe,
                "ibs",
                integrated_brier_score(t, e, s_ibs, ibs_grid, out.cens),
                _boot(lambda w: integrated_brier_score(t, e, s_ibs, ibs_grid, out.cens, w), out.w_BN, cfg.ci_level),
                n,
                nev,
                l2,
                note,
            )
        )
    return rows


# ----------------------------------------------------------------------------- protocol
def evaluate_embeddings(
    emb: dict[str, np.ndarray],
    tables: dict[str, BenchTable],
    tasks: list[str],
    cfg: EvalConfig | None = None,
    *,
    name: str = "model",
    progress: bool = True,
) -> EvalResult:
    """Fit the configured probes per task on train, select l2 on tuning, report held_out.

    ``emb[split]`` is float [N, D], row-aligned with ``tables[split]``.
    """
    cfg = cfg or EvalConfig()
    with _threads(cfg.num_threads):
        return _evaluate_embeddings(emb, tables, tasks, cfg, name, progress)


def _evaluate_embeddings(emb, tables, tasks, cfg: EvalConfig, name: str, progress: bool) -> EvalResult:
    tr, tu, ho = cfg.splits
    x = _check_emb(emb, tables, [tr, tu, ho])
    std = Standardizer.fit(x[tr])
    x = {s: std(v) for s, v in x.items()}
    for t in tasks:
        for s in (tr, tu, ho):
            tables[s].column(t)
    w_full = bs.subject_weights(tables[ho].subject_id, cfg.bootstrap, cfg.seed) if cfg.bootstrap else None
    groups = outcome_groups({s: tables[s] for s in (tr, tu, ho)}, tasks)
    per: dict[tuple[str, str], list[dict]] = {}
    km: dict[str, dict[str, np.ndarray]] = {}
    work = [(p, [t]) for t in tasks for p in cfg.probes if p == "logistic"]
    work += [(p, g) for p in cfg.probes if p != "logistic" for g in groups]
    for probe, group in tqdm(work, desc=f"eval {name}", disable=not progress):
        if probe == "logistic":
            per[(group[0], probe)] = _logistic_task(group[0], x, tables, cfg, w_full)
        else:
            rows_by_task, km_group = _survival_group(group, probe, x, tables, cfg, w_full)
            per.update({(t, probe): r for t, r in rows_by_task.items()})
            if km_group is not None:
                km[group[0]] = km_group
    rows = [r for t in tasks for p in cfg.probes for r in per.get((t, p), [])]
    return EvalResult(name, rows, to_dict(cfg), km)


def _logistic_task(task, x, tables, cfg, w_full) -> list[dict]:
    tr, tu, ho = cfg.splits
    idx = {s: tables[s].label_rows(task) for s in (tr, tu, ho)}
    lab = {s: tables[s].label[idx[s], tables[s].column(task)] == 1 for s in idx}
    if lab[tr].all() or not lab[tr].any():
        why = f"train rows have one class only ({int(lab[tr].sum())} positives of {lab[tr].size})"
        return [
            _row(task, "logistic", m, n=idx[ho].size, n_pos=int(lab[ho].sum()), note=why) for m in ("auroc", "auprc")
        ]
    xtr, xtu, xho = (x[s][torch.from_numpy(idx[s])] for s in (tr, tu, ho))
    ytr = torch.from_numpy(lab[tr].astype(np.float64))
    path = _fit_path(lambda l2, init: fit_logistic(xtr, ytr, l2, init=init, max_iter=cfg.max_iter), cfg.l2_grid)
    l2, model, note = _select(path, lambda m: auroc(m.logit(xtu), lab[tu]), minimize=False)
    w = None if w_full is None else w_full[:, torch.from_numpy(idx[ho])]
    return _binary_rows(task, "logistic", model.logit(xho).numpy(), lab[ho], w, cfg, l2, note, calibrate=True)


def _survival_group(group, probe, x, tables, cfg, w_full):
    """One survival probe for a group of tasks sharing their outcome (``tables.outcome_groups``):
    fit once on the whole follow-up of the train rows, l2 chosen on tuning (Cox and deepsurv:
    Harrell's C; deepsurv is also early-stopped on the tuning loss; PEM: log-likelihood), then
    reported per task at the task's horizon. Returns
    ({task: rows}, Kaplan-Meier inputs of the Cox probe or None)."""
    tr, tu, ho = cfg.splits
    first = group[0]
    k = {s: tables[s].column(first) for s in (tr, tu, ho)}
    idx = {s: tables[s].survival_rows(first) for s in (tr, tu, ho)}
    time = {s: tables[s].time[idx[s], k[s]].astype(np.float64) for s in idx}
    event = {s: tables[s].event[idx[s], k[s]].astype(bool) for s in idx}
    xs = {s: x[s][torch.from_numpy(idx[s])] for s in idx}
    if not event[tr].any():
        metrics = ["c_index", "c_index_uno", "c_index_td", "km_cal_error", "ibs"]
        return {
            t: [
                _row(t, probe, m, n=idx[ho].size, n_pos=int(event[ho].sum()), note="no events in train rows")
                for m in metrics
            ]
            for t in group
        }, None
    if probe == "cox":
        path = _fit_path(
            lambda l2, init: fit_cox(xs[tr], time[tr], event[tr], l2, init=init, max_iter=cfg.max_iter), cfg.l2_grid
        )
        l2, model, note = _select(
            path, lambda m: float(harrell_cindex(time[tu], event[tu], m.risk(xs[tu]))), minimize=False
        )

        def risk_at(horizon):
            return model.risk(xs[ho])

    elif probe == "deepsurv":

        def fit_mlp(l2):  # no warm start: every l2 trains its own network from the same seed
            return fit_mlp_cox(
                xs[tr],
                time[tr],
                event[tr],
                xs[tu],
                time[tu],
                event[tu],
                l2,
                hidden=cfg.mlp_hidden,
                dropout=cfg.mlp_dropout,
                lr=cfg.mlp_lr,
                batch_size=cfg.mlp_batch_size,
                max_epochs=cfg.mlp_max_epochs,
                patience=cfg.mlp_patience,
                seed=cfg.seed,
            )

        path = [(l2, fit_mlp(l2)) for l2 in sorted(cfg.l2_grid, reverse=True)]
        l2, model, note = _select(
            path, lambda m: float(harrell_cindex(time[tu], event[tu], m.risk(xs[tu]))), minimize=False
        )

        def risk_at(horizon):
            return model.risk(xs[ho])

    else:
        starts = pem_edges(time[tr], event[tr], cfg.pem_num_bins)
        path = _fit_path(
            lambda l2, init: fit_pem(xs[tr], time[tr], event[tr], starts, l2, init=init, max_iter=cfg.max_iter),
            cfg.l2_grid,
        )
        l2, model, note = _select(path, lambda m: m.nll(xs[tu], time[tu], event[tu]), minimize=True)

        def risk_at(horizon):
            # the PEM's curves may cross: its risk score is the cumulative hazard at the horizon
            # (or, without one, at the last bin start)
            t_ref = (
                horizon if horizon is not None else float(starts[-1]) if starts[-1] > 0 else float(np.median(time[tr]))
            )
            return model.cumhaz(xs[ho], [t_ref])[:, 0]

    xho = xs[ho]
    surv_fn = lambda rows, grid: model.survival(xho[torch.from_numpy(rows)], grid)  # noqa: E731
    out = _Outcome(
        time[ho],
        event[ho],
        tables[ho].subject_id[idx[ho]],
        None if w_full is None else w_full[:, torch.from_numpy(idx[ho])],
        censoring_km(time[tr], event[tr]),
    )
    # the horizon-free C once per outcome, for probes whose risk does not depend on the horizon
    full = group if probe in HORIZON_FREE_RISK else None
    rows = {}
    for task in group:
        horizon = cfg.horizons_days.get(task)
        risk = risk_at(horizon).numpy()
        rows[task] = _survival_rows(
            task,
            probe,
            risk,
            out,
            cfg,
            horizon=horizon,
            surv_fn=surv_fn,
            full=full if task == first else None,
            l2=l2,
            note=note,
        )
    km = {"risk": risk_at(None).numpy(), "time": time[ho], "event": event[ho]} if probe == "cox" else None
    return rows, km


def evaluate_risk_scores(
    risk: dict[str, np.ndarray] | np.ndarray,
    tables: dict[str, BenchTable] | BenchTable,
    tasks: list[str],
    cfg: EvalConfig | None = None,
    *,
    name: str = "oracle",
) -> EvalResult:
    """Metrics of given risk scores (higher = earlier event) without a probe: the oracle.

    ``risk`` is [N, T] on the held-out split (a dict by split or the array itself), columns in
    the table's task order, e.g. the synthetic cohort's true log-hazards. AUROC/AUPRC use the
    risk as the score of the binary label; the C-indices are Harrell's and Uno's at each task's
    horizon and Harrell's over the whole follow-up (once per outcome). Uno's censoring
    distribution comes from the train split's table when ``tables`` holds it, else from the
    held-out rows themselves.
    """
    cfg = cfg or EvalConfig()
    tr, ho = cfg.splits[0], cfg.splits[2]
    table = tables[ho] if isinstance(tables, dict) else tables
    train = tables.get(tr) if isinstance(tables, dict) else None
    r = np.asarray(risk[ho] if isinstance(risk, dict) else risk, dtype=np.float64)
    if r.shape != table.label.shape:
        raise InputError(f"risk scores: shape {r.shape}, expected {table.label.shape} (rows, tasks of {table.source})")
    w_full = bs.subject_weights(table.subject_id, cfg.bootstrap, cfg.seed) if cfg.bootstrap else None
    per, km = {}, {}
    for task in tasks:
        k = table.column(task)
        bad = ~np.isfinite(r[:, k])
        if bad.any():
            raise InputError(f"risk scores of task {task!r}: NaN/inf at rows {np.flatnonzero(bad)[:10].tolist()}")
        li = table.label_rows(task)
        w = None if w_full is None else w_full[:, torch.from_numpy(li)]
        per[task] = _binary_rows(task, "oracle", r[li, k], table.label[li, k] == 1, w, cfg)
    for group in outcome_groups(table, tasks):
        first = group[0]
        k = table.column(first)
        si = table.survival_rows(first)
        t, e = table.time[si, k].astype(np.float64), table.event[si, k].astype(bool)
        src = train if train is not None else table
        ci = src.survival_rows(first)
        cens = censoring_km(src.time[ci, src.column(first)], src.event[ci, src.column(first)])
        out = _Outcome(t, e, table.subject_id[si], None if w_full is None else w_full[:, torch.from_numpy(si)], cens)
        for task in group:
            kt = table.column(task)
            per[task] += _survival_rows(
                task,
                "oracle",
                r[si, kt],
                out,
                cfg,
                horizon=cfg.horizons_days.get(task),
                full=group if task == first else None,
            )
        km[first] = {"risk": r[si, k], "time": t, "event": e}
    rows = [row for task in tasks for row in per[task]]
    return EvalResult(name, rows, to_dict(cfg), km)
