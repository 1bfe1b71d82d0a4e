"""The ``triact`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import trio

from ._version import __version__


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="triact",
        description="triact: an actor-model session runtime on Trio.",
    )
    parser.add_argument("--version", action="version", version=f"triact {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "demo",
        help="run a short demonstration of the actor runtime",
        description="Spawn a few actors and show ordering, errors, restarts and reaping.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``triact`` console script."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import demo

        trio.run(demo)
        return 0
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
