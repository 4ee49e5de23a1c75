"""The code vocabulary: named clinical codes, heavy-tailed generic codes, and their hierarchy.

Legend: C visit-level codes (diagnoses, labs, meds), K covariates (model.COVARIATES).

At every visit each code c is recorded with probability ``sigmoid(alpha_c + beta_c . x)``:
``alpha`` follows a Zipf law over ranks (a few very common codes, a long tail), ``beta`` ties
most codes to one or two image factors or hidden covariates and leaves a fraction at zero
(pure noise). ``codes_table`` lists every code and its ancestors with ``parent_codes``
(e.g. ICD10CM/I26.99 -> ICD10CM/I26 -> ICD10CM/I26-I28 -> ICD10CM/I00-I99) for ontology
expansion. The vocabulary depends only on the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from tte_scale.synth.model import COVARIATES, FACTORS

__all__ = ["Vocab", "build_vocab", "STATIC_CODES", "FINDING_CODES", "PH_CODES", "PE_CODES"]

# Codes with fixed meaning outside the per-visit model (descriptions, parents).
SNOMED_ROOT = "SNOMED/404684003"
STATIC_CODES = {
    "MEDS_BIRTH": ("Birth", []),
    "MEDS_DEATH": ("Death", []),
    "Gender/F": ("Female", []),
    "Gender/M": ("Male", []),
    "Visit/IP": ("Inpatient visit", ["Visit"]),
    "Visit/ER": ("Emergency room visit", ["Visit"]),
    "Visit/OP": ("Outpatient visit", ["Visit"]),
    "Visit": ("Visit", []),
    "CPT4/71275": ("CT angiography, chest, with contrast", []),
    SNOMED_ROOT: ("Clinical finding", []),
    "SNOMED/19829001": ("Disorder of lung", [SNOMED_ROOT]),
    "SNOMED/56265001": ("Heart disease", [SNOMED_ROOT]),
}
# Findings of the scan report (SNOMED) -> (description, parent).
FINDING_CODES = {
    "SNOMED/59282003": ("Pulmonary embolism", "SNOMED/19829001"),
    "SNOMED/70995007": ("Pulmonary hypertension", "SNOMED/56265001"),
    "SNOMED/46621007": ("Atelectasis", "SNOMED/19829001"),
    "SNOMED/8186001": ("Cardiomegaly", "SNOMED/56265001"),
    "SNOMED/95436008": ("Lung consolidation", "SNOMED/19829001"),
    "SNOMED/267038008": ("Edema", SNOMED_ROOT),
    "SNOMED/60046008": ("Pleural effusion", "SNOMED/19829001"),
}
PE_CODES = ("SNOMED/59282003", "ICD10CM/I26.99", "ICD10CM/I26.09")
PH_CODES = ("SNOMED/70995007", "ICD10CM/I27.20", "ICD10CM/I27.0")

# Named visit-level codes: (code, description, kind, base logit, loadings, lab (mu, sd) or None).
_NAMED = [
    ("ICD10CM/J43.9", "Emphysema, unspecified", "dx", -3.5, {"emphysema": 4.0}, None),
    ("ICD10CM/J44.9", "COPD, unspecified", "dx", -3.0, {"emphysema": 3.0, "age_z": 0.3}, None),
    ("ICD10CM/I51.7", "Cardiomegaly", "dx", -4.0, {"cardiomegaly": 4.0}, None),
    ("ICD10CM/I50.9", "Heart failure, unspecified", "dx", -3.5, {"cardiomegaly": 3.0, "effusion": 1.5}, None),
    ("ICD10CM/J90", "Pleural effusion, not elsewhere classified", "dx", -4.0, {"effusion": 4.5}, None),
    ("ICD10CM/R91.1", "Solitary pulmonary nodule", "dx", -4.0, {"nodules": 4.0}, None),
    ("ICD10CM/R91.8", "Other nonspecific abnormal finding of lung field", "dx", -3.5, {"nodules": 3.0}, None),
    ("ICD10CM/C34.90", "Malignant neoplasm of lung, unspecified", "dx", -5.0, {"nodules": 3.5}, None),
    ("ICD10CM/I70.0", "Atherosclerosis of aorta", "dx", -4.0, {"calcification": 4.0}, None),
    ("ICD10CM/I25.10", "Atherosclerotic heart disease", "dx", -3.0, {"calcification": 3.0, "age_z": 0.4}, None),
    (
        "ICD10CM/I82.409",
        "Acute embolism and thrombosis of deep veins of lower extremity",
        "dx",
        -5.0,
        {"clot": 4.0},
        None,
    ),
    ("ICD10CM/I10", "Essential (primary) hypertension", "dx", -1.5, {"age_z": 0.6}, None),
    ("ICD10CM/E11.9", "Type 2 diabetes mellitus without complications", "dx", -2.0, {"frailty": 0.5}, None),
    (
        "LOINC/30934-4",
        "Natriuretic peptide B [Mass/volume] in Serum or Plasma",
        "lab",
        -2.5,
        {"cardiomegaly": 2.0, "pa_enlargement": 1.5},
        (80.0, 60.0),
    ),
    (
        "LOINC/48065-7",
        "Fibrin D-dimer FEU [Mass/volume] in Platelet poor plasma",
        "lab",
        -3.0,
        {"clot": 3.0},
        (0.5, 0.4),
    ),
    (
        "LOINC/6598-7",
        "Troponin T.cardiac [Mass/volume] in Serum or Plasma",
        "lab",
        -2.5,
        {"clot": 1.5, "cardiomegaly": 1.0},
        (0.02, 0.02),
    ),
    ("LOINC/718-7", "Hemoglobin [Mass/volume] in Blood", "lab", -0.5, {}, (13.5, 1.6)),
    ("LOINC/2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "lab", -0.6, {"age_z": 0.2}, (1.0, 0.3)),
    ("RxNorm/1364430", "apixaban", "med", -5.0, {"clot": 5.0}, None),
    ("RxNorm/11289", "warfarin", "med", -4.0, {"clot": 3.0, "age_z": 0.3}, None),
    ("RxNorm/4603", "furosemide", "med", -3.5, {"cardiomegaly": 2.5, "effusion": 2.0}, None),
    ("RxNorm/69120", "tiotropium", "med", -4.0, {"emphysema": 4.0}, None),
    ("RxNorm/83367", "atorvastatin", "med", -2.5, {"calcification": 2.5}, None),
    ("RxNorm/136411", "sildenafil", "med", -5.0, {"pa_enlargement": 5.0}, None),
    # The findings of the seed paper's TTE tasks (configs/tasks/paper_tte.yaml) also recur at
    # follow-up visits, so that their time to the next occurrence after a scan is an outcome.
    ("SNOMED/46621007", "Atelectasis", "dx", -4.5, {"effusion": 2.5, "emphysema": 1.0}, None),
    ("SNOMED/8186001", "Cardiomegaly", "dx", -4.5, {"cardiomegaly": 4.0}, None),
    ("SNOMED/95436008", "Lung consolidation", "dx", -4.5, {"frailty": 1.0, "age_z": 0.3}, None),
    ("SNOMED/267038008", "Edema", "dx", -5.0, {"cardiomegaly": 2.5, "effusion": 2.5}, None),
    ("SNOMED/60046008", "Pleural effusion", "dx", -4.5, {"effusion": 4.0}, None),
]
# Lab numeric values move with these covariates (in units of the lab's sd).
_LAB_SHIFT = {
    "LOINC/30934-4": {"cardiomegaly": 3.0, "pa_enlargement": 2.0},
    "LOINC/48065-7": {"clot": 4.0},
    "LOINC/6598-7": {"clot": 2.0},
}

_ICD_CHAPTERS = [
    ("A", "B", "A00-B99"),
    ("C", "C", "C00-D49"),
    ("E", "E", "E00-E89"),
    ("F", "F", "F01-F99"),
    ("G", "G", "G00-G99"),
    ("I", "I", "I00-I99"),
    ("J", "J", "J00-J99"),
    ("K", "K", "K00-K95"),
    ("L", "L", "L00-L99"),
    ("M", "M", "M00-M99"),
    ("N", "N", "N00-N99"),
    ("R", "R", "R00-R99"),
    ("Z", "Z", "Z00-Z99"),
]


def _icd_parents(code: str) -> list[tuple[str, str, list[str]]]:
    """(code, description, parents) rows for the ancestors of an ICD10CM code, nearest first."""
    body = code.split("/", 1)[1]
    cat = body.split(".")[0]
    letter, num = cat[0], int(cat[1:3])
    chapter = next(ch for lo, hi, ch in _ICD_CHAPTERS if lo <= letter <= hi or (letter == "D" and lo == "C"))
    # Real block for the PE/PH categories; decade blocks elsewhere.
    block = "I26-I28" if letter == "I" and 26 <= num <= 28 else f"{letter}{num // 10}0-{letter}{num // 10}9"
    rows = [
        (f"ICD10CM/{chapter}", f"ICD-10-CM chapter {chapter}", []),
        (f"ICD10CM/{block}", f"ICD-10-CM block {block}", [f"ICD10CM/{chapter}"]),
    ]
    if "." in body:
        rows.append((f"ICD10CM/{cat}", f"ICD-10-CM category {cat}", [f"ICD10CM/{block}"]))
    return rows


def _parent_of(code: str) -> list[str]:
    """Immediate parents of a leaf code."""
    if code.startswith("ICD10CM/"):
        body = code.split("/", 1)[1]
        cat = body.split(".")[0]
        if "." in body:
            return [f"ICD10CM/{cat}"]
        return [_icd_parents(code)[1][0]]
    if code.startswith("RxNorm/"):
        return [f"ATC/{_atc_of(code)}"]
    return []


def _atc_of(code: str) -> str:
    """A stable ATC level-4 class for an RxNorm code (hash of the number; synthetic)."""
    n = int(code.split("/")[1])
    letters = "ABCDGHJLMNPRS"
    return f"{letters[n % 13]}{(n // 13) % 20 + 1:02d}{'ABCDEFGHJ'[(n // 260) % 9]}{'ABCDEFGHJ'[(n // 2340) % 9]}"


@dataclass(frozen=True, slots=True)
class Vocab:
    """Visit-level codes and the parameters of their recording model."""

    codes: tuple[str, ...]
    """The C visit-level codes, index c."""
    is_lab: np.ndarray
    """bool [C]: a lab with a numeric value."""
    alpha: np.ndarray
    """float64 [C]: base logit of being recorded at a visit."""
    beta: np.ndarray
    """float64 [C, K]: loadings on model.COVARIATES."""
    lab_mu: np.ndarray
    """float64 [C]: lab mean (0 for non-labs)."""
    lab_sd: np.ndarray
    """float64 [C]: lab standard deviation."""
    lab_gamma: np.ndarray
    """float64 [C, K]: shift of the lab value, in sds, per covariate."""


def _generic_code(rng: np.random.Generator, kind: str) -> str:
    if kind == "dx":
        letter = "ABCEFGIJKLMNRZ"[rng.integers(14)]
        cat = rng.integers(0, 100)
        if rng.random() < 0.3:
            return f"ICD10CM/{letter}{cat:02d}"
        return f"ICD10CM/{letter}{cat:02d}.{rng.integers(0, 100 if rng.random() < 0.5 else 10)}"
    if kind == "lab":
        n = rng.integers(1000, 99999)
        return f"LOINC/{n}-{n % 9}"
    return f"RxNorm/{rng.integers(1000, 2_000_000)}"


def build_vocab(seed: int, n_generic: int, noise_frac: float, zipf_exponent: float = 0.9) -> Vocab:
    """The visit-level vocabulary: the named codes first, then ``n_generic`` generic ones, the
    generic code of rank r recorded at a visit with probability 0.25 * r**-zipf_exponent."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2**32 - 1,)))
    reserved = set(STATIC_CODES) | set(FINDING_CODES) | set(PE_CODES) | set(PH_CODES)
    codes, is_lab, alpha, beta, mu, sd, gamma = [], [], [], [], [], [], []
    k = len(COVARIATES)
    for code, _, kind, a, load, lab in _NAMED:
        codes.append(code)
        is_lab.append(kind == "lab")
        alpha.append(a)
        beta.append([load.get(c, 0.0) for c in COVARIATES])
        mu.append(lab[0] if lab else 0.0)
        sd.append(lab[1] if lab else 0.0)
        gamma.append([_LAB_SHIFT.get(code, {}).get(c, 0.0) for c in COVARIATES])
    seen = set(codes) | reserved
    kinds = rng.choice(["dx", "lab", "med"], size=n_generic, p=[0.6, 0.15, 0.25])
    for rank, kind in enumerate(kinds, start=1):
        code = _generic_code(rng, kind)
        while code in seen or code.split(".")[0] in {"ICD10CM/I26", "ICD10CM/I27"}:
            code = _generic_code(rng, kind)
        seen.add(code)
        codes.append(code)
        is_lab.append(kind == "lab")
        # Zipf over ranks: P(recorded at a visit) ~ 0.25 * rank^-s (s = 0.9 by default), a few
        # common codes, long tail; a smaller s fattens the tail (more distinct codes per subject).
        p = 0.25 * rank**-zipf_exponent
        alpha.append(float(np.log(p / (1 - p))))
        b = np.zeros(k)
        if rng.random() >= noise_frac:
            if rng.random() < 0.75:  # image-visible factors drive most codes
                idx = rng.choice(len(FACTORS), size=rng.integers(1, 3), replace=False)
            else:
                idx = rng.choice(np.arange(len(FACTORS), k), size=1)
            b[idx] = rng.normal(2.0, 0.7, size=len(idx)) * np.where(rng.random(len(idx)) < 0.9, 1, -1)
        beta.append(b)
        mu.append(float(rng.uniform(1, 200)) if kind == "lab" else 0.0)
        sd.append(mu[-1] * 0.2)
        gamma.append(b * 0.5 if kind == "lab" else np.zeros(k))
    return Vocab(
        codes=tuple(codes),
        is_lab=np.array(is_lab),
        alpha=np.array(alpha),
        beta=np.array(beta, dtype=np.float64),
        lab_mu=np.array(mu),
        lab_sd=np.array(sd),
        lab_gamma=np.array(gamma, dtype=np.float64),
    )


