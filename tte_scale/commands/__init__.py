"""One module per ``tte-scale`` subcommand (see ``tte_scale/cli.py`` for the interface)."""

from __future__ import annotations

import argparse
import dataclasses


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


def add_frozen_encoder_arguments(parser: argparse.ArgumentParser, *, excluded_where: str) -> None:
    """``--hu-window`` / ``--max-bad-fraction``: how `embed` and `eval` read volumes for a frozen encoder
    (one definition, so the two commands cannot drift apart); ``excluded_where`` names where left-out
    scans are listed."""
    parser.add_argument(
        "--hu-window",
        type=float,
        nargs=2,
        default=None,
        metavar=("MIN", "MAX"),
        help="HU window mapped to [0, 1] for exports that do not store theirs (default -1000 1000); "
        "an export that stores a different one is an error",
    )
    parser.add_argument(
        "--max-bad-fraction",
        type=float,
        default=None,
        metavar="F",
        help="stop when more than this fraction of a split's scans are missing or corrupt (default: the "
        f"training loader's, 0.01); below it they are left out and listed in {excluded_where}",
    )


def from_args(cls, args: argparse.Namespace, **given):
    """``cls(...)`` (a dataclass) from the parsed options that share a field's name (those not left
    at None), plus ``given``
    for the fields whose option is named or shaped otherwise: one place that maps a command's
    options to its library call, instead of a ``field=args.field`` line per option."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(given) - names
    if unknown:  # a typo here would silently fall back to a default
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    # an option left at argparse's None was not given: the field keeps its own default
    taken = {n: v for n in names - set(given) if (v := getattr(args, n, None)) is not None}
    return cls(**taken, **given)
