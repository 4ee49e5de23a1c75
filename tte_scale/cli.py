"""The ``tte-scale`` command: parse, build a config, make one call into the library.

Each subcommand lives in ``tte_scale/commands/<name>.py`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Command modules import heavy libraries
(torch, ray, deepspeed) inside ``run`` so that ``tte-scale --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from tte_scale import __version__
from tte_scale.config import ConfigError
from tte_scale.errors import TteScaleError

# Order is the pipeline's order; `demo` runs them all.
COMMANDS = ("synth", "convert", "labels", "shard", "train", "embed", "eval", "bench", "launch", "demo")

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tte-scale",
        description="Time-to-event pretraining of 3D medical imaging models at scale.",
        epilog="Run `tte-scale <command> --help` for the options of each stage.",
    )
    parser.add_argument("--version", action="version", version=f"tte-scale {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"tte_scale.commands.{name}")
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def _drop_local_rank(argv: list[str]) -> list[str]:
    """The `deepspeed` launcher inserts `--local_rank=N` before the subcommand; the rank is read
    from the LOCAL_RANK environment variable instead, so the flag is dropped here."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--local_rank", "--local-rank"):
            skip = True
        elif not a.startswith(("--local_rank=", "--local-rank=")):
            out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_drop_local_rank(sys.argv[1:] if argv is None else list(argv)))
    try:
        return int(args._module.run(args) or 0)
    except (ConfigError, TteScaleError) as exc:
        print(f"tte-scale {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"tte-scale {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
