"""One module per ``tte-scale`` subcommand (see ``tte_scale/cli.py`` for the interface)."""

from __future__ import annotations

import argparse


def add_config_arguments(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    """The shared ``--config FILE`` / ``--set KEY=VALUE`` pair of options."""
    parser.add_argument(
        "--config",
        required=required,
        metavar="FILE",
        help="YAML config describing the whole run (see configs/)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, dotted key, YAML value (repeatable), e.g. --set model.depth=12",
    )
