"""`tte-scale shard`: Read DICOM/NIfTI scans and write WebDataset and Zarr shards with co-located labels."""

from __future__ import annotations

import argparse

from tte_scale.errors import NotBuiltError

HELP = "Read DICOM/NIfTI scans and write WebDataset and Zarr shards with co-located labels"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    raise NotBuiltError("the Ray sharding job is not implemented in this version")
