"""Configuration of the synthetic cohort: one kw-only dataclass per component.

`SynthConfig` describes a whole run; `ScannerConfig` the imaging protocol, with three presets
(`compact`, the default that keeps `tte-scale synth --subjects 200` under a minute on 2 cores,
`realistic`, clinical chest-CT geometry, and `sparse`: compact geometry with the sparse latent
model of tte_scale/synth/sparse.py). See tte_scale/synth/README.md for the model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from tte_scale.config import check

__all__ = ["ScannerConfig", "SynthConfig", "PROFILES", "scanner_for", "is_sparse"]


@dataclass(kw_only=True, slots=True)
class ScannerConfig:
    """Ranges the per-scan scanner geometry is drawn from (uniformly, per scan)."""

    inplane_spacing_mm: tuple[float, float] = (2.8, 4.0)
    """Range of the in-plane pixel spacing (mm); one value per scan, square pixels."""
    slice_spacing_mm: tuple[float, float] = (3.5, 6.0)
    """Range of the distance between slices (mm); the slice thickness equals it."""
    matrix: tuple[int, int] = (96, 144)
    """Range of the in-plane matrix size (pixels); the FOV is matrix * spacing."""
    fov_mm: tuple[float, float] = (340.0, 480.0)
    """Range of the wanted reconstruction field of view (mm); the matrix follows, clipped."""
    coverage_mm: tuple[float, float] = (250.0, 330.0)
    """Range of the cranio-caudal coverage (mm); the slice count follows from it."""
    noise_hu: tuple[float, float] = (8.0, 25.0)
    """Range of the standard deviation of the Gaussian image noise (HU)."""
    feet_first_prob: float = 0.3
    """Probability that a series is stored feet-first (slice index runs superior->inferior)."""
    flip_prob: float = 0.2
    """Probability of each in-plane axis being stored flipped (and, separately, transposed)."""

    def __post_init__(self) -> None:
        for name in ("inplane_spacing_mm", "slice_spacing_mm", "matrix", "fov_mm", "coverage_mm", "noise_hu"):
            lo, hi = getattr(self, name)
            check(0 < lo <= hi, name, f"needs 0 < low <= high, got {(lo, hi)}")
        check(self.matrix[1] <= 1024, "matrix", f"at most 1024 pixels, got {self.matrix[1]}")
        for name in ("feet_first_prob", "flip_prob"):
            check(0.0 <= getattr(self, name) <= 1.0, name, "must be a probability in [0, 1]")


PROFILES: dict[str, ScannerConfig] = {
    # Same anatomy in mm, coarse grid: ~0.9 M voxels a scan, rendered + written in ~0.15 s.
    "compact": ScannerConfig(),
    # Clinical chest CT: 0.6-1.0 mm pixels, 512 matrix, 1-3 mm slices (~100-300 slices).
    "realistic": ScannerConfig(
        inplane_spacing_mm=(0.6, 1.0),
        slice_spacing_mm=(1.0, 3.0),
        matrix=(512, 512),
        fov_mm=(300.0, 512.0),
        coverage_mm=(250.0, 330.0),
    ),
    # The compact grid, but healthy anatomy plus one small lesion that drives 2 outcome groups
    # and distractors that drive nothing (tte_scale/synth/sparse.py): most codes are image-free.
    "sparse": ScannerConfig(),
}
SPARSE_PROFILES = frozenset({"sparse"})
"""Profiles that use the sparse latent model instead of the INSPECT-like one."""


@dataclass(kw_only=True, slots=True)
class SynthConfig:
    """A whole synthetic-cohort run (`tte-scale synth`)."""

    subjects: int = 200
    """Number of subjects to generate."""
    seed: int = 0
    """Master seed; subject i draws from SeedSequence(seed, spawn_key=(i,)), so the output
    does not depend on the number of workers."""
    workers: int = 2
    """Worker processes; each writes its own files (no shared writer)."""
    profile: Literal["compact", "realistic", "sparse"] = "compact"
    """Preset (see ScannerConfig / README): imaging geometry, and for `sparse` the latent model
    (one small lesion drives 2 outcome groups, the rest of the codes are image-free);
    `scanner` overrides the geometry when set."""
    scanner: ScannerConfig | None = None
    """Explicit scanner ranges; null = the preset named by `profile`."""
    dicom: bool = False
    """Also write each scan as a DICOM series; `image_path` then points at the series folder."""
    chunk_subjects: int = 100
    """Largest number of subjects per work unit and per data file (smaller for small N)."""
    split_fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)
    """Fractions of subjects in train / tuning / held_out."""
    second_scan_prob: float = 0.4
    """Probability that a subject has a second scan (prediction time)."""
    first_scan_years: tuple[int, int] = (2006, 2020)
    """Calendar years the first scan is drawn from (uniformly)."""
    study_end: str = "2022-01-01"
    """Date (ISO) at which every record is censored at the latest."""
    history_years: tuple[float, float] = (0.2, 5.0)
    """Range of EHR history before the first scan (years)."""
    followup_mean_years: float = 4.0
    """Mean of the exponential loss-to-follow-up time after the first scan (years)."""
    generic_codes: int = 1200
    """Number of generic ICD10CM/LOINC/RxNorm codes (besides the named clinical codes)."""
    generic_zipf_exponent: float = 0.9
    """Zipf exponent s of the generic codes: the code of frequency rank r is recorded at a visit
    with probability 0.25 * r**-s. Smaller s = a fatter tail, i.e. more distinct codes per
    subject (and more events): `--set generic_codes=20000 --set generic_zipf_exponent=0.5` gives
    a few dozen subjects more than 8,192 distinct codes, so `labels --tasks 8192` keeps K = 8,192
    real tasks (benchmarks/bench_rehearsal.py) instead of needing thousands of subjects."""
    noise_code_frac: float = 0.3
    """Fraction of generic codes that depend on nothing (pure noise)."""
    shuffle_rows: bool = True
    """Shuffle event rows within each subject (MEDS exports need not be time sorted; readers
    must sort). False writes rows sorted by time (static rows first)."""

    def __post_init__(self) -> None:
        check(self.subjects >= 1, "subjects", f"must be >= 1, got {self.subjects}")
        check(self.subjects <= 10_000_000, "subjects", f"at most 10,000,000, got {self.subjects}")
        check(0 <= self.seed < 2**63, "seed", f"must be in [0, 2**63), got {self.seed}")
        check(1 <= self.workers <= 256, "workers", f"must be in [1, 256], got {self.workers}")
        check(self.chunk_subjects >= 1, "chunk_subjects", "must be >= 1")
        check(self.profile in PROFILES, "profile", f"one of {sorted(PROFILES)}, got {self.profile!r}")
        fr = self.split_fractions
        check(
            all(f >= 0 for f in fr) and abs(sum(fr) - 1.0) < 1e-6,
            "split_fractions",
            f"three non-negative fractions summing to 1, got {fr}",
        )
        check(0.0 <= self.second_scan_prob <= 1.0, "second_scan_prob", "must be in [0, 1]")
        lo, hi = self.first_scan_years
        check(1950 <= lo <= hi <= 2100, "first_scan_years", f"needs 1950 <= low <= high <= 2100, got {(lo, hi)}")
        try:
            end_year = int(self.study_end[:4])
            import datetime

            datetime.date.fromisoformat(self.study_end)
        except ValueError:
            check(False, "study_end", f"not an ISO date: {self.study_end!r}")
        check(end_year > hi, "study_end", f"must be after the last first-scan year {hi}")
        h0, h1 = self.history_years
        check(0 < h0 <= h1 <= 50, "history_years", f"needs 0 < low <= high <= 50, got {(h0, h1)}")
        check(self.followup_mean_years > 0, "followup_mean_years", "must be > 0")
        check(50 <= self.generic_codes <= 20_000, "generic_codes", f"in [50, 20000], got {self.generic_codes}")
        check(
            0.0 <= self.generic_zipf_exponent <= 3.0,
            "generic_zipf_exponent",
            f"in [0, 3], got {self.generic_zipf_exponent}",
        )
        check(0.0 <= self.noise_code_frac <= 1.0, "noise_code_frac", "must be in [0, 1]")


def scanner_for(cfg: SynthConfig) -> ScannerConfig:
    """The scanner ranges in effect: the explicit `scanner`, else the `profile` preset."""
    return cfg.scanner if cfg.scanner is not None else dataclasses.replace(PROFILES[cfg.profile])


def is_sparse(cfg: SynthConfig) -> bool:
    """Whether the run uses the sparse latent model (tte_scale/synth/sparse.py)."""
    return cfg.profile in SPARSE_PROFILES
