"""`tte-scale demo`: Run the whole pipeline on the embedded synthetic cohort."""

from __future__ import annotations

import argparse

from tte_scale.errors import NotBuiltError

HELP = "Run the whole pipeline on the embedded synthetic cohort"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    raise NotBuiltError("the end-to-end demo is not implemented in this version")
