"""Command line of the sharding job: `tte-scale shard ...` and `python -m sharding ...`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DESCRIPTION = """\
Read the scans of a scans table (NIfTI files or DICOM series folders), turn each into a
canonical int16 volume (orientation SAL, spacing/shape of the config, HU clipped) and write
WebDataset tar shards and/or a Zarr v3 store with the labels of a labels folder, plus a
manifest (docs/formats.md "Shards folder"). Runs on an embedded local Ray with --workers CPUs,
on a Ray cluster with --ray-address, or in this process with --workers 0; on Ray, scans are
mapped by Ray tasks (default) or by a Ray Data pipeline (--set executor=data), with the same
bytes out. Ray's start-up costs several seconds: for a few dozen small scans, --workers 0 is
faster (benchmarks/results/shard.md). A re-run resumes: complete shards are kept once their
size and sha256 check out, damaged and partial ones are redone, and so are failed scans whose
input changed since. Scans that cannot be read or are not a plausible CT (NaN voxels, a box a few
mm thin, mostly padding, not Hounsfield units) are recorded in manifest/ with a reason code; the
rest proceed. --overwrite deletes only a build this command marked as its own.

Object storage (README "Object storage"): image_path values may be fsspec URLs (s3://bucket/ct/s1.nii.gz,
or a DICOM series prefix), each read as whole objects; a missing object is quarantined
(file_not_found), a missing bucket or missing credentials stop the run before any work. --out may
be a URL: the build is made in --staging DIR and then uploaded; a re-run uploads only files the URL
does not hold with the same size and checksum, and deletes no object it did not upload.

