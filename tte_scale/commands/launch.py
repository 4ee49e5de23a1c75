"""`tte-scale launch`: Launch training or sharding on SLURM (submitit), locally, or Ray on SLURM."""

from __future__ import annotations

import argparse

from tte_scale.errors import NotBuiltError

HELP = "Launch training or sharding on SLURM (submitit), locally, or Ray on SLURM"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    raise NotBuiltError("the cluster launchers is not implemented in this version")
