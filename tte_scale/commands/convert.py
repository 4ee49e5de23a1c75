"""`tte-scale convert`: Bring a real cohort in: older MEDS, an OMOP ontology, a released cohort (INSPECT)."""

from __future__ import annotations

import argparse

HELP = "Bring a real cohort in: older MEDS -> current MEDS, OMOP parent codes, INSPECT's release -> scans + labels"
DESCRIPTION = """\
Convert what a real cohort ships into what `tte-scale labels` and `shard` read (docs/formats.md,
"Converter inputs"). Each converter writes a new folder whole (under a temporary name, renamed at
the end), and replaces an old one only with --overwrite and only if it wrote it.

  # the INSPECT download -> scans.parquet, the release's 8 benchmark labels, subject splits
  tte-scale convert inspect --release inspect/ --out cohort/ --allow-missing-images --allow-missing-times
  # its EHR (an older MEDS generation) -> current MEDS, with the release's splits
  tte-scale convert meds --input meds_omop_inspect/ --out meds/ --splits cohort/subject_splits.parquet
  # parent codes from an Athena download (CONCEPT.csv, CONCEPT_ANCESTOR.csv, CONCEPT_RELATIONSHIP.csv)
  tte-scale convert ontology --meds meds/ --athena athena/
  # then: labels with the release's benchmark labels (not recomputed from the scrubbed codes)
  tte-scale labels --meds meds/ --scans cohort/scans.parquet --bench-labels cohort/bench_labels.parquet --out labels/

See README "From the INSPECT download to the first pretraining run".
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="converter", metavar="<converter>", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser(
        "meds",
        help="any older MEDS generation (0.1, 0.2, 0.3) -> current MEDS (0.4)",
        formatter_class=fmt,
        description="""\
Convert a MEDS folder of any generation into current MEDS (0.4: flat rows with subject_id),
one input file in memory at a time, each output checked with the `meds` package's schemas:
  0.1  nested rows {patient_id, static_measurements, events: [{time, measurements: [...]}]}
  0.2  nested rows {patient_id, events: [{time, code, text_value, numeric_value, ...}]}
  0.3  flat rows with patient_id (0.3.0-0.3.2)
  0.4  flat rows with subject_id (re-typed, re-sorted and checked)
Writes data/ (same file layout), metadata/codes.parquet (every code), metadata/dataset.json,
metadata/subject_splits.parquet (from --splits, or the input's subject/patient splits) and
metadata/convert.json. MEDS 0.1/0.2's birth/death codes become MEDS_BIRTH/MEDS_DEATH.

Example:
  tte-scale convert meds --input meds_omop_inspect/ --out meds/ --splits cohort/subject_splits.parquet
""",
    )
    p.add_argument("--input", required=True, metavar="DIR", help="MEDS folder to convert (data/**/*.parquet)")
    p.add_argument("--out", required=True, metavar="DIR", help="current-MEDS folder to write")
    p.add_argument(
        "--splits",
        metavar="FILE",
        help="subject splits (subject_id or patient_id, split in train/tuning/held_out), e.g. convert inspect's "
        "subject_splits.parquet (default: the input's metadata/subject_splits.parquet or patient_splits.parquet)",
    )
    p.add_argument("--name", help="dataset_name in metadata/dataset.json (default: the input's, or its folder name)")
    p.add_argument(
        "--keep-legacy-codes",
        action="store_true",
        help="keep MEDS 0.1/0.2's SNOMED/184099003 and SNOMED/419620001 instead of MEDS_BIRTH / MEDS_DEATH",
    )
    _common(p)

    p = sub.add_parser(
        "ontology",
        help="parent codes from an OMOP vocabulary (Athena) download into codes.parquet",
        formatter_class=fmt,
        description="""\
Fill metadata/codes.parquet parent_codes from an Athena download (tab-separated CONCEPT.csv and
CONCEPT_ANCESTOR.csv and/or CONCEPT_RELATIONSHIP.csv): a code VOCAB/CODE is the concept with that
vocabulary_id and concept_code; its parents are its direct ancestors (separation 1; `Is a` without
CONCEPT_ANCESTOR.csv) and, for a non-standard concept, the standard concepts it `Maps to`. The
ancestors get rows too. Codes that cannot be mapped are listed in ontology_unmapped.parquet with a
reason, and counted in ontology.json.

Without --out the MEDS folder's metadata/codes.parquet is rewritten in place (only in a folder
`tte-scale convert meds` wrote); with --out the results go to a new folder.

Example:
  tte-scale convert ontology --meds meds/ --athena athena_vocabulary/
""",
    )
    p.add_argument("--meds", required=True, metavar="DIR", help="MEDS folder whose codes get parents")
    p.add_argument("--athena", required=True, metavar="DIR", help="Athena download folder (CONCEPT.csv, ...)")
    p.add_argument("--out", metavar="DIR", help="write codes.parquet and the reports to this new folder instead")
    _common(p)

    p = sub.add_parser(
        "inspect",
        help="INSPECT's release (or another cohort with --map) -> scans.parquet, benchmark labels, splits",
        formatter_class=fmt,
        description="""\
