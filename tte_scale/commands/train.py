"""`tte-scale train`: Pretrain a 3D ViT with the TTE survival loss under DeepSpeed ZeRO."""

from __future__ import annotations

import argparse

from tte_scale.errors import NotBuiltError

HELP = "Pretrain a 3D ViT with the TTE survival loss under DeepSpeed ZeRO"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    raise NotBuiltError("the DeepSpeed trainer is not implemented in this version")
