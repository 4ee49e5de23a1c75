"""`tte-scale labels`: Build time-to-event labels (task vocabulary, bins, benchmark tasks) from MEDS."""

from __future__ import annotations

import argparse

from tte_scale.commands import add_config_arguments

HELP = "Build time-to-event labels (task vocabulary, bins, benchmark tasks) from MEDS"
DESCRIPTION = """\
Build the labels folder (docs/formats.md) from a MEDS dataset and a scans table:
vocab.parquet (K tasks chosen on the train split only), bins.json, rows.parquet,
excluded.parquet, tte.zarr (time float32 [N, K], event bool [N, K]), bench.parquet, summary.json.

Settings come from defaults < --config YAML (keys of LabelsConfig, at top level or under
`labels:`) < --set KEY=VALUE < the explicit options below.
Scans are excluded (excluded.parquet, counted in the summary) when their prediction time is at or
after the end of record or before birth, or when their subject has no timed event, an event after
--max-event-time, no split, or (with --unknown-splits exclude) a split other than train/tuning/held_out.

Examples:
  tte-scale labels --meds cohort/ --scans cohort/scans.parquet --out labels/ --tasks 8192 --bins 8
  # benchmark labels from a release's label file (INSPECT: its EHR has the outcome codes scrubbed)
  tte-scale labels --meds meds/ --scans cohort/scans.parquet --bench-labels cohort/bench_labels.parquet --out labels/
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--meds", required=True, metavar="DIR", help="MEDS dataset folder (data/, metadata/)")
    parser.add_argument(
        "--scans", required=True, metavar="FILE", help="scans.parquet (subject_id, scan_id, prediction_time, ...)"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="labels folder to write")
    parser.add_argument(
        "--tasks", type=int, dest="num_tasks", metavar="K", help="number of pretraining tasks (default 8192)"
    )
    parser.add_argument("--bins", type=int, dest="num_bins", metavar="B", help="number of time bins (default 8)")
    parser.add_argument(
        "--bench-tasks",
        dest="bench_tasks",
        metavar="YAML",
        help="benchmark task file (default configs/tasks/inspect.yaml)",
    )
    parser.add_argument(
        "--bench-labels",
        dest="bench_labels",
        metavar="FILE",
        help="precomputed benchmark labels (convert inspect's bench_labels.parquet) used instead of the codes "
        "for the tasks they hold",
    )
    parser.add_argument(
        "--min-count",
        type=int,
        dest="min_count",
        metavar="N",
        help="minimum train scans with the code after them (default 1)",
    )
    parser.add_argument(
        "--ranking", choices=["frequency", "entropy"], help="task ranking (default entropy, as the paper)"
    )
    parser.add_argument(
        "--ontology",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="count codes also for their ancestors from metadata/codes.parquet parent_codes (default on: a missing "
        "file or parent_codes column is then an error)",
    )
    parser.add_argument(
        "--unknown-splits",
        choices=["error", "exclude"],
        dest="unknown_splits",
        help="subjects whose split is not train/tuning/held_out: an error (default) or exclude their scans "
        "(reason unknown_split, counted)",
    )
    parser.add_argument(
        "--birth-code",
        dest="birth_code",
        metavar="CODE",
        help='birth event code (default MEDS_BIRTH); scans before birth are excluded; "" turns the check off',
    )
    parser.add_argument(
        "--max-event-time",
        dest="max_event_time",
        metavar="DATE",
        help="latest plausible event date (default: today); subjects with a later event have their scans "
        "excluded (reason event_after_max_time)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing labels folder (atomically, at the end); only a folder written by "
        "`tte-scale labels` that holds no input is ever removed",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from tte_scale.config import apply_overrides, from_dict, read_yaml
    from tte_scale.ehr.build import build_labels
    from tte_scale.ehr.config import LabelsConfig, load_task_set, resolve_repo_path
    from tte_scale.ehr.summary import format_summary

    data = read_yaml(args.config) if args.config else {}
    data = data.get("labels", data) if isinstance(data.get("labels"), dict) else data
    data = apply_overrides(data, args.overrides)
    options = ("num_tasks", "num_bins", "bench_tasks", "bench_labels", "min_count", "ranking", "ontology")
    for key in (*options, "unknown_splits", "birth_code", "max_event_time"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    cfg = from_dict(LabelsConfig, data)
    tasks = load_task_set(cfg.bench_tasks)
    summary = build_labels(
        args.meds,
        args.scans,
        args.out,
        cfg,
        tasks,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        inputs=(resolve_repo_path(cfg.bench_tasks), args.config),
    )
    print(format_summary(summary))
    if "bench_precomputed" in summary:
        p = summary["bench_precomputed"]
        print(f"bench labels of {', '.join(p['tasks'])} from {p['file']} ({p['rows_used']:,} rows used)")
    print(f"labels written to {args.out}")
    return 0
