"""`tte-scale shard`: read DICOM/NIfTI scans, write WebDataset and Zarr shards with labels.

The job itself lives in the top-level ``sharding`` package (it runs on Ray); this module only
plugs it into the ``tte-scale`` command.
"""

from __future__ import annotations

import argparse

HELP = "Read DICOM/NIfTI scans and write WebDataset and Zarr shards with co-located labels"


def _cli():
    from tte_scale.sharding import cli

    return cli


DESCRIPTION = _cli().DESCRIPTION


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _cli().add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return _cli().run(args)
