"""Argument types and the ``triact stress`` parser, kept apart from what they run so
that building the ``triact`` command imports neither the server nor the testing
package (``triact serve`` starts faster)."""

from __future__ import annotations

import argparse
import math
import os


def _number(text: str, kind: type[int] | type[float], bound: str) -> float:
    """``text`` as a number, or an error that says what the option takes."""
    try:
        value = kind(text)
    except ValueError:
        what = ("an integer" if kind is int else "a number") + (f" {bound}" if bound else "")
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float, ">= 0")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(_number(text, int, ">= 1"))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float, "> 0")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def integer(text: str) -> int:
    return int(_number(text, int, ""))


def absolute_path(text: str) -> str:
    if not os.path.isabs(text):
        raise argparse.ArgumentTypeError(f"must be an absolute path, got {text!r}")
    return text


def _rate(text: str) -> float:
    value = _number(text, float, "within [0, 0.5]")
    if not 0.0 <= value <= 0.5:
        raise argparse.ArgumentTypeError(f"must be within [0, 0.5], got {text}")
    return value


def _store(text: str) -> str:
    kind, _, path = text.partition(":")
    if (kind == "memory" and not path) or kind == "sqlite":
        return text
    if kind in ("redis", "rediss") and path.startswith("//"):
        return text
    shown = "***@" + text.rpartition("@")[2] if "@" in text else text
    raise argparse.ArgumentTypeError(
        f"must be memory, sqlite[:PATH] or a redis:// (rediss://) URL, got {shown}"
    )


def add_stress_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add ``triact stress`` to a CLI's subcommands (run it with ``stress_main``)."""
    parser = subparsers.add_parser(
        "stress",
        help="drive a random load against sessions and check the history",
        description=(
            "Drive a random concurrent load (reads, updates with and without "
            "expected_version, ends) against an in-process session manager or a "
            "`triact serve` subprocess over MCP, record every call, and check that one "
            "serial order per session explains every result. Prints a summary; exits "
            "1 on any invariant violation."
        ),
    )
    parser.add_argument(
        "--sessions",
        metavar="N",
        type=positive_int,
        default=16,
        help="sessions kept live at once (default: 16)",
    )
    parser.add_argument(
        "--clients",
        metavar="C",
        type=positive_int,
        default=8,
        help="concurrent clients (default: 8)",
    )
    parser.add_argument(
        "--duration",
        metavar="S",
        type=positive_float,
        default=10.0,
        help="seconds of load (default: 10)",
    )
    parser.add_argument(
        "--store",
        metavar="memory|sqlite[:PATH]|redis://...",
        type=_store,
        default="memory",
        help="the store (default: memory; sqlite without a path: a temporary file; a "
        "redis:// URL without ?prefix=: keys under a new prefix of this run's own)",
    )
    parser.add_argument(
        "--faults",
        metavar="RATE",
        type=_rate,
        default=0.0,
        help="fault rate in [0, 0.5]: store failures, stalls and "
        "corrupt loads (inproc), failing and cancelled updates "
        "(default: 0)",
    )
    parser.add_argument(
        "--target",
        choices=("inproc", "stdio", "http", "cluster"),
        default="inproc",
        help="an in-process manager, or `triact serve` over MCP on stdio, or "
        "`triact serve --http` over MCP on HTTP with clients of both protocol eras, or "
        "a cluster of such nodes on one shared store with faults: one node killed "
        "(SIGKILL) and restarted, another paused (SIGSTOP) past the lease and resumed "
        "(default: inproc)",
    )
    parser.add_argument(
        "--nodes",
        metavar="N",
        type=positive_int,
        default=None,
        help="cluster target: N `triact serve --http` nodes, each call sent to one at "
        "random (default: 3; at least 3; needs --store sqlite[:PATH] or redis://... "
        "and --duration 8 or more)",
    )
    parser.add_argument(
        "--processes",
        metavar="N",
        type=positive_int,
        default=1,
        help="stdio and http targets: N `triact serve` processes on one shared store, "
        "each call sent to one of them at random (default: 1; more needs --store "
        "sqlite[:PATH] or redis://...)",
    )
    parser.add_argument(
        "--routing",
        choices=("random", "affinity"),
        default="random",
        help="with several servers (--processes, --target cluster): each call to one at "
        "random, or each session's calls to the one its id hashes to, as a load "
        "balancer with affinity on the session id does (default: random)",
    )
    parser.add_argument(
        "--seed", type=integer, default=None, help="seed of the load (default: random, printed)"
    )
    parser.add_argument(
        "--server-command",
        metavar="CMD",
        default=None,
        help="stdio and http targets: the command that starts the server "
        "(default: this Python running `triact serve --store STORE`; the http target "
        "appends `--http 127.0.0.1:0`)",
    )
    return parser
