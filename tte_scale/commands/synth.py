"""`tte-scale synth`: generate the synthetic INSPECT-like cohort (MEDS + CT volumes + scans table)."""

from __future__ import annotations

import argparse

from tte_scale.commands import add_config_arguments

HELP = "Generate the synthetic INSPECT-like cohort (MEDS + CT volumes + scans table)"
DESCRIPTION = """\
Generate a synthetic INSPECT-like cohort in exactly the input format of the pipeline:
  OUT/data/<split>/<chunk>.parquet, OUT/metadata/{dataset.json,codes.parquet,subject_splits.parquet}
  (MEDS), OUT/scans.parquet, OUT/images/ (NIfTI; plus OUT/dicom/ with --dicom), and the ground
  truth apart in OUT/truth/ (latent factors, true log-hazards of the 8 benchmark tasks).
Deterministic per --seed whatever --workers. The generative model is described in
tte_scale/synth/README.md; every SynthConfig field can be set with --set (e.g. --set generic_codes=500).

example: tte-scale synth --out cohort --subjects 200 --seed 0
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (must be empty or absent)")
    parser.add_argument("--subjects", type=int, metavar="N", help="number of subjects (default 200)")
    parser.add_argument("--seed", type=int, metavar="S", help="master seed (default 0)")
    parser.add_argument("--workers", type=int, metavar="W", help="worker processes (default 2)")
    parser.add_argument(
        "--dicom",
        action="store_true",
        default=None,
        help="also write every scan as a DICOM series with fake PHI; image_path then points at the series folder",
    )
    parser.add_argument(
        "--profile",
        choices=["compact", "realistic", "sparse"],
        help="preset: compact (default; 2.8-4 mm pixels, 96-144 matrix, 3.5-6 mm "
        "slices), realistic (0.6-1 mm pixels, 512 matrix, 1-3 mm slices) or sparse (compact "
        "geometry, healthy anatomy with one small lesion whose size drives lung cancer and "
        "biopsy codes, distractors that drive nothing, all other codes image-free)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing `tte-scale synth` output in --out"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="finish an interrupted run in --out (same config), redoing only unfinished chunks",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from tte_scale.config import apply_overrides, from_dict, read_yaml
    from tte_scale.synth import SynthConfig, generate

    data = read_yaml(args.config) if args.config else {}
    for key in ("subjects", "seed", "workers", "dicom", "profile"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    cfg = from_dict(SynthConfig, apply_overrides(data, args.overrides))
    summary = generate(cfg, args.out, overwrite=args.overwrite, resume=args.resume, progress=not args.no_progress)
    for line in summary.lines():
        print(line)
    return 0
