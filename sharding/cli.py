"""Command line of the sharding job: `tte-scale shard ...` and `python -m sharding ...`."""

from __future__ import annotations

import argparse
import os
import sys

DESCRIPTION = """\
Read the scans of a scans table (NIfTI files or DICOM series folders), turn each into a
canonical int16 volume (orientation SAL, spacing/shape of the config, HU clipped) and write
WebDataset tar shards and/or a Zarr v3 store with the labels of a labels folder, plus a
manifest (docs/formats.md "Shards folder"). Runs on an embedded local Ray with --workers CPUs,
on a Ray cluster with --ray-address, or in this process with --workers 0; on Ray, scans are
mapped by Ray tasks (default) or by a Ray Data pipeline (--set executor=data), with the same
bytes out. Ray's start-up costs several seconds: for a few dozen small scans, --workers 0 is
faster (benchmarks/results/shard.md). A re-run resumes:
complete shards are kept, partial ones redone. Scans that cannot be read are recorded in
manifest/ with a reason code; the rest proceed.

examples:
  tte-scale shard --scans scans.parquet --labels labels/ --out shards/ --config configs/shard/demo.yaml
  tte-scale shard --scans scans.parquet --labels labels/ --out shards/ --format zarr --workers 8
  tte-scale shard --relabel --labels new_labels/ --out shards/
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tte_scale.commands import add_config_arguments

    parser.add_argument("--scans", metavar="FILE", help="scans table (Parquet: subject_id, scan_id, image_path, modality)")
    parser.add_argument("--labels", metavar="DIR", required=True, help="labels folder written by `tte-scale labels`")
    parser.add_argument("--out", metavar="DIR", required=True, help="shards folder to write (or resume, or relabel)")
    parser.add_argument(
        "--format", choices=("wds", "zarr", "both"), default=None, help="outputs to write (default: the config's, 'both')"
    )
    parser.add_argument(
        "--workers", type=int, default=None, metavar="N",
        help="CPUs of the embedded local Ray (default: all cores); 0 runs in this process without Ray",
    )
    parser.add_argument("--ray-address", metavar="ADDR", default=None, help="connect to this Ray cluster instead (e.g. auto, ray://host:10001)")
    parser.add_argument("--relabel", action="store_true", help="attach the labels of --labels to the existing volumes in --out (no re-read)")
    parser.add_argument("--overwrite", action="store_true", help="delete an existing build in --out first (default: resume it)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from sharding.config import ShardConfig
    from tte_scale.config import load_config
    from tte_scale.errors import InputError

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    progress = not args.no_progress
    if args.relabel:
        from sharding.relabel import relabel

        summary = relabel(args.out, args.labels, progress=progress)
        print(f"relabelled {summary['labelled']} rows in {args.out}")
        return 0
    if not args.scans:
        raise InputError("--scans FILE is required (except with --relabel)")
    overrides = list(args.overrides) + ([f"format={args.format}"] if args.format else [])
    cfg = load_config(ShardConfig, args.config, overrides)
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    if workers < 0:
        raise InputError(f"--workers {workers}: must be >= 0")
    from sharding.job import build

    s = build(args.scans, args.labels, args.out, cfg, workers=workers, ray_address=args.ray_address,
              overwrite=args.overwrite, progress=progress)
    ratio = f"{s['compression_ratio']:.2f}x" if s["compression_ratio"] else "n/a"
    print(
        f"shard: in {s['scans_in_table']} scans ({s['not_labelled']} not labelled, skipped), "
        f"out {s['ok']}, failed {s['failed']}, compression {ratio}, "
        f"{s['processed']} read in {s['seconds']:.1f} s ({s['volumes_per_s'] or 0:.2f} vol/s), "
        f"{s['skipped_shards']} complete shard(s) kept -> {args.out}"
    )
    if s["failed"]:
        print(f"shard: {s['failed']} failed scan(s) with reasons in {args.out}/manifest/build.json", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    from tte_scale.cli import EXIT_USER_ERROR
    from tte_scale.config import ConfigError
    from tte_scale.errors import TteScaleError

    parser = argparse.ArgumentParser(prog="python -m sharding", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ConfigError, TteScaleError) as exc:
        print(f"sharding: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
