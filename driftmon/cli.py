"""The ``driftmon`` command line (DESIGN.md §8).

Each subcommand is a small function that parses nothing itself: argparse does
the parsing, the function calls into the module that owns the work and turns
its result into an exit status.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from driftmon import __version__
from driftmon.config import ConfigError, describe, load_config


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="driftmon",
        description="Streaming data-drift monitor with Prometheus metrics.",
    )
    parser.add_argument("--version", action="version", version=f"driftmon {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = commands.add_parser(
        "check",
        help="validate a config file",
        description="Validate a config file: exit 0, or 1 with one line per error naming its path.",
    )
    check.add_argument("-c", "--config", required=True, metavar="FILE", help="the YAML config")
    check.set_defaults(handler=_check)
    return parser


def _check(args: argparse.Namespace) -> int:
    """``driftmon check -c FILE``: ``FILE: ok (summary)`` on stdout, or errors on stderr."""
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for error in exc.errors:
            print(f"{args.config}: {error}", file=sys.stderr)
        return 1
    print(f"{args.config}: ok ({describe(config)})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``driftmon`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    return int(handler(args))