examples:
  tte-scale shard --scans scans.parquet --labels labels/ --out shards/ --config configs/shard/demo.yaml
  tte-scale shard --scans scans.parquet --labels labels/ --out shards/ --format zarr --workers 8
  tte-scale shard --relabel --labels new_labels/ --out shards/
  AWS_ENDPOINT_URL=https://s3.example.org tte-scale shard --scans scans.parquet --labels labels/ \
      --out s3://bucket/shards --staging /scratch/shards --image-root s3://bucket/cts
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tte_scale.commands import add_config_arguments

    parser.add_argument(
        "--scans", metavar="FILE", help="scans table (Parquet: subject_id, scan_id, image_path, modality)"
    )
    parser.add_argument("--labels", metavar="DIR", required=True, help="labels folder written by `tte-scale labels`")
    parser.add_argument(
        "--out",
        metavar="DIR|URL",
        required=True,
        help="shards folder to write (or resume, or relabel), or an fsspec URL (s3://bucket/prefix: built in "
        "--staging, then uploaded)",
    )
    parser.add_argument(
        "--staging",
        metavar="DIR",
        default=None,
        help="with --out URL: the local folder the build is made in before it is uploaded (room for the whole "
        "build; kept afterwards, so a re-run resumes and uploads only what the URL lacks)",
    )
    parser.add_argument(
        "--format",
        choices=("wds", "zarr", "both"),
        default=None,
        help="outputs to write (default: the config's, 'both')",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="CPUs of the embedded local Ray (default: all cores); 0 runs in this process without Ray",
    )
    parser.add_argument(
        "--ray-address",
        metavar="ADDR",
        default=None,
        help="connect to this Ray cluster instead (e.g. auto, ray://host:10001)",
    )
    parser.add_argument(
        "--relabel",
        action="store_true",
        help="attach the labels of --labels to the existing volumes in --out (no re-read)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="delete an earlier build in --out first (only one marked as written by `tte-scale shard`; other files "
        "in --out stay); default: resume it",
    )
    parser.add_argument(
        "--image-root",
        action="append",
        metavar="DIR|URL",
        default=None,
        help="refuse, before any work, images that resolve (symlinks followed) outside DIR, or image URLs outside "
        "the prefix URL; repeat for several (default: images may lie anywhere, and the run says where they are)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from tte_scale.config import load_config
    from tte_scale.errors import InputError
    from tte_scale.sharding.config import ShardConfig

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    progress = not args.no_progress
    out = _local_out(args)
    overrides = list(args.overrides) + ([f"format={args.format}"] if args.format else [])
    cfg = load_config(ShardConfig, args.config, overrides)
    remote = None
    if out != args.out:
        from tte_scale.sharding.publish import RemoteOut

        remote = RemoteOut(args.out, cfg.storage, overwrite=args.overwrite)
    if args.relabel:
        from tte_scale.sharding.relabel import relabel

        if remote is not None:
            remote.check(_staged_plan(out))
        summary = relabel(out, args.labels, progress=progress)
        print(f"relabelled {summary['labelled']} rows in {out}")
        if remote is not None:
            _print_published(remote.publish(Path(out)), out)
        return 0
    if not args.scans:
        raise InputError("--scans FILE is required (except with --relabel)")
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    if workers < 0:
        raise InputError(f"--workers {workers}: must be >= 0")
    from tte_scale.sharding.job import build

    s = build(
        args.scans,
        args.labels,
        out,
        cfg,
        workers=workers,
        ray_address=args.ray_address,
        overwrite=args.overwrite,
        progress=progress,
        image_roots=args.image_root,
        before_write=remote.check if remote is not None else None,
    )
    from tte_scale.sharding.inputs import describe_locations

    print(f"shard: {describe_locations(s['inputs'])}", file=sys.stderr)
    if s["resumed"]:
        print(
            f"shard: resumed: {s['verified_shards']} kept shard(s) verified by sha256, {s['damaged_shards']} damaged "
            f"and {s['changed_inputs']} changed failed input(s) redone",
            file=sys.stderr,
        )
    ratio = f"{s['compression_ratio']:.2f}x" if s["compression_ratio"] else "n/a"
    print(
        f"shard: in {s['scans_in_table']} scans ({s['not_labelled']} not labelled, skipped), "
        f"out {s['ok']}, failed {s['failed']}, compression {ratio}, "
        f"{s['processed']} read in {s['seconds']:.1f} s ({s['volumes_per_s'] or 0:.2f} vol/s), "
        f"{s['skipped_shards']} complete shard(s) kept -> {out}"
    )
    for line in _quarantine_lines(out):
        print(f"shard: {line}", file=sys.stderr)
    if remote is not None:
        _print_published(remote.publish(Path(out)), out)
    return 0


def _local_out(args: argparse.Namespace) -> str:
    """The folder the build is made in: ``--out``, or ``--staging`` when ``--out`` is a URL."""
    from tte_scale.errors import InputError
    from tte_scale.remote import is_url

    if args.staging is not None and is_url(args.staging):
        raise InputError(f"--staging {args.staging}: must be a local folder")
    if not is_url(args.out):
        if args.staging is not None:
            raise InputError(f"--staging {args.staging}: only with --out URL (a local --out is built in place)")
        return args.out
    if args.staging is None:
        raise InputError(
            f"--out {args.out}: a URL; give --staging DIR, the local folder the build is made in before it is "
            "uploaded (it needs room for the whole build and is kept for re-runs)"
        )
    return args.staging


def _staged_plan(staging: str) -> dict:
    import json

    from tte_scale.errors import InputError

    plan = Path(staging) / "_state" / "plan.json"
    if not plan.is_file():
        raise InputError(f"--staging {staging}: holds no build (no {plan.name}); relabel needs the staged build")
    return json.loads(plan.read_text())


def _print_published(p: dict, staging: str) -> None:
    print(
        f"shard: published to {p['url']}: {p['uploaded']} file(s) uploaded ({p['uploaded_bytes'] / 1e6:.1f} MB), "
        f"{p['kept']} already there (size and checksum checked), {p['deleted']} obsolete object(s) of this command "
        f"deleted; staging folder {staging} kept for re-runs",
        file=sys.stderr,
    )


def _quarantine_lines(out) -> list[str]:
    """Failed scans by reason code and the notes on usable ones, from the build's build.json."""
    import json
    from collections import Counter
    from pathlib import Path

    build_file = Path(out) / "manifest" / "build.json"
    build = json.loads(build_file.read_text())
    lines = []
    if build["failures"]:
        by_reason = Counter(f["reason"] for f in build["failures"])
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(by_reason.items()))
        lines.append(f"{len(build['failures'])} failed scan(s) with reasons in {build_file}: {reasons}")
    for kind, entries in sorted(build.get("notes", {}).items()):
        if entries:
            lines.append(f"{len(entries)} scan(s) with notes {kind!r} in {build_file}")
    return lines


def main(argv: list[str] | None = None) -> int:
    from tte_scale.cli import EXIT_USER_ERROR
    from tte_scale.config import ConfigError
    from tte_scale.errors import TteScaleError

    parser = argparse.ArgumentParser(
        prog="python -m sharding", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ConfigError, TteScaleError) as exc:
        print(f"sharding: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
