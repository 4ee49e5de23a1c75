"""The `sparse` cohort: one small localized lesion drives 2 outcome code groups, nothing else
in the image drives anything (pure functions given the RNG).

Why: in the default cohort many pretraining codes load on the same few global image factors,
so any encoder that sees "how sick the chest looks" gets most of the signal. Real EHR is not
like that: of thousands of codes only a few depend on what the image shows, and the biomarker
can be a nodule of a few voxels. This profile is that regime:

* every scan shows healthy anatomy (all ``model.FACTORS`` at 0; age is not rendered either),
* half of the subjects carry one round soft-tissue lesion in a lung, 6-24 mm across (1-4
  voxels at the demo's 5.5-6 mm shard spacing), that grows between scans;
* each scan also shows 1-4 distractors: elongated soft-tissue bands (scar, atelectasis) of
  the same intensity and overlapping size, drawn from their own RNG stream, that drive nothing;
* the lesion's size drives two outcomes, lung cancer (`ICD10CM/C34.11|C34.31`, then recurring)
  and lung biopsy (`CPT4/32408`); every other code (>= 99% of the vocabulary) depends only on
  hidden covariates (age, sex, frailty) or on nothing.

Legend: S scans of one subject.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "LESION_OUTCOMES",
    "SPARSE_BENCH_TASKS",
    "IMAGE_CODES",
    "LESION_HU",
    "Lesion",
    "Blob",
    "draw_lesion",
    "lesion_blob",
    "lesion_sizes",
    "diameter_mm",
    "draw_distractors",
    "lesion_log_hazard",
    "lesion_events",
]

LESION_PREVALENCE = 0.5
DIAMETER_MM = (6.0, 24.0)
"""Diameter of the lesion at size 0 and size 1."""
GROWTH_PER_YEAR = 0.15
"""Size growth per year between scans (units of the [0, 1] size)."""
LESION_HU = (25.0, 55.0)
"""Range of the lesion's (and distractors') attenuation: soft tissue, like nodules and scars."""

# Outcome -> (log-hazard per day at size 0 / without a lesion, coefficient on size, codes of the
# first diagnosis, code that recurs at follow-up or None). Calibrated at N = 1,000 (README).
LESION_OUTCOMES: dict[str, tuple[float, float, tuple[str, ...], str | None]] = {
    "lung_cancer": (-9.5, 4.5, ("ICD10CM/C34.11", "ICD10CM/C34.31"), "ICD10CM/C34.11"),
    "lung_biopsy": (-9.0, 3.5, ("CPT4/32408",), None),
}
IMAGE_CODES = frozenset(c for _, _, codes, _ in LESION_OUTCOMES.values() for c in codes)
"""The only codes whose occurrence depends on what the image shows."""
CODE_DESCRIPTIONS = {
    "ICD10CM/C34.11": "Malignant neoplasm of upper lobe, right bronchus or lung",
    "ICD10CM/C34.31": "Malignant neoplasm of lower lobe, right bronchus or lung",
    "CPT4/32408": "Core needle biopsy, lung or mediastinum, percutaneous",
}

# name -> (outcome, codes, horizon_days, exclude_prior), as model.BENCH_TASKS. The two lesion
# tasks are configs/tasks/sparse.yaml (a unit test keeps them in sync); readmission (driven by
# age and frailty only, ~13% in 12 months) is an image-free control kept in the truth only.
# Mortality is not a task here: without image disease the death rate is ~1% a year.
SPARSE_BENCH_TASKS: dict[str, tuple[str, tuple[str, ...], float, bool]] = {
    "lung_cancer_12m": ("lung_cancer", LESION_OUTCOMES["lung_cancer"][2], 365.0, True),
    "lung_biopsy_6m": ("lung_biopsy", LESION_OUTCOMES["lung_biopsy"][2], 180.0, False),
    "readmission_12m": ("ip", ("Visit/IP",), 365.0, False),
}


@dataclass(frozen=True, slots=True)
class Lesion:
    """A subject's lesion: fixed place in the lung, size at each scan."""

    present: bool
    size_S: np.ndarray
    """float64 [S] in [0, 1] (0 when absent)."""
    side: int
    """0 = right lung, 1 = left lung (phantom.lung_frames order)."""
    u: np.ndarray
    """float64 [3]: position inside the lung ellipsoid, in units of its radii (|u| <= 0.55)."""
    hu: float


