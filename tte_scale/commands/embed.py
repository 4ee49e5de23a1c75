"""`tte-scale embed`: an exported encoder over a shards folder -> one vector per scan in Parquet."""

from __future__ import annotations

import argparse

from tte_scale.commands import add_frozen_encoder_arguments, from_args

HELP = "Embed every scan of a shards folder with an exported encoder (Parquet, N ranks, resumable)"
DESCRIPTION = """\
Run a frozen, exported encoder over every `ok` scan of a shards folder and write one row per scan
to OUT/embeddings.parquet: scan_id, subject_id, split, vector (fixed-size list<float32>). The
file's Parquet metadata (key b"tte_scale.embed") and OUT/embed.json hold the record of what the
vectors depend on: the encoder (architecture, sha256 of its weights), the shards build id, the
format read, the HU window, the compute dtype, batch and part size; plus counts and the scans
that could not be read.

  tte-scale embed --encoder runs/x/encoder --shards runs/x/shards --out runs/x/embeddings
  tte-scale launch local --nproc 4 -- embed --encoder runs/x/encoder --shards s3://bucket/shards \\
      --out embeddings --format wds
  torchrun --standalone --nproc_per_node 4 -m tte_scale.cli embed ...   (or srun, one task per rank)

Volumes are read from WebDataset or Zarr (--format; auto = the Zarr copy when the build wrote one)
through the training loader's readers, with its integrity checks; a scan that fails them is left
out and listed, and more than --max-bad-fraction of a split stops the run. Volumes are normalized
with the HU window stored in the export's config.json (the one its training used).

Ranks (torchrun, `tte-scale launch local --nproc N -- embed ...`, SLURM tasks): the scans are cut
into parts of --part-size scans; rank r computes parts r, r+N, ...; each part is written to
OUT/parts/ as soon as it is done. Rank 0 merges them, checking that every scan is present exactly
once. The output does not depend on the number of ranks or on the format read.

Resuming: run the same command again (any number of ranks). Parts already written are checked (same
encoder, shards and settings, the same scans, finite values) and kept; the rest are computed. OUT
must be absent, empty or an earlier embed output; one computed for another encoder, shards or
setting is refused unless --overwrite (which replaces only a folder written by `tte-scale embed`).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--encoder",
        required=True,
        metavar="PATH",
        help="exported encoder: folder (or its model.safetensors) written by `tte-scale train` (runs/x/encoder)",
    )
    parser.add_argument(
        "--shards", required=True, metavar="DIR", help="shards folder written by `tte-scale shard` (path or URL)"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (embeddings.parquet, embed.json)")
    parser.add_argument(
        "--format",
        default="auto",
        choices=("auto", "wds", "zarr"),
        help="which copy to read (default auto: Zarr when built, else WebDataset)",
    )
    parser.add_argument(
        "--splits",
        default=None,
        metavar="S,S,...",
        help="splits to embed, in this order (default: every split with `ok` scans)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="volumes per forward pass (default 8)")
    parser.add_argument(
        "--part-size", type=int, default=256, help="scans per part file: the unit of work and of resuming (default 256)"
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device (default cpu; cuda: each rank uses cuda:LOCAL_RANK)"
    )
    add_frozen_encoder_arguments(parser, excluded_where="embed.json")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16"),
        help="compute dtype (bfloat16: autocast); vectors are stored as float32 (default float32)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier `tte-scale embed` output computed for another encoder, shards or setting",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads per rank (default: torch's, i.e. OMP_NUM_THREADS; torchrun sets 1)",
    )
    parser.add_argument(
        "--progress-every", type=float, default=10.0, metavar="S", help="seconds between progress lines (default 10)"
    )


def run(args: argparse.Namespace) -> int:
    from tte_scale.embed import EmbedJob, run_embed

    splits = None
    if args.splits is not None:
        splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    job = from_args(
        EmbedJob,
        args,
        splits=splits,
        hu_window=tuple(args.hu_window) if args.hu_window else None,
        progress_every_s=args.progress_every,
    )
    outcome = run_embed(job)
    if outcome is not None:
        print(outcome.text)
    return 0
