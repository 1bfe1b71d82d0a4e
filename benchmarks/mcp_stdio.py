"""``triact serve`` over stdio beside a reference server built on the official MCP SDK.

Both servers run as real subprocesses, in the same run, alternately, and answer the
same tool: ``session_update`` incrementing a key of one of ``sessions`` sessions
(spread round-robin, so calls in flight name different sessions). The reference is
``baselines/mcp_sdk_server.py`` (the SDK's ``MCPServer`` on its stdio transport, the
sessions in a dict). Two clients measure them:

* a lean pipelined JSON-RPC client (Trio, on the subprocess's pipes) that keeps C
  requests in flight, C = 1 and 16, in both protocol eras (the initialize handshake
  at 2025-11-25, and the stateless 2026-07-28 with its per-request ``_meta``; the
  SDK's stdio server is dual-era too): the servers' capacity, calls/s, and the
  latency of each call from its write to its answer's read (p50, p99). It checks
  every answer (no error, and each session's versions in the order its calls were
  sent);
* the official SDK client (``mcp.ClientSession`` over ``stdio_client``, on asyncio,
  handshake era at 2025-11-25) with C tasks calling in a loop: latency as users see
  it. The SDK client's own CPU cost is in these figures; on 2 cores it hides most of
  the servers' difference, which is why capacity is measured with the lean client.

A third comparison puts triact beside the official MCP **TypeScript** SDK's server
(``baselines/ts_sdk/server.mjs``: ``McpServer`` on ``StdioServerTransport``, Node) with
the lean client at C = 16 and 256, handshake era (the SDK's v1 server has no other).
Its packages are installed from ``baselines/ts_sdk/package-lock.json`` by ``npm ci``
into a cache directory (``$TRIACT_NODE_CACHE``, else ``~/.cache/triact/node-clients``),
once per lock file; without ``node`` and ``npm`` those figures are skipped, with a
message on stderr.

    python benchmarks/mcp_stdio.py [--runs N] [--quick] [--only pipelined|sdk|ts]
    python benchmarks/mcp_stdio.py --only ts --before OLD/src
        # also triact from another source tree (PYTHONPATH=OLD/src), in the same
        # alternation (before, after, TypeScript): ts_sdk_before_* lines, after / before
    python benchmarks/mcp_stdio.py --profile triact.prof [--concurrency 256]
        # cProfile (CPU time, the measured window) of the server at C=16 (or C)
"""

from __future__ import annotations

import argparse
import json
import math
import pstats
import signal
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import attrs
import trio
from _common import Options, Target, cpu_seconds, emit, figure, parse_options, percentile
from _ts_sdk import ts_command, ts_versions

HERE = Path(__file__).resolve().parent
TRIACT = (sys.executable, "-m", "triact", "serve", "--store", "memory")
REFERENCE = (sys.executable, str(HERE / "baselines" / "mcp_sdk_server.py"))
REFERENCE_NAME = "official MCP SDK server (mcp {}, MCPServer on stdio), sessions in a dict"

HANDSHAKE = "2025-11-25"
STATELESS = "2026-07-28"
ERAS = {"handshake": HANDSHAKE, "stateless": STATELESS}
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": STATELESS,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "mcp_stdio bench", "version": "0"},
}
CONCURRENCY = (1, 16)
TS_CONCURRENCY = (16, 256)
TS_NAME = (
    "official MCP TypeScript SDK server (@modelcontextprotocol/sdk {}, McpServer on stdio, node {})"
)


@attrs.frozen
class Sizes:
    seconds: float  # measured per figure and run, after the warm-up
    warmup: int  # calls answered before measuring
    sessions: int  # the calls are spread over these, round-robin


FULL = Sizes(seconds=2.0, warmup=300, sessions=64)
QUICK = Sizes(seconds=0.15, warmup=20, sessions=8)


@attrs.define
class Run:
    """One measurement: the answers per second and each call's latency (seconds)."""

    rate: float
    latencies: list[float]
    errors: int = 0
    out_of_order: int = 0
    cpu: float = math.nan  # the server's CPU seconds (user + system) while measured

    @property
    def cpu_us_per_call(self) -> float:
        return self.cpu / len(self.latencies) * 1e6


# -- the lean client ---------------------------------------------------------------


