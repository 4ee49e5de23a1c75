"""`tte-scale eval`: Evaluate a pretrained encoder: linear probes, AUROC, C-index, report."""

from __future__ import annotations

import argparse

from tte_scale.errors import NotBuiltError

HELP = "Evaluate a pretrained encoder: linear probes, AUROC, C-index, report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    raise NotBuiltError("evaluation and the report is not implemented in this version")
