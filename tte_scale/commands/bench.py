"""`tte-scale bench`: Run the throughput benchmarks of each stage with their baselines."""

from __future__ import annotations

import argparse

from tte_scale.errors import NotBuiltError

HELP = "Run the throughput benchmarks of each stage with their baselines"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    raise NotBuiltError("the benchmark suite is not implemented in this version")
