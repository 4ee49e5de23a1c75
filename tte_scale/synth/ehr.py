"""One subject's EHR timeline: scans, visits, codes, death, censoring (pure given the RNG).

Legend: S scans, C visit-level codes, K covariates, V visits, E events. Times are float64
days since 1970-01-01 (NaN = static fact); they become timestamp[us] only when written.

Timeline: history [start, scan_1) -> follow-up [scan_1, scan_2) -> [scan_2, end). In each
segment the covariates are constant (the factors at the scan that opens it; attenuated in the
history), visits of each type arrive as Poisson processes, codes are recorded at visits, and
death / first PH diagnosis / PE diagnosis arrive with the exponential hazards of model.py.
The record ends at death or at censoring (study end or loss to follow-up).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import numpy as np

from tte_scale.formats.meds import SPLITS
from tte_scale.synth import sparse
from tte_scale.synth.config import SynthConfig, is_sparse
from tte_scale.synth.model import FACTORS, covariates, draw_first_factors, log_hazards, progress_factors
from tte_scale.synth.vocab import PE_CODES, PH_CODES, Vocab

__all__ = ["SubjectRecord", "simulate_subject", "day_of", "SPLITS", "SCAN_PROCEDURE_CODE"]

SCAN_PROCEDURE_CODE = "CPT4/71275"  # CT angiography of the chest, recorded minutes after the scan
_VISIT_LOGIT = {"OP": 0.0, "ER": 0.5, "IP": 1.2}
_CHRONIC_HISTORY = 0.7  # history covariates: chronic factors at 70% of their first-scan value


def day_of(iso: str) -> float:
    """Days since 1970-01-01 of an ISO date."""
    return float((datetime.date.fromisoformat(iso) - datetime.date(1970, 1, 1)).days)


@dataclass(slots=True)
class SubjectRecord:
    """Everything generated for one subject."""

    index: int
    subject_id: int
    split: str
    male: bool
    frailty: float
    birth_day: float
    scan_days: np.ndarray  # float64 [S]
    x_SF: np.ndarray  # factors at each scan
    X_SK: np.ndarray  # covariates at each scan
    time_E: np.ndarray  # float64 days, NaN = static
    code_E: np.ndarray  # object (str)
    value_E: np.ndarray  # float32, NaN = no numeric value
    death_day: float  # NaN = alive at the end of the record
    lesion: sparse.Lesion | None = None  # the sparse profile's lesion (None in the other profiles)

    @property
    def scan_ids(self) -> list[str]:
        return [f"scan-{self.index:06d}-{s}" for s in range(len(self.scan_days))]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


class _Events:
    """Accumulates (time, code, value) triples as arrays."""

    def __init__(self) -> None:
        self.t: list[np.ndarray] = []
        self.c: list[np.ndarray] = []
        self.v: list[np.ndarray] = []

    def add(self, times, codes, values=None) -> None:
        times = np.atleast_1d(np.asarray(times, np.float64))
        codes = np.atleast_1d(np.asarray(codes, object))
        if codes.shape != times.shape:
            codes = np.broadcast_to(codes, times.shape)
        self.t.append(times)
        self.c.append(codes)
        self.v.append(
            np.full(times.shape, np.nan, np.float32)
            if values is None
            else np.atleast_1d(np.asarray(values, np.float32))
        )

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.concatenate(self.t), np.concatenate(self.c), np.concatenate(self.v)


def _visits(rng, ev: _Events, vocab: Vocab, X_K: np.ndarray, times_V: np.ndarray, kind: str, end_V: np.ndarray) -> None:
    """Record the Visit/<kind> code and the codes of each visit; codes fall within [start, end)."""
    if len(times_V) == 0:
        return
    ev.add(times_V, f"Visit/{kind}")
    p_C = _sigmoid(vocab.alpha + vocab.beta @ X_K + _VISIT_LOGIT[kind])
    v_idx, c_idx = np.nonzero(rng.random((len(times_V), len(p_C))) < p_C)
    t = times_V[v_idx] + rng.random(len(v_idx)) * (end_V[v_idx] - times_V[v_idx])
    codes = np.asarray(vocab.codes, object)[c_idx]
    lab = vocab.is_lab[c_idx]
    z = vocab.lab_gamma[c_idx] @ X_K + rng.normal(size=len(c_idx))
    val = np.where(lab, np.maximum(vocab.lab_mu[c_idx] + vocab.lab_sd[c_idx] * z, 0.0), np.nan)
    ev.add(t, codes, val.astype(np.float32))


def _segment(rng, ev: _Events, vocab: Vocab, X_K: np.ndarray, a: float, b: float) -> None:
    """Poisson visits of every type in [a, b)."""
    for kind, outcome in (("OP", "op"), ("ER", "er"), ("IP", "ip")):
        rate = float(np.exp(log_hazards(X_K, outcome))[0])
        n = rng.poisson(rate * (b - a))
        t = np.sort(rng.uniform(a, b, n))
        stay = {"OP": 0.08, "ER": 0.4}.get(kind)
        end = t + (stay if stay else 1.0 + rng.gamma(2.0, 2.0, n))
        _visits(rng, ev, vocab, X_K, t, kind, end)


def _first_arrival(rng, logh: float, a: float, b: float) -> float:
    """Time of the first arrival of an exponential clock started at a, or NaN if after b."""
    t = a + rng.exponential(1.0 / np.exp(logh))
    return t if t < b else np.nan


def simulate_subject(index: int, cfg: SynthConfig, vocab: Vocab) -> SubjectRecord:
    """The full record of subject ``index``; depends only on (cfg.seed, index, cfg, vocab)."""
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(index,)))
    frac = np.cumsum(cfg.split_fractions)
    split = SPLITS[min(int(np.searchsorted(frac, rng.random(), side="right")), 2)]
    male = bool(rng.random() < 0.5)
    frailty = float(rng.normal())
    y0, y1 = cfg.first_scan_years
    t1 = rng.uniform(day_of(f"{y0}-01-01"), day_of(f"{y1}-12-31"))
    age = 18.0 + 72.0 * rng.beta(3.5, 2.2)
    birth = t1 - age * 365.25
    x1, z1 = draw_first_factors(rng, (age - 60.0) / 15.0)
    censor = min(day_of(cfg.study_end), t1 + 7.0 + rng.exponential(cfg.followup_mean_years * 365.25))
    scan_days, xs = [t1], [x1]
    if rng.random() < cfg.second_scan_prob:
        t2 = t1 + rng.uniform(30.0, 720.0)
        if t2 < censor - 7.0:
            scan_days.append(t2)
            xs.append(progress_factors(rng, x1, z1, (t2 - t1) / 365.25))
    scan_S = np.array(scan_days)
    x_SF = np.stack(xs)
    if is_sparse(cfg):  # healthy anatomy: the lesion (drawn below, own stream) is all the image shows
        x_SF = np.zeros_like(x_SF)
    X_SK = covariates(x_SF, (scan_S - birth) / 365.25 / 15.0 - 4.0, male, frailty)
    start = t1 - 365.25 * rng.uniform(*cfg.history_years)

    ev = _Events()
    ev.add(birth, "MEDS_BIRTH")
    ev.add(np.nan, "Gender/M" if male else "Gender/F")
    # History: chronic disease partly present, no acute clot/effusion; prior PE/PH possible.
    X_hist = X_SK[0].copy()
    X_hist[: len(FACTORS)] *= _CHRONIC_HISTORY
    X_hist[FACTORS.index("clot")] = 0.0
    _segment(rng, ev, vocab, X_hist, start, t1 - 0.5)
    n_pe = rng.poisson(np.exp(-8.5) * (t1 - start))
    ev.add(np.repeat(rng.uniform(start, t1 - 0.5, n_pe), 2), np.tile(np.array(PE_CODES[:2], object), n_pe))
    ph_day = _first_arrival(rng, float(log_hazards(X_hist, "ph")[0]), start, t1 - 0.5)

    death = np.nan
    bounds = list(scan_S[1:]) + [censor]
    segments: list[tuple[float, float]] = []
    for s, (a, b) in enumerate(zip(scan_S, bounds)):
        X = X_SK[s]
        # The encounter that ordered the scan (ER or inpatient), hours before it.
        enc = a - rng.uniform(0.05, 0.3)
        _visits(rng, ev, vocab, X, np.array([enc]), "ER" if rng.random() < 0.6 else "IP", np.array([a - 0.01]))
        ev.add(a + rng.uniform(0.001, 0.01), SCAN_PROCEDURE_CODE)
        death = _first_arrival(rng, float(log_hazards(X, "death")[0]), a, b)
        b_eff = b if np.isnan(death) else death
        segments.append((a, b_eff))
        _segment(rng, ev, vocab, X, a + 0.01, b_eff)
        _report_findings(rng, ev, x_SF[s], X, a)
        pe = _first_arrival(rng, float(log_hazards(X, "pe")[0]), a, b_eff)
        if not np.isnan(pe):
            ev.add([pe, pe], ["SNOMED/59282003", PE_CODES[1] if rng.random() < 0.7 else PE_CODES[2]])
        if np.isnan(ph_day):
            ph_day = _first_arrival(rng, float(log_hazards(X, "ph")[0]), a, b_eff)
        if not np.isnan(death):
            ev.add(death, "MEDS_DEATH")
            break
    if not np.isnan(ph_day):
        _ph_codes(rng, ev, ph_day)
    lesion = None
    if is_sparse(cfg):
        # Own stream: the lesion (and so what the image shows) changes no other event.
        lrng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(index, 3)))
        lesion = sparse.draw_lesion(lrng, scan_S)
        times, codes = sparse.lesion_events(lrng, lesion.size_S, segments)
        if times:
            ev.add(times, np.array(codes, object))

    t_E, c_E, v_E = ev.arrays()
    end = death if not np.isnan(death) else censor
    keep = np.isnan(t_E) | (t_E <= end)
    alive = scan_S < end  # a planned later scan does not happen after death
    scan_S, x_SF, X_SK = scan_S[alive], x_SF[alive], X_SK[alive]
    if lesion is not None:
        lesion = sparse.Lesion(
            present=lesion.present, size_S=lesion.size_S[alive], side=lesion.side, u=lesion.u, hu=lesion.hu
        )
    return SubjectRecord(
        index=index,
        subject_id=100_000 + index,
        split=split,
        male=male,
        frailty=frailty,
        birth_day=birth,
        scan_days=scan_S,
        x_SF=x_SF,
        X_SK=X_SK,
        time_E=t_E[keep],
        code_E=c_E[keep],
        value_E=v_E[keep],
        death_day=death,
        lesion=lesion,
    )


def _ph_codes(rng, ev: _Events, ph_day: float) -> None:
    """The first PH diagnosis, then PH codes at some later follow-up visits (dropped after the end)."""
    ev.add([ph_day, ph_day], [PH_CODES[0], PH_CODES[1] if rng.random() < 0.8 else PH_CODES[2]])
    n = rng.poisson(4)
    ev.add(ph_day + np.cumsum(rng.exponential(90.0, n)), PH_CODES[1])


def _report_findings(rng, ev: _Events, x_F: np.ndarray, X_K: np.ndarray, t_scan: float) -> None:
    """SNOMED findings of the radiology report, minutes to hours after the scan."""
    f = dict(zip(FACTORS, x_F))
    p = {
        "SNOMED/8186001": -3.0 + 7.0 * f["cardiomegaly"],
        "SNOMED/60046008": -3.0 + 8.0 * f["effusion"],
        "SNOMED/46621007": -2.5 + 4.0 * f["effusion"],
        "SNOMED/267038008": -3.5 + 3.0 * f["cardiomegaly"] + 3.0 * f["effusion"],
        "SNOMED/95436008": -2.5 + 0.5 * float(X_K[-1]),  # consolidation: not rendered, frailty only
    }
    for code, logit in p.items():
        if rng.random() < _sigmoid(np.asarray(logit)):
            ev.add(t_scan + rng.uniform(0.01, 0.2), code)
