"""`tte-scale labels`: Build time-to-event labels (task vocabulary, bins, benchmark tasks) from MEDS."""

from __future__ import annotations

import argparse

from tte_scale.errors import NotBuiltError

HELP = "Build time-to-event labels (task vocabulary, bins, benchmark tasks) from MEDS"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    raise NotBuiltError("MEDS -> time-to-event labels is not implemented in this version")