class LineClient:
    """Newline-delimited JSON-RPC on a server subprocess's stdin and stdout."""

    def __init__(self, process: trio.Process) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        self.process = process
        self._stdin = process.stdin
        self._stdout = process.stdout
        self._buffer = b""
        self._next_id = 0

    async def send(self, data: bytes) -> None:
        await self._stdin.send_all(data)

    async def lines(self) -> list[bytes]:
        """The complete lines the next read brings (maybe none)."""
        data = await self._stdout.receive_some(1 << 16)
        if not data:
            raise RuntimeError(f"the server closed its output (status {self.process.poll()})")
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        return lines

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send one request and return its result, skipping anything else."""
        self._next_id += 1
        request_id = self._next_id
        message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        await self.send(json.dumps(message).encode() + b"\n")
        while True:
            for line in await self.lines():
                answer = json.loads(line)
                if answer.get("id") == request_id:
                    if "result" not in answer:
                        raise RuntimeError(f"{method} failed: {answer}")
                    result: dict[str, Any] = answer["result"]
                    return result

    async def close(self) -> None:
        await self._stdin.aclose()

    async def notify(self, method: str) -> None:
        await self.send(json.dumps({"jsonrpc": "2.0", "method": method}).encode() + b"\n")


async def open_connection(command: Sequence[str], era: str) -> tuple[LineClient, dict[str, Any]]:
    """Start ``command``; for the handshake era, initialize. Returns the client and
    the ``_meta`` every request carries."""
    process = await trio.lowlevel.open_process(
        list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    client = LineClient(process)
    if era == "stateless":
        return client, {"_meta": ENVELOPE}
    result = await client.request(
        "initialize",
        {
            "protocolVersion": HANDSHAKE,
            "capabilities": {},
            "clientInfo": {"name": "mcp_stdio bench", "version": "0"},
        },
    )
    assert result["protocolVersion"] == HANDSHAKE, result
    await client.notify("notifications/initialized")
    return client, {}


async def close_connection(client: LineClient) -> None:
    """End of input; the server should exit (it is killed after 10 s)."""
    await client.close()
    with trio.move_on_after(10) as waiting:
        await client.process.wait()
    if waiting.cancelled_caught:
        client.process.kill()
        await client.process.wait()


async def create_sessions(client: LineClient, meta: dict[str, Any], n: int) -> list[str]:
    ids = []
    for _ in range(n):
        result = await client.request(
            "tools/call", {"name": "session_create", "arguments": {}, **meta}
        )
        ids.append(result["structuredContent"]["session_id"])
    return ids


def _templates(ids: list[str], meta: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """Per session, the bytes of a session_update before and after its request id."""
    out = []
    for session_id in ids:
        params = {
            "name": "session_update",
            "arguments": {"session_id": session_id, "increment": {"n": 1}},
            **meta,
        }
        after = json.dumps({"method": "tools/call", "params": params}, separators=(",", ":"))
        out.append((b'{"jsonrpc":"2.0","id":', b"," + after[1:].encode() + b"\n"))
    return out


async def pipelined(
    client: LineClient,
    meta: dict[str, Any],
    ids: list[str],
    window: int,
    sizes: Sizes,
    on_window: Callable[[bool], None] | None = None,
) -> Run:
    """Keep ``window`` calls in flight: ``sizes.warmup`` answered first, then as many
    as ``sizes.seconds`` allow. Each session's versions must rise by 1 per call, in the
    order its calls were sent. ``on_window`` is told when the measured window opens
    (True) and when its last call is answered (False)."""
    templates = _templates(ids, meta)
    in_flight: dict[int, tuple[float, int, int]] = {}  # id -> (sent, session, nth call)
    calls = [0] * len(ids)  # per session, calls sent
    base: dict[int, int] = {}  # per session, its version before the first call
    run = Run(0.0, [])
    next_id = 1_000_000
    answered = 0
    start = stop = math.inf
    last = 0.0
    cpu = math.nan

    def request(now: float) -> bytes:
        nonlocal next_id
        next_id += 1
        session = next_id % len(ids)
        calls[session] += 1
        in_flight[next_id] = (now, session, calls[session])
        before, after = templates[session]
        return b"%s%d%s" % (before, next_id, after)

    now = time.perf_counter()
    await client.send(b"".join([request(now) for _ in range(window)]))
    while in_flight:
        lines = await client.lines()
        now = time.perf_counter()
        more = []
        for line in lines:
            answer = json.loads(line)
            if "id" not in answer:
                continue  # a notification
            sent, session, nth = in_flight.pop(answer["id"])
            result = answer.get("result")
            if result is None or result.get("isError", False):
                run.errors += 1
            elif (
                result["structuredContent"]["version"]
                != base.setdefault(session, result["structuredContent"]["version"] - nth) + nth
            ):
                run.out_of_order += 1
            answered += 1
            if answered == sizes.warmup:
                start, stop = now, now + sizes.seconds
                cpu = cpu_seconds(client.process.pid)
                if on_window is not None:
                    on_window(True)
            elif answered > sizes.warmup:
                run.latencies.append(now - max(sent, start))
                last = now
            if now < stop:
                more.append(request(now))
        if more:
            await client.send(b"".join(more))
    run.rate = len(run.latencies) / (last - start)
    run.cpu = cpu_seconds(client.process.pid) - cpu
    if on_window is not None:
        on_window(False)
    return run


async def pipelined_runs(
    command: Sequence[str], era: str, sizes: Sizes, windows: Sequence[int] = CONCURRENCY
) -> dict[int, Run]:
    """One connection to a fresh server process: each C of ``windows`` in turn."""
    client, meta = await open_connection(command, era)
    try:
        ids = await create_sessions(client, meta, sizes.sessions)
        return {c: await pipelined(client, meta, ids, c, sizes) for c in windows}
    finally:
        await close_connection(client)


# -- the SDK client ----------------------------------------------------------------


async def sdk_runs(command: Sequence[str], sizes: Sizes) -> dict[int, Run]:
    """The official client on a fresh server process: C tasks each calling in a loop."""
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(command=command[0], args=list(command[1:]))
    async with (
        stdio_client(params) as (read, write),
        ClientSession(read, write) as session,
    ):
        init = await session.initialize()
        assert init.protocol_version == HANDSHAKE, init.protocol_version
        ids = []
        for _ in range(sizes.sessions):
            created = await session.call_tool("session_create", {})
            assert created.structured_content is not None
            ids.append(created.structured_content["session_id"])
        runs = {}
        for window in CONCURRENCY:
            runs[window] = await _sdk_run(session, ids, window, sizes)
        return runs


async def _sdk_run(session: Any, ids: list[str], window: int, sizes: Sizes) -> Run:
    run = Run(0.0, [])
    answered = 0
    start = stop = math.inf
    last = 0.0

    async def caller(k: int) -> None:
        nonlocal answered, start, stop, last
        while time.perf_counter() < stop:
            arguments = {"session_id": ids[k % len(ids)], "increment": {"n": 1}}
            k += window
            sent = time.perf_counter()
            result = await session.call_tool("session_update", arguments)
            now = time.perf_counter()
            run.errors += bool(result.is_error)
            answered += 1
            if answered == sizes.warmup:
                start, stop = now, now + sizes.seconds
            elif answered > sizes.warmup:
                run.latencies.append(now - max(sent, start))
                last = now

    async with anyio.create_task_group() as group:
        for k in range(window):
            group.start_soon(caller, k)
    run.rate = len(run.latencies) / (last - start)
    return run


# -- the figures -------------------------------------------------------------------


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 4)


def _cpu(runs: list[Run]) -> float | None:
    """The median server CPU per call, in µs (None if not measured)."""
    values = [r.cpu_us_per_call for r in runs]
    return None if any(math.isnan(v) for v in values) else round(statistics.median(values), 1)


def _ratio(mine: float | None, theirs: float | None) -> float | None:
    return None if mine is None or not theirs else round(mine / theirs, 3)


def alternate(
    runs: int, *commands: Callable[[], dict[int, Run]]
) -> tuple[list[dict[int, Run]], ...]:
    """Each command ``runs`` times, in turn (the first, the second, ..., the first)."""
    results: tuple[list[dict[int, Run]], ...] = tuple([] for _ in commands)
    for _ in range(runs):
        for command, runs_of in zip(commands, results, strict=True):
            runs_of.append(command())
    return results


def lines_for(
    prefix: str,
    ours: list[dict[int, Run]],
    theirs: list[dict[int, Run]],
    baseline: str,
    *,
    capacity_target: float | None,
    windows: Sequence[int] = CONCURRENCY,
    **extra: Any,
) -> Iterator[dict[str, Any]]:
    """Per C, a calls/s line (with ``capacity_target`` as its ratio's bound at C >= 16)
    and a p99 line."""
    for window in windows:
        mine = [runs[window] for runs in ours]
        ref = [runs[window] for runs in theirs]
        p50 = [_ms(percentile(r.latencies, 0.5)) for r in mine]
        p99 = [_ms(percentile(r.latencies, 0.99)) for r in mine]
        ref_p50 = [_ms(percentile(r.latencies, 0.5)) for r in ref]
        ref_p99 = [_ms(percentile(r.latencies, 0.99)) for r in ref]
        counts = {
            "concurrency": window,
            **extra,
            "server_cpu_us_per_call": _cpu(mine),
            "baseline_server_cpu_us_per_call": _cpu(ref),
            "server_cpu_ratio": _ratio(_cpu(mine), _cpu(ref)),
            "calls": sum(len(r.latencies) for r in mine),
            "baseline_calls": sum(len(r.latencies) for r in ref),
            "errors": sum(r.errors for r in mine),
            "baseline_errors": sum(r.errors for r in ref),
            "out_of_order": sum(r.out_of_order for r in mine),
            "baseline_out_of_order": sum(r.out_of_order for r in ref),
        }
        bad = counts["errors"] or counts["out_of_order"]
        line = figure(
            f"{prefix}_c{window}",
            "calls/s",
            [r.rate for r in mine],
            baseline=baseline,
            baseline_runs=[r.rate for r in ref],
            target=(
                Target("ratio", ">=", capacity_target)
                if capacity_target is not None and window >= 16
                else None
            ),
            p50_ms=statistics.median(p50),
            p99_ms=statistics.median(p99),
            baseline_p50_ms=statistics.median(ref_p50),
            baseline_p99_ms=statistics.median(ref_p99),
            **counts,
        )
        line["ok"] = line["ok"] and not bad
        yield line
        line = figure(
            f"{prefix}_c{window}_p99",
            "ms",
            p99,
            baseline=baseline,
            baseline_runs=ref_p99,
            target=Target("ratio", "<=", 1),
            p50_ms=statistics.median(p50),
            baseline_p50_ms=statistics.median(ref_p50),
            **counts,
        )
        line["ok"] = line["ok"] and not bad
        yield line


def sdk_version() -> str:
    from importlib.metadata import version

    return version("mcp")


def pipelined_figures(options: Options, sizes: Sizes) -> Iterator[dict[str, Any]]:
    for era, protocol in ERAS.items():
        ours, theirs = alternate(
            options.runs,
            partial(trio.run, pipelined_runs, TRIACT, era, sizes),
            partial(trio.run, pipelined_runs, REFERENCE, era, sizes),
        )
        yield from lines_for(
            f"pipelined_{era}",
            ours,
            theirs,
            REFERENCE_NAME.format(sdk_version()) + f", protocol {protocol}",
            capacity_target=10,
            client="lean pipelined JSON-RPC client (Trio)",
            protocol=protocol,
            sessions=sizes.sessions,
            seconds=sizes.seconds,
        )


def sdk_figures(options: Options, sizes: Sizes) -> Iterator[dict[str, Any]]:
    ours, theirs = alternate(
        options.runs,
        partial(anyio.run, sdk_runs, TRIACT, sizes, backend="asyncio"),
        partial(anyio.run, sdk_runs, REFERENCE, sizes, backend="asyncio"),
    )
    yield from lines_for(
        "sdk_client",
        ours,
        theirs,
        REFERENCE_NAME.format(sdk_version()) + f", protocol {HANDSHAKE}",
        capacity_target=None,
        client=f"mcp.ClientSession over stdio_client (mcp {sdk_version()}, asyncio)",
        protocol=HANDSHAKE,
        sessions=sizes.sessions,
        seconds=sizes.seconds,
    )


def ts_figures(
    options: Options, sizes: Sizes, before: str | None = None
) -> Iterator[dict[str, Any]]:
    command = ts_command("server.mjs", "mcp_stdio")
    if command is None:
        return
    commands = [
        partial(trio.run, pipelined_runs, TRIACT, "handshake", sizes, TS_CONCURRENCY),
        partial(trio.run, pipelined_runs, command, "handshake", sizes, TS_CONCURRENCY),
    ]
    if before is not None:
        # The same command, with PYTHONPATH naming the other source tree first.
        old = ("env", f"PYTHONPATH={Path(before).resolve()}", *TRIACT)
        commands.insert(
            0, partial(trio.run, pipelined_runs, old, "handshake", sizes, TS_CONCURRENCY)
        )
    *earlier, ours, theirs = alternate(options.runs, *commands)
    ts_name = TS_NAME.format(*ts_versions(command)) + f", protocol {HANDSHAKE}"
    shared = {
        "windows": TS_CONCURRENCY,
        "client": "lean pipelined JSON-RPC client (Trio)",
        "protocol": HANDSHAKE,
        "sessions": sizes.sessions,
        "seconds": sizes.seconds,
    }
    for old_runs in earlier:
        old_name = f"triact serve from {before}, protocol {HANDSHAKE}"
        yield from lines_for(
            "ts_sdk_before_handshake", ours, old_runs, old_name, capacity_target=None, **shared
        )
        yield from lines_for(
            "ts_sdk_before_vs_ts_handshake",
            old_runs,
            theirs,
            ts_name,
            capacity_target=None,
            **shared,
        )
    yield from lines_for("ts_sdk_handshake", ours, theirs, ts_name, capacity_target=1, **shared)


#: Where the server's own time went, by the file a function is in (first match).
_PARTS = (
    ("triact.transport", "/triact/transport/"),
    ("triact.sessions", "/triact/sessions/"),
    ("triact.actors", "/triact/actors/"),
    ("trio", "/trio/"),
    ("attrs, cattrs", "/attr/"),
    ("attrs, cattrs", "/cattrs/"),
    ("json", "/json/"),
)


def profile(path: str, window: int, sizes: Sizes) -> None:
    """Run triact's server under cProfile (CPU time, the measured window only) at C =
    ``window``, handshake era; print on stderr its own time per call by part and its
    top functions."""
    command = (sys.executable, str(HERE / "_profiled.py"), path, *TRIACT[2:])

    async def one() -> Run:
        client, meta = await open_connection(command, "handshake")
        try:
            ids = await create_sessions(client, meta, sizes.sessions)

            def signal_server(opened: bool) -> None:
                client.process.send_signal(signal.SIGUSR1 if opened else signal.SIGUSR2)

            return await pipelined(client, meta, ids, window, sizes, signal_server)
        finally:
            await close_connection(client)

    Path(path).unlink(missing_ok=True)
    run = trio.run(one)  # the server has exited: the profile is written, or never will be
    if not Path(path).exists():
        raise SystemExit(f"the server wrote no profile to {path}")
    calls = len(run.latencies)
    stats = pstats.Stats(path, stream=sys.stderr)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    parts: dict[str, float] = defaultdict(float)
    total = 0.0
    for (file, _, name), (_, _, tottime, *_) in raw.items():
        total += tottime
        part = next((label for label, marker in _PARTS if marker in file), None)
        if part is None:
            if "poll" in name:
                part = "epoll"
            elif "posix.write" in name or "posix.read" in name:
                part = "pipe reads and writes (syscalls)"
            else:
                part = "stdlib and builtins"
        parts[part] += tottime
    print(
        f"C={window} handshake under cProfile (CPU time): {run.rate:,.0f} calls/s, "
        f"{calls:,} calls measured; {total / calls * 1e6:.0f} µs of profiled CPU per call "
        f"(server CPU without the profiler's cost: see the benchmark's lines)",
        file=sys.stderr,
    )
    print("  by the package its own time was spent in:", file=sys.stderr)
    for part, seconds in sorted(parts.items(), key=lambda item: -item[1]):
        print(
            f"    {part:40} {seconds / total:6.1%}  {seconds / calls * 1e6:7.1f} µs/call",
            file=sys.stderr,
        )
    stats.sort_stats("tottime").print_stats(40)


BENCHMARKS: dict[str, Callable[[Options, Sizes], Iterator[dict[str, Any]]]] = {
    "pipelined": pipelined_figures,
    "sdk": sdk_figures,
    "ts": ts_figures,
}


def main(argv: list[str] | None = None) -> None:
    pick = argparse.ArgumentParser(add_help=False)
    pick.add_argument("--only", choices=list(BENCHMARKS))
    pick.add_argument("--profile", metavar="PATH")
    pick.add_argument("--concurrency", type=int, default=16)
    pick.add_argument("--before", metavar="SRC")
    picked, rest = pick.parse_known_args(argv)
    options = parse_options(
        "triact serve beside a reference server on the official MCP SDK, over stdio; "
        "prints JSON lines. --only pipelined|sdk|ts runs one comparison's figures; "
        "--profile PATH [--concurrency C] runs triact's server under cProfile instead; "
        "--before SRC adds triact from another source tree to the ts comparison.",
        rest,
    )
    sizes = QUICK if options.quick else FULL
    if picked.profile:
        profile(picked.profile, picked.concurrency, sizes)
        return
    if picked.before is not None and picked.only != "ts":
        raise SystemExit("--before goes with --only ts")
    for name, bench in BENCHMARKS.items():
        if picked.only in (None, name):
            lines = (
                ts_figures(options, sizes, picked.before) if name == "ts" else bench(options, sizes)
            )
            for line in lines:
                emit(line)


if __name__ == "__main__":
    main()
