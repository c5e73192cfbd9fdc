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


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="driftmon",
        description="Streaming data-drift monitor with Prometheus metrics.",
    )
    parser.add_argument("--version", action="version", version=f"driftmon {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``driftmon`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    return int(handler(args))
