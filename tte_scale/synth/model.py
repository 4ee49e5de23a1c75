"""The latent model: image-visible factors per scan and the hazards they drive (pure functions).

Legend: S scans of one subject, F image factors (len(FACTORS)), X covariates = F factors + HIDDEN.

Every subject has hidden covariates (age, sex, frailty: not in the image) and, at each scan,
FACTORS in [0, 1] (0 = healthy) that the phantom renders visibly. Each outcome o has a
log-hazard per day that is linear in the covariates, ``logh_o = a_o + x . b_o``, constant from
a scan to the next scan (or the end of the record): an exponential / Cox model whose
coefficients are known, so the oracle risk of every benchmark task is the log-hazard itself.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "FACTORS",
    "HIDDEN",
    "COVARIATES",
    "OUTCOMES",
    "BENCH_TASKS",
    "draw_first_factors",
    "progress_factors",
    "log_hazards",
    "covariates",
]

FACTORS = ("emphysema", "cardiomegaly", "nodules", "effusion", "clot", "calcification", "pa_enlargement")
HIDDEN = ("age_z", "male", "frailty")
COVARIATES = FACTORS + HIDDEN

# Per factor: prevalence (fraction > 0), loading on the shared sickness g, on age, yearly
# progression of a chronic factor (None = acute: redrawn at every scan).
_FACTOR_PRIOR = {
    "emphysema": (0.35, 0.35, 0.30, 0.05),
    "cardiomegaly": (0.35, 0.45, 0.40, 0.06),
    "nodules": (0.40, 0.20, 0.20, 0.04),
    "effusion": (0.25, 0.55, 0.20, None),
    "clot": (0.30, 0.30, 0.00, None),
    "calcification": (0.50, 0.10, 0.80, 0.08),
    "pa_enlargement": (0.20, 0.40, 0.20, 0.05),
}

# Outcome log-hazards per day: intercept and coefficients on COVARIATES (missing = 0).
# Intercepts are calibrated (README) so that at N = 2,000: 12-month mortality ~18%,
# 12-month readmission ~30%, incident PH ~9%, PE within 2 days ~15%.
OUTCOMES: dict[str, tuple[float, dict[str, float]]] = {
    "death": (
        -10.6,
        {
            "emphysema": 1.4,
            "cardiomegaly": 1.6,
            "nodules": 1.6,
            "effusion": 2.2,
            "clot": 2.0,
            "calcification": 0.8,
            "pa_enlargement": 1.4,
            "age_z": 0.5,
            "frailty": 0.35,
        },
    ),
    "ip": (
        -8.8,
        {
            "emphysema": 1.2,
            "cardiomegaly": 1.5,
            "nodules": 0.6,
            "effusion": 1.8,
            "clot": 1.2,
            "calcification": 0.4,
            "pa_enlargement": 1.0,
            "age_z": 0.3,
            "frailty": 0.5,
        },
    ),
    "ph": (-9.6, {"pa_enlargement": 6.0, "emphysema": 1.0, "cardiomegaly": 1.0, "clot": 1.0}),
    "pe": (-8.0, {"clot": 10.0}),
    # Visits other than inpatient: more of them when sick, frail or old.
    "op": (-3.6, {"cardiomegaly": 0.4, "emphysema": 0.4, "nodules": 0.5, "frailty": 0.3, "age_z": 0.2}),
    "er": (-6.0, {"effusion": 0.8, "clot": 0.8, "cardiomegaly": 0.5, "frailty": 0.4}),
}

# The 8 INSPECT benchmark tasks (configs/tasks/inspect.yaml; a unit test keeps them in sync):
# name -> (outcome, codes, horizon_days, exclude_prior).
BENCH_TASKS: dict[str, tuple[str, tuple[str, ...], float, bool]] = {
    "pe": ("pe", ("SNOMED/59282003", "ICD10CM/I26.99", "ICD10CM/I26.09"), 2.0, False),
    "ph_12m": ("ph", ("SNOMED/70995007", "ICD10CM/I27.20", "ICD10CM/I27.0"), 365.0, True),
    "mortality_1m": ("death", ("MEDS_DEATH",), 30.0, False),
    "mortality_6m": ("death", ("MEDS_DEATH",), 180.0, False),
    "mortality_12m": ("death", ("MEDS_DEATH",), 365.0, False),
    "readmission_1m": ("ip", ("Visit/IP",), 30.0, False),
    "readmission_6m": ("ip", ("Visit/IP",), 180.0, False),
    "readmission_12m": ("ip", ("Visit/IP",), 365.0, False),
}


def _probit(p: float) -> float:
    """Inverse standard-normal CDF (Acklam-free: bisection is plenty for a handful of constants)."""
    lo, hi = -10.0, 10.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if 0.5 * (1.0 + math.erf(mid / math.sqrt(2.0))) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


_THRESHOLD = {f: _probit(1.0 - prior[0]) for f, prior in _FACTOR_PRIOR.items()}


def _severity(z: np.ndarray, factor: str) -> np.ndarray:
    """Latent normal score -> severity in [0, 1]; 0 below the prevalence threshold."""
    sev = np.clip((z - _THRESHOLD[factor]) / 1.2, 0.0, 1.0)
    if factor == "clot":
        # A clot is either absent or at least a moderate filling defect.
        sev = np.where(sev > 0, 0.25 + 0.75 * sev, 0.0)
    return sev


def draw_first_factors(rng: np.random.Generator, age_z: float) -> tuple[np.ndarray, np.ndarray]:
    """Factors at the first scan, float64 [F], and their latent scores (kept for redraws)."""
    g = rng.normal()
    z = np.empty(len(FACTORS))
    for i, f in enumerate(FACTORS):
        _, w_g, w_age, _ = _FACTOR_PRIOR[f]
        z[i] = w_g * g + w_age * age_z + math.sqrt(max(1e-6, 1 - w_g**2 - w_age**2 / 4)) * rng.normal()
    # Pulmonary hypertension follows lung and heart disease.
    ip = FACTORS.index("pa_enlargement")
    z[ip] += 0.4 * (z[FACTORS.index("emphysema")] > 0.8) + 0.4 * (z[FACTORS.index("cardiomegaly")] > 0.8)
    x = np.array([_severity(z[i], f) for i, f in enumerate(FACTORS)], dtype=np.float64)
    return x, z


def progress_factors(rng: np.random.Generator, x_F: np.ndarray, z_F: np.ndarray, years: float) -> np.ndarray:
    """Factors at a later scan: chronic ones progress, acute ones (effusion, clot) are redrawn."""
    out = np.empty_like(x_F)
    for i, f in enumerate(FACTORS):
        rate = _FACTOR_PRIOR[f][3]
        if rate is None:
            z_new = 0.5 * z_F[i] + math.sqrt(0.75) * rng.normal()
            out[i] = _severity(np.asarray(z_new), f)
        else:
            step = rate * years * rng.uniform(0.0, 2.0) if x_F[i] > 0 else 0.0
            out[i] = np.clip(x_F[i] + step + rng.normal(0.0, 0.03) * (x_F[i] > 0), 0.0, 1.0)
    return out


def covariates(x_SF: np.ndarray, age_z_S: np.ndarray, male: bool, frailty: float) -> np.ndarray:
    """Stack the covariate matrix X [S, len(COVARIATES)] in COVARIATES order."""
    x_SF = np.atleast_2d(x_SF)
    s = x_SF.shape[0]
    hidden = np.stack([np.asarray(age_z_S, float).reshape(s), np.full(s, float(male)), np.full(s, frailty)], 1)
    return np.concatenate([x_SF, hidden], axis=1)


def _coef(outcome: str) -> tuple[float, np.ndarray]:
    a, b = OUTCOMES[outcome]
    return a, np.array([b.get(c, 0.0) for c in COVARIATES])


def log_hazards(X_SC: np.ndarray, outcome: str) -> np.ndarray:
    """Log-hazard per day of ``outcome`` for each row of the covariate matrix [S, C] -> [S]."""
    a, b = _coef(outcome)
    return a + np.atleast_2d(X_SC) @ b