Read a released cohort's study, split and label tables and its image folder, as the --map YAML
describes them (default configs/convert/inspect.yaml: the INSPECT release of Stanford AIMI), and
write to --out: scans.parquet, bench_labels.parquet (the release's benchmark labels, values
TRUE / FALSE / Censored, for `tte-scale labels --bench-labels`), subject_splits.parquet (train /
valid / test -> train / tuning / held_out, for `convert meds --splits`), excluded.parquet and
summary.json.

Why the labels come from the release: INSPECT's public EHR has the exact death and readmission
codes scrubbed, so benchmark labels recomputed from codes come out all negative, without error.

Examples:
  tte-scale convert inspect --release inspect/ --out cohort/
  tte-scale convert inspect --release inspect/ --images /data/CTPA --out cohort/ --allow-missing-images
  tte-scale convert inspect --release mycohort/ --map mycohort.yaml --bench-tasks mytasks.yaml --out cohort/
""",
    )
    p.add_argument("--release", required=True, metavar="DIR", help="the downloaded release folder")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write")
    p.add_argument("--map", default=None, metavar="YAML", help="column map (default configs/convert/inspect.yaml)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one map value, e.g. --set labels.file=labels_20250303.csv (repeatable)",
    )
    p.add_argument("--images", metavar="DIR", help="image folder (default: the map's images.folder in the release)")
    p.add_argument(
        "--bench-tasks",
        default="configs/tasks/inspect.yaml",
        metavar="YAML",
        help="benchmark task file whose names the map's tasks use (default configs/tasks/inspect.yaml)",
    )
    p.add_argument(
        "--allow-missing-images",
        action="store_true",
        help="exclude studies without an image (listed in excluded.parquet) instead of stopping",
    )
    p.add_argument(
        "--allow-missing-times",
        action="store_true",
        help="exclude studies with an empty procedure time (listed in excluded.parquet) instead of stopping",
    )
    _common(p)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true", help="replace an output this converter wrote before")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    return {"meds": _meds, "ontology": _ontology, "inspect": _inspect}[args.converter](args)


def _meds(args) -> int:
    from tte_scale.convert import convert_meds

    s = convert_meds(
        args.input,
        args.out,
        splits=args.splits,
        name=args.name,
        keep_legacy_codes=args.keep_legacy_codes,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(
        f"converted {s['files']} files of {s['generation_description']}: {s['rows']:,} rows, "
        f"{s['subjects']:,} subjects, {s['codes']:,} codes"
    )
    if s["metadata_codes_with_several_rows_merged"]:
        print(f"  code metadata: {s['metadata_codes_with_several_rows_merged']:,} codes had several rows (merged)")
    for k, v in s["legacy_codes_renamed"].items():
        print(f"  renamed {k}: {v:,} rows")
    if s["splits"]:
        sp = s["splits"]
        print(
            f"  splits from {sp['source']}: {sp['subjects']}; subjects without a split: "
            f"{sp['data_subjects_without_split']:,} (labels excludes their scans)"
        )
    else:
        print("  no split source: `tte-scale labels` needs metadata/subject_splits.parquet (pass --splits)")
    print(f"current MEDS written to {args.out}")
    return 0


def _ontology(args) -> int:
    from tte_scale.convert import convert_ontology

    r = convert_ontology(args.meds, args.athena, out=args.out, overwrite=args.overwrite, progress=not args.no_progress)
    print(
        f"ontology from {', '.join(r['files'])}: {r['mapped']:,} of {r['dataset_codes']:,} codes mapped, "
        f"{r['ancestor_codes_added']:,} ancestor codes added, {r['parent_edges']:,} parent links"
    )
    if r["unmapped"]:
        print(
            f"  not mapped: {r['unmapped']:,} codes {r['unmapped_by_reason']}; by vocabulary {r['unmapped_by_vocabulary']}"
        )
    where = args.out or f"{args.meds}/metadata"
    print(f"codes.parquet, ontology_unmapped.parquet and ontology.json written to {where}")
    return 0


def _inspect(args) -> int:
    from tte_scale.convert import convert_cohort, load_map
    from tte_scale.convert.mapping import DEFAULT_MAP
    from tte_scale.ehr.config import load_task_set

    cmap = load_map(args.map or DEFAULT_MAP, args.overrides)
    tasks = load_task_set(args.bench_tasks)
    s = convert_cohort(
        args.release,
        args.out,
        cmap=cmap,
        task_set=tasks,
        images=args.images,
        allow_missing_images=args.allow_missing_images,
        allow_missing_times=args.allow_missing_times,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(
        f"{s['cohort']}: {s['scans']:,} of {s['studies']:,} studies, {s['subjects']:,} subjects; "
        f"scans per split {s['scans_per_split']}"
    )
    if s["excluded"]:
        print(f"  excluded (excluded.parquet): {s['excluded']}")
    for t, c in s["labels"].items():
        print(f"  {t}: {c['true']:,} true, {c['false']:,} false, {c['censored']:,} censored")
    print(
        f"written to {args.out}; next:\n  tte-scale labels --meds MEDS --scans {args.out}/scans.parquet "
        f"--bench-labels {args.out}/bench_labels.parquet --out LABELS"
    )
    return 0
