"""The ``triact`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from ._cli_args import (
    absolute_path,
    add_stress_parser,
    non_negative_float,
    positive_float,
    positive_int,
)
from ._version import __version__
from .sessions import SessionConfig
from .transport import HttpOptions, ServerOptions
from .work import WorkConfig

_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _default(cls: type, name: str) -> Any:
    """The default of ``cls``'s attrs field ``name``: the library's, written there only."""
    return attrs.fields_dict(cls)[name].default


def _mib(size: int) -> str:
    return f"{size // (1 << 20)} MiB" if size % (1 << 20) == 0 else str(size)


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the MCP server on stdin/stdout",
        description=(
            "Serve triact sessions over MCP on stdin/stdout (newline-delimited JSON-RPC; "
            "logs on stderr). Speaks the initialize-handshake revisions 2024-11-05 to "
            "2025-11-25 and the stateless revision 2026-07-28. Stops on end of input, "
            "SIGTERM or SIGINT, after letting calls in flight finish."
        ),
    )
    serve.add_argument(
        "--store",
        metavar="memory|sqlite[:PATH]|redis://HOST[:PORT][/DB]",
        default=None,
        help="where sessions live (default: sqlite in $XDG_STATE_HOME/triact/sessions.db, "
        "else ~/.local/state/triact/sessions.db); a redis:// or rediss:// URL shares them "
        "with every process on that Redis (?prefix=P for the key prefix; the password "
        "from the URL or TRIACT_REDIS_PASSWORD; needs the redis extra)",
    )
    serve.add_argument(
        "--http",
        metavar="[HOST:]PORT",
        default=None,
        help="serve MCP over streamable HTTP at http://HOST:PORT/mcp instead of stdio "
        "(HOST: 127.0.0.1 unless given; a host beyond loopback needs --tokens or "
        "--allow-unauthenticated; needs the http extra)",
    )
    serve.add_argument(
        "--tokens",
        metavar="FILE",
        type=Path,
        default=None,
        help="with --http: accept only requests with 'Authorization: Bearer TOKEN' for a "
        "token of FILE (lines 'PRINCIPAL TOKEN'; # comments); each principal reaches its "
        "own sessions only",
    )
    serve.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="with --http and no --tokens: serve a host beyond loopback anyway, to "
        "anyone who can reach it",
    )
    serve.add_argument(
        "--idle-ttl",
        metavar="S",
        type=positive_float,
        default=None,
        help="seconds without calls before a session expires "
        f"(default: {_default(SessionConfig, 'idle_ttl'):g})",
    )
    serve.add_argument(
        "--max-sessions",
        metavar="N",
        type=positive_int,
        default=None,
        help="sessions that may exist at once "
        f"(default: {_default(SessionConfig, 'max_sessions')})",
    )
    serve.add_argument(
        "--max-sessions-per-principal",
        metavar="N",
        type=positive_int,
        default=None,
        help="sessions one principal (a --tokens token's) may have at once, counted "
        "across every process on the store; beyond, session_create fails with "
        "limit_exceeded (default: no cap)",
    )
    serve.add_argument(
        "--log-level",
        choices=_LOG_LEVELS,
        default="warning",
        help="level of the logs written to stderr; debug adds a line per tool call "
        "(default: warning)",
    )
    serve.add_argument(
        "--max-line-bytes",
        metavar="N",
        type=positive_int,
        default=None,
        help="longest message accepted, in bytes "
        f"(default: {_mib(_default(ServerOptions, 'max_line_bytes'))})",
    )
    serve.add_argument(
        "--max-state-bytes",
        metavar="N",
        type=positive_int,
        default=None,
        help="largest a session may grow, in bytes of JSON; a change past it fails with "
        f"limit_exceeded (default: {_mib(_default(SessionConfig, 'max_state_bytes'))})",
    )
    serve.add_argument(
        "--secret-key-file",
        metavar="PATH",
        type=Path,
        default=None,
        help="file holding the hex key that signs session tokens, created (mode 0600) "
        "if missing (default: <db>.key next to a SQLite store; none for memory)",
    )
    serve.add_argument(
        "--shutdown-grace",
        metavar="S",
        type=non_negative_float,
        default=None,
        help="seconds calls in flight get to finish when stopping "
        f"(default: {_default(ServerOptions, 'shutdown_grace'):g})",
    )
    serve.add_argument(
        "--progress-interval",
        metavar="S",
        type=positive_float,
        default=None,
        help="seconds a tool call that asked for progress runs before its first progress "
        "notification, and between the next ones "
        f"(default: {_default(ServerOptions, 'progress_interval'):g})",
    )
    http = serve.add_argument_group("HTTP (with --http)")
    http.add_argument(
        "--allow-origin",
        metavar="ORIGIN",
        action="append",
        dest="allow_origins",
        default=None,
        help="an origin (scheme://host[:port]) whose browser pages may call the server, "
        "beside loopback ones; repeat for several (default: loopback origins only; a "
        "request from any other Origin gets 403)",
    )
    http.add_argument(
        "--max-body-bytes",
        metavar="N",
        type=positive_int,
        default=None,
        help="largest request body; a larger one gets 413 "
        f"(default: {_mib(_default(HttpOptions, 'max_body_bytes'))})",
    )
    http.add_argument(
        "--max-requests",
        metavar="N",
        type=positive_int,
        default=None,
        help="requests handled at once; beyond, 503 with Retry-After "
        f"(default: {_default(HttpOptions, 'max_requests')})",
    )
    http.add_argument(
        "--max-requests-per-principal",
        metavar="N",
        type=positive_int,
        default=None,
        help="with --tokens, requests one principal has handled at once; beyond, 503 with "
        "Retry-After (default: a quarter of --max-requests)",
    )
    http.add_argument(
        "--read-timeout",
        metavar="S",
        type=positive_float,
        default=None,
        help="seconds a client gets to send a request's body; slower, 408 "
        f"(default: {_default(HttpOptions, 'body_timeout'):g})",
    )
    http.add_argument(
        "--keep-alive",
        metavar="S",
        type=positive_float,
        default=None,
        help="seconds an idle connection (or one still sending its request line and "
        "headers) stays open (default: 5)",
    )
    http.add_argument(
        "--server",
        choices=("h11", "hypercorn"),
        default=None,
        help="the HTTP server the MCP app runs on: h11 (triact's own connection loop, "
        "h11 parsing) or hypercorn (Hypercorn's Trio worker, its own extra) (default: h11)",
    )
    http.add_argument(
        "--max-connections",
        metavar="N",
        type=positive_int,
        default=None,
        help="with --server h11, connections served at once; one beyond gets 503 with "
        "Retry-After and is closed (default: 1000)",
    )
    http.add_argument(
        "--max-mcp-sessions",
        metavar="N",
        type=positive_int,
        default=None,
        help="MCP sessions (handshake era) one principal (without --tokens: all clients) "
        "may have open through this process; beyond, initialize gets 429 "
        f"(default: {_default(HttpOptions, 'max_mcp_sessions')})",
    )
    http.add_argument(
        "--mcp-session-ttl",
        metavar="S",
        type=positive_float,
        default=None,
        help="seconds an MCP session (handshake era) lives after its last request "
        f"(default: {_default(HttpOptions, 'session_ttl'):g})",
    )
    work = serve.add_argument_group("work tools (session_start, checkpoints, reflections)")
    work.add_argument(
        "--allowed-root",
        metavar="PATH",
        action="append",
        type=absolute_path,
        dest="allowed_roots",
        default=None,
        help="absolute directory working directories must be inside; repeat for several "
        "(default: any directory)",
    )
    work.add_argument(
        "--allow-git-hooks",
        action="store_true",
        default=None,
        help="let checkpoint commits run the repository's git hooks (default: no program "
        "a repository names ever runs: hooks, filters, fsmonitor, ...)",
    )
    work.add_argument(
        "--git-timeout",
        metavar="S",
        type=positive_float,
        default=None,
        help="seconds one git command may take before it is killed "
        f"(default: {_default(WorkConfig, 'git_timeout'):g})",
    )
    work.add_argument(
        "--max-reflections-per-project",
        metavar="N",
        type=positive_int,
        default=None,
        help="reflections kept per project, the oldest dropped first "
        f"(default: {_default(WorkConfig, 'max_reflections_per_project')})",
    )
    work.add_argument(
        "--max-reflection-chars",
        metavar="N",
        type=positive_int,
        default=None,
        help="longest reflection, in characters "
        f"(default: {_default(WorkConfig, 'max_reflection_chars')})",
    )
    work.add_argument(
        "--max-conversations-per-project",
        metavar="N",
        type=positive_int,
        default=None,
        help="conversation excerpts kept per project, the oldest dropped first "
        f"(default: {_default(WorkConfig, 'max_conversations_per_project')})",
    )
    work.add_argument(
        "--semantic",
        choices=("auto", "on", "off"),
        default=None,
        help="search reflections and conversations by meaning as well as words: 'auto' "
        "where the semantic extra is installed, 'on' to require it, 'off' for words alone "
        f"(default: {_default(WorkConfig, 'semantic')})",
    )
    work.add_argument(
        "--recency-weight",
        metavar="W",
        type=float,
        default=None,
        help="in search by meaning, the share of a score that age can take away, 0 to 1 "
        f"(default: {_default(WorkConfig, 'recency_weight'):g})",
    )
    work.add_argument(
        "--recency-half-life",
        metavar="DAYS",
        type=positive_float,
        default=None,
        dest="recency_half_life_days",
        help="in search by meaning, days after which age has taken half of what it can "
        f"(default: {_default(WorkConfig, 'recency_half_life_days'):g})",
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="triact",
        description="triact: an actor-model session runtime on Trio.",
    )
    parser.add_argument("--version", action="version", version=f"triact {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_serve(commands)
    commands.add_parser(
        "demo",
        help="start 'triact serve' and drive it as an MCP client, printing each exchange",
        description=(
            "Start 'triact serve --store memory' as a subprocess, talk to it as an MCP "
            "client would (initialize, tools/list, session tools: updates, a version "
            "conflict, a burst of pipelined calls), and print what happened."
        ),
    )
    add_stress_parser(commands)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from ._serve import ServeConfig, ServeConfigError, run_serve, work_config

    try:
        work = work_config(
            **{
                name: getattr(args, name)
                for name in (
                    "allowed_roots",
                    "allow_git_hooks",
                    "git_timeout",
                    "max_reflections_per_project",
                    "max_reflection_chars",
                    "max_conversations_per_project",
                    "semantic",
                    "recency_weight",
                    "recency_half_life_days",
                )
            }
        )
    except ServeConfigError as exc:
        print(f"triact serve: error: {exc}", file=sys.stderr)
        return 2
    config = ServeConfig(
        store=args.store,
        idle_ttl=args.idle_ttl,
        max_sessions=args.max_sessions,
        max_sessions_per_principal=args.max_sessions_per_principal,
        log_level=args.log_level,
        max_line_bytes=args.max_line_bytes,
        max_state_bytes=args.max_state_bytes,
        secret_key_file=args.secret_key_file,
        shutdown_grace=args.shutdown_grace,
        progress_interval=args.progress_interval,
        work=work,
        http=args.http,
        tokens=args.tokens,
        allow_unauthenticated=args.allow_unauthenticated,
        allow_origins=tuple(args.allow_origins or ()),
        max_body_bytes=args.max_body_bytes,
        max_requests=args.max_requests,
        max_requests_per_principal=args.max_requests_per_principal,
        read_timeout=args.read_timeout,
        keep_alive=args.keep_alive,
        server=args.server,
        max_connections=args.max_connections,
        mcp_session_ttl=args.mcp_session_ttl,
        max_mcp_sessions=args.max_mcp_sessions,
    )
    try:
        return run_serve(config)
    except ServeConfigError as exc:
        print(f"triact serve: error: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``triact`` console script."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "demo":
        from ._demo import demo

        return trio.run(demo)
    if args.command == "stress":
        from .testing._stress import stress_main

        return stress_main(args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
