"""`tte-scale synth`: Generate the synthetic INSPECT-like cohort (MEDS + CT volumes + scans table)."""

from __future__ import annotations

import argparse

from tte_scale.errors import NotBuiltError

HELP = "Generate the synthetic INSPECT-like cohort (MEDS + CT volumes + scans table)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    raise NotBuiltError("the synthetic cohort generator is not implemented in this version")
