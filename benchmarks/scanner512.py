"""The user's on-disk geometry for the loader and sharding benchmarks: a `synth --profile realistic`
cohort pinned to 512 x 512 slices of 0.7 mm pixels and 1.25 mm slice spacing (NIfTI and DICOM).

Generating it takes minutes on 2 cores, so it is cached: `cohort(path)` reuses a complete cohort
at ``path`` (its synth.json names the same geometry) and writes one otherwise.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tte_scale.benchmarks.common import REPO

PIXEL_MM = 0.7
SLICE_MM = 1.25
MATRIX = 512
# the realistic profile with its ranges pinned to one geometry (FOV = matrix x pixel)
SCANNER = {
    "inplane_spacing_mm": [PIXEL_MM, PIXEL_MM],
    "slice_spacing_mm": [SLICE_MM, SLICE_MM],
    "matrix": [MATRIX, MATRIX],
    "fov_mm": [MATRIX * PIXEL_MM, MATRIX * PIXEL_MM],
    "coverage_mm": [250.0, 330.0],
}
DEFAULT_CACHE = (REPO or Path.cwd()) / "runs" / "bench_cache" / "scanner512"
GEOMETRY = f"{MATRIX}x{MATRIX} slices, {PIXEL_MM} mm pixels, {SLICE_MM} mm slice spacing"


def cohort(path: Path = DEFAULT_CACHE, subjects: int = 6) -> Path:
    """A cached cohort folder (scans.parquet -> DICOM series; NIfTI copies under images/)."""
    path = Path(path)
    info = path / "synth.json"
    if info.is_file() and (path / "scans.parquet").is_file():
        return path
    if path.exists() and any(path.iterdir()):
        raise SystemExit(f"{path}: exists but holds no finished synth cohort; remove it or pass another folder")
    override = json.dumps(SCANNER)
    cmd = [sys.executable, "-m", "tte_scale.cli", "synth", "--out", str(path), "--subjects", str(subjects)]
    cmd += ["--profile", "realistic", "--dicom", "--no-progress", "--set", f"scanner={override}"]
    print(f"writing the {GEOMETRY} cohort to {path} (minutes; cached for later runs)", flush=True)
    subprocess.run(cmd, check=True)
    return path


def nifti_paths(path: Path) -> list[Path]:
    return sorted(Path(path).glob("images/*/*.nii.gz"))