def codes_table(vocab: Vocab, extra_codes: dict[str, str] | None = None) -> pa.Table:
    """metadata/codes.parquet: every code that can occur, plus all ancestors (parent_codes).

    ``extra_codes`` (code -> description): codes written outside the per-visit model (the sparse
    profile's lesion outcomes)."""
    names = {c: d for c, d, *_ in _NAMED}
    rows: dict[str, tuple[str, list[str]]] = {}
    for code, (desc, parents) in STATIC_CODES.items():
        rows[code] = (desc, parents)
    for code, (desc, parent) in FINDING_CODES.items():
        rows[code] = (desc, [parent])
    extra = {
        "ICD10CM/I26.99": "Other pulmonary embolism without acute cor pulmonale",
        "ICD10CM/I26.09": "Other pulmonary embolism with acute cor pulmonale",
        "ICD10CM/I27.20": "Pulmonary hypertension, unspecified",
        "ICD10CM/I27.0": "Primary pulmonary hypertension",
        **(extra_codes or {}),
    }
    for code in list(vocab.codes) + list(extra):
        if code in FINDING_CODES:  # described above, with their SNOMED parent
            continue
        desc = names.get(code) or extra.get(code) or f"synthetic {code.split('/')[0]} code {code.split('/')[1]}"
        rows[code] = (desc, _parent_of(code))
        if code.startswith("ICD10CM/"):
            for anc, adesc, aparents in _icd_parents(code):
                rows.setdefault(anc, (adesc, aparents))
        elif code.startswith("RxNorm/"):
            atc = _atc_of(code)
            chain = [atc, atc[:4], atc[:3], atc[:1]]
            for i, level in enumerate(chain):
                rows.setdefault(f"ATC/{level}", (f"ATC class {level}", [f"ATC/{chain[i + 1]}"] if i < 3 else []))
    codes = sorted(rows)
    return pa.table(
        {
            "code": pa.array(codes, pa.string()),
            "description": pa.array([rows[c][0] for c in codes], pa.string()),
            "parent_codes": pa.array([rows[c][1] for c in codes], pa.list_(pa.string())),
        }
    )