@dataclass(frozen=True, slots=True)
class Blob:
    """A soft-tissue ellipsoid placed in a lung: the lesion (round) or a distractor (elongated)."""

    side: int
    u: np.ndarray
    """Centre inside the lung ellipsoid, in units of its radii."""
    radii_mm: np.ndarray
    """float64 [3] semi-axes (mm)."""
    hu: float


def _inside_point(rng: np.random.Generator, radius: float) -> np.ndarray:
    """A uniform point in the ball of ``radius`` (lung-normalized units)."""
    v = rng.normal(size=3)
    return v / np.linalg.norm(v) * radius * rng.random() ** (1 / 3)


def draw_lesion(rng: np.random.Generator, scan_days: np.ndarray) -> Lesion:
    """The subject's lesion at each scan (sizes grow between scans)."""
    present = bool(rng.random() < LESION_PREVALENCE)
    size0 = float(rng.random())
    side = int(rng.integers(2))
    u = _inside_point(rng, 0.55)
    hu = float(rng.uniform(*LESION_HU))
    years = (np.asarray(scan_days, float) - float(scan_days[0])) / 365.25
    return Lesion(present=present, size_S=lesion_sizes(present, size0, years), side=side, u=u, hu=hu)


def lesion_sizes(present: bool, size0: float, years_S: np.ndarray) -> np.ndarray:
    """Size at each scan: 0 without a lesion, else growing linearly and capped at 1."""
    if not present:
        return np.zeros(len(years_S))
    return np.clip(size0 + GROWTH_PER_YEAR * np.asarray(years_S, float), 0.0, 1.0)


def diameter_mm(size: float) -> float:
    lo, hi = DIAMETER_MM
    return lo + (hi - lo) * float(size)


def lesion_blob(lesion: Lesion, s: int) -> Blob | None:
    """The lesion as rendered in scan ``s`` (None without a lesion)."""
    if not lesion.present:
        return None
    r = diameter_mm(lesion.size_S[s]) / 2
    return Blob(side=lesion.side, u=lesion.u, radii_mm=np.full(3, r), hu=lesion.hu)


def draw_distractors(rng: np.random.Generator) -> list[Blob]:
    """1-4 elongated soft-tissue bands of the lesion's intensity and size range; they drive nothing."""
    out = []
    for _ in range(1 + int(rng.integers(4))):
        r = rng.uniform(*DIAMETER_MM) / 2
        radii = np.full(3, r / rng.uniform(2.0, 3.0))
        radii[rng.integers(3)] = r * rng.uniform(1.2, 1.8)  # long along one axis: a band, not a ball
        out.append(
            Blob(side=int(rng.integers(2)), u=_inside_point(rng, 0.55), radii_mm=radii, hu=rng.uniform(*LESION_HU))
        )
    return out


def lesion_log_hazard(size: float | np.ndarray, outcome: str) -> np.ndarray:
    """Log-hazard per day of a lesion outcome at the given lesion size(s)."""
    a, b, _, _ = LESION_OUTCOMES[outcome]
    return a + b * np.asarray(size, float)


def lesion_events(
    rng: np.random.Generator, size_S: np.ndarray, segments: list[tuple[float, float]]
) -> tuple[list[float], list[str]]:
    """(times, codes) of the lesion outcomes over the follow-up segments [a, b) opened by each scan.

    Cancer is diagnosed once (first arrival of its exponential clock) and then recurs at later
    follow-up visits; a biopsy can happen once per segment.
    """
    times: list[float] = []
    codes: list[str] = []
    cancer_day = np.nan
    for s, (a, b) in enumerate(segments):
        for outcome, (_, _, first_codes, _) in LESION_OUTCOMES.items():
            if outcome == "lung_cancer" and not np.isnan(cancer_day):
                continue
            t = a + rng.exponential(1.0 / float(np.exp(lesion_log_hazard(size_S[s], outcome))))
            if t >= b:
                continue
            code = first_codes[int(rng.integers(len(first_codes)))]
            times.append(t)
            codes.append(code)
            if outcome == "lung_cancer":
                cancer_day = t
    end = segments[-1][1] if segments else np.nan
    if not np.isnan(cancer_day):
        recur = LESION_OUTCOMES["lung_cancer"][3]
        for t in cancer_day + np.cumsum(rng.exponential(60.0, rng.poisson(5))):
            if t < end:
                times.append(float(t))
                codes.append(recur)
    return times, codes
