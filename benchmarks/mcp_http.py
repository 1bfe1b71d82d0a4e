"""``triact serve --http`` beside the official MCP SDK's own streamable HTTP server.

Both servers run as real subprocesses on free loopback ports, in the same run,
alternately, and answer the same tool: ``session_update`` incrementing a key of one of
``sessions`` sessions. The reference is ``baselines/mcp_sdk_http_server.py``: the
SDK's ``MCPServer`` with the session tools of ``baselines/mcp_sdk_server.py`` (sessions
in a dict), served by its own ``streamable_http_app`` (stateless, JSON responses) on
uvicorn, as the SDK runs it.

One lean client drives both: C keep-alive HTTP/1.1 connections on Trio sockets (each
request's bytes a fixed head plus its body; an answer read by its status line, headers
and length), each a loop of POST, read the answer, POST again (a connection the server
closes, as Hypercorn does after 1,000 requests, or while it is idle, is opened again and
counted in ``reconnects``); C = 1, 16 and 64, in both protocol
eras: the initialize handshake at 2025-11-25 (each connection its own MCP session:
``Mcp-Session-Id`` where the server gives one, ``MCP-Protocol-Version`` on every later
request) and the stateless 2026-07-28 (``_meta`` on each request, with its
``MCP-Protocol-Version``, ``Mcp-Method`` and ``Mcp-Name`` headers). Every request
sends ``Accept: application/json, text/event-stream``. Each connection owns its
sessions (no two connections share one), so every answer is checked: no error, and
each session's version one above its previous answer's.

The warm-up lasts ``warmup`` seconds and until every connection has been answered once
(and, beside the TypeScript server, until 3,000 calls have been answered: Node's JIT
compiles hot code only after some use); the window, ``seconds`` and until a call has
been answered in it.
Per figure: calls/s, the latency of each call from its write to its answer's read
(p50, p99), the server's CPU time per call (user + system, read from /proc before and
after the measured window), the share of a core the server used (near 1.0: the server
is the bottleneck), and the client's own CPU per call (so that a client that could
not keep up would show).

The floor (``baselines/floor_asgi.py``): an ASGI app doing the least an MCP answer
needs, with no MCP library, on triact's own HTTP server (``floor_triact_h11_*``, what
``triact serve --http`` runs on by default) and on Hypercorn's Trio worker
(``floor_hypercorn_*``, its ``--server hypercorn``), each beside the same app on
uvicorn: what the HTTP server alone costs per call; and (``floor_h11_trio_*``) the same
answers from a bare h11 loop on Trio, no ASGI server at all, for scale.

``--server h11|hypercorn`` picks the server ``triact serve --http`` runs on (its
``--server``; by default its default).

A third comparison puts triact beside the official MCP **TypeScript** SDK's streamable
HTTP server (``baselines/ts_sdk/http_server.mjs``: ``createMcpExpressApp``, a
``StreamableHTTPServerTransport`` and ``McpServer`` per MCP session, JSON responses,
the tools of ``tools.mjs``, Node) at C = 16 and 256, handshake era (the only one the
SDK's v1 server speaks), both servers warmed up with 3,000 calls before each window.
Its packages are installed by ``_ts_sdk.py`` (``npm ci`` from the committed lock file
into the node cache); without ``node`` and ``npm`` those figures are skipped.

    python benchmarks/mcp_http.py [--runs N] [--quick] [--era handshake|stateless]
                                  [--no-floor] [--only sdk|ts|floor]
                                  [--server h11|hypercorn]
    python benchmarks/mcp_http.py --profile triact.prof [--era E]  # cProfile at C=16
"""

from __future__ import annotations

import argparse
import json
import math
import pstats
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio
from _common import Options, Target, cpu_seconds, emit, figure, parse_options, percentile
from _ts_sdk import ts_command, ts_versions

HERE = Path(__file__).resolve().parent
TRIACT = (sys.executable, "-m", "triact", "serve", "--store", "memory", "--http", "127.0.0.1:0")
REFERENCE = (sys.executable, str(HERE / "baselines" / "mcp_sdk_http_server.py"))
FLOOR = (sys.executable, str(HERE / "baselines" / "floor_asgi.py"))
REFERENCE_NAME = (
    "official MCP SDK server (mcp {}, MCPServer.streamable_http_app, stateless, "
    "JSON responses, on uvicorn {}), sessions in a dict"
)
TS_NAME = (
    "official MCP TypeScript SDK server (@modelcontextprotocol/sdk {}, McpServer on "
    "StreamableHTTPServerTransport, one per MCP session, JSON responses, "
    "createMcpExpressApp, node {}), sessions in a Map"
)
CLIENT = "lean keep-alive HTTP/1.1 client (Trio sockets), one connection per caller"

HANDSHAKE = "2025-11-25"
STATELESS = "2026-07-28"
ERAS = {"handshake": HANDSHAKE, "stateless": STATELESS}
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": STATELESS,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "mcp_http bench", "version": "0"},
}
CONCURRENCY = (1, 16, 64)
TS_CONCURRENCY = (16, 256)
_LISTENING = re.compile(rb"(http://\S+?/mcp)\b")


@attrs.frozen
class Sizes:
    seconds: float  # measured per figure and run, after the warm-up
    warmup: float  # seconds of calls before measuring
    sessions: int  # spread over the connections (at least one each)
    #: Calls answered before measuring, at least (Node's JIT compiles the TypeScript
    #: server's hot code only after some thousands of calls).
    warmup_calls: int = 0


FULL = Sizes(seconds=2.0, warmup=0.5, sessions=64)
#: Node's code is compiled by its JIT after some use: before each window, the
#: TypeScript comparison warms both servers up with this many calls.
TS_WARMUP_CALLS = 3000
QUICK = Sizes(seconds=0.2, warmup=0.05, sessions=4)


@attrs.define
class Run:
    """One measurement: answers per second, each call's latency (seconds), and the
    CPU seconds the server and the client used while measured."""

    rate: float = 0.0
    latencies: list[float] = attrs.field(factory=list)
    errors: int = 0
    out_of_order: int = 0
    reconnects: int = 0
    server_cpu: float = math.nan
    client_cpu: float = math.nan
    elapsed: float = math.nan

    def per_call_us(self, cpu: float) -> float:
        return cpu / len(self.latencies) * 1e6 if self.latencies else math.nan


# -- the servers -------------------------------------------------------------------


@attrs.frozen
class Server:
    process: trio.Process
    host: str
    port: int


@asynccontextmanager
async def running(command: Sequence[str]) -> AsyncIterator[Server]:
    """Start ``command``, wait for the URL it prints on stderr, and stop it (SIGTERM,
    then SIGKILL after 10 s) on exit."""
    process = await trio.lowlevel.open_process(
        list(command), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        assert process.stderr is not None
        seen = b""
        with trio.fail_after(60):
            while (found := _LISTENING.search(seen)) is None:
                chunk = await process.stderr.receive_some(4096)
                if not chunk:
                    raise RuntimeError(f"the server exited: {seen.decode(errors='replace')}")
                seen += chunk
        address = found.group(1).decode().removeprefix("http://").removesuffix("/mcp")
        host, _, port = address.rpartition(":")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, process.stderr)
            yield Server(process, host.strip("[]"), int(port))
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            process.terminate()
            with trio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    """Read what the server writes on stderr (so it never blocks on a full pipe),
    and pass it on."""
    while data := await stream.receive_some(65536):
        sys.stderr.buffer.write(data)
        sys.stderr.flush()


# -- the lean client ---------------------------------------------------------------


class HttpError(Exception):
    """An answer the benchmark did not expect (status, or not JSON-RPC)."""


class Connection:
    """One keep-alive HTTP/1.1 connection to ``/mcp``, one request at a time, and the
    MCP headers its requests carry.

    Lean on purpose: each request's bytes are a fixed head, its own headers and body;
    an answer is read by its status line, headers and ``content-length`` (or chunks).
    Every answer's JSON is checked by the caller, which would catch a misread."""

    def __init__(self, stream: trio.SocketStream, server: Server) -> None:
        self._stream = stream
        self._server = server
        self._buffer = b""
        #: Times the server closed the connection after an answer (e.g. Hypercorn's
        #: keep_alive_max_requests), and a new one was opened.
        self.reconnects = 0
        self._head = (
            f"POST /mcp HTTP/1.1\r\nhost: {server.host}:{server.port}\r\n"
            "content-type: application/json\r\n"
            "accept: application/json, text/event-stream\r\n"
        ).encode()
        self.last_headers: dict[bytes, bytes] = {}

    def add_header(self, name: str, value: str) -> None:
        self._head += f"{name}: {value}\r\n".encode()

    async def post(self, body: bytes, extra: bytes = b"") -> tuple[int, dict[bytes, bytes], bytes]:
        """POST ``body`` (``extra``: more header lines, each ending in CRLF); the
        answer's status, headers (names in lower case) and body (an SSE answer's body
        is its last ``data:`` field)."""
        request = b"%s%scontent-length: %d\r\n\r\n%s" % (self._head, extra, len(body), body)
        try:
            await self._stream.send_all(request)
            while (end := self._buffer.find(b"\r\n\r\n")) < 0:
                await self._more()
        except (HttpError, trio.BrokenResourceError):
            if self._buffer:
                raise
            # Closed while idle (a keep-alive timeout: Node's is 5 s, and setting up
            # C = 256 connections takes longer): open a new one and send again. A server
            # that closed it after taking the request would apply it twice, which the
            # callers' version checks count as out of order.
            await self._reopen()
            await self._stream.send_all(request)
            while (end := self._buffer.find(b"\r\n\r\n")) < 0:
                await self._more()
        head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
        status_line, *lines = head.split(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            content = await self._chunked()
        else:
            length = int(headers.get(b"content-length", b"0"))
            while len(self._buffer) < length:
                await self._more()
            content, self._buffer = self._buffer[:length], self._buffer[length:]
        if headers.get(b"connection", b"").lower() == b"close":  # open a new one
            await self._reopen()
        if headers.get(b"content-type", b"").startswith(b"text/event-stream"):
            data_lines = [line for line in content.split(b"\n") if line.startswith(b"data:")]
            content = data_lines[-1][5:].strip() if data_lines else b""
        return status, headers, content

    async def _reopen(self) -> None:
        await self._stream.aclose()
        self._stream = await _connect(self._server)
        self._buffer = b""
        self.reconnects += 1

    async def _more(self) -> None:
        data = await self._stream.receive_some(65536)
        if not data:
            raise HttpError("the server closed the connection")
        self._buffer += data

    async def _chunked(self) -> bytes:
        chunks = []
        while True:
            while (end := self._buffer.find(b"\r\n")) < 0:
                await self._more()
            size = int(self._buffer[:end].split(b";")[0], 16)
            while len(self._buffer) < end + 2 + size + 2:
                await self._more()
            chunks.append(self._buffer[end + 2 : end + 2 + size])
            self._buffer = self._buffer[end + 2 + size + 2 :]
            if size == 0:
                return b"".join(chunks)

    async def request(
        self,
        method: str,
        params: dict[str, Any],
        request_id: int = 0,
        extra: bytes = b"",
    ) -> Any:
        """One JSON-RPC request's result (HttpError for anything else)."""
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        status, headers, content = await self.post(json.dumps(body).encode(), extra)
        if status != 200:
            raise HttpError(f"{method}: HTTP {status}: {content[:300]!r}")
        answer = json.loads(content)
        if "result" not in answer:
            raise HttpError(f"{method}: {answer}")
        self.last_headers = headers
        return answer["result"]

    async def aclose(self) -> None:
        await self._stream.aclose()


async def open_mcp(server: Server, era: str) -> Connection:
    """A connection ready for tool calls: for the handshake era, initialized (with the
    session id the server gave, if any)."""
    connection = Connection(await _connect(server), server)
    if era == "stateless":
        connection.add_header("mcp-protocol-version", STATELESS)
        return connection
    result = await connection.request(
        "initialize",
        {
            "protocolVersion": HANDSHAKE,
            "capabilities": {},
            "clientInfo": {"name": "mcp_http bench", "version": "0"},
        },
    )
    if result["protocolVersion"] != HANDSHAKE:
        raise HttpError(f"initialize answered {result['protocolVersion']}")
    session = connection.last_headers.get(b"mcp-session-id")
    if session is not None:
        connection.add_header("mcp-session-id", session.decode())
    connection.add_header("mcp-protocol-version", HANDSHAKE)
    note = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode()
    status, _, _ = await connection.post(note)
    if status not in (200, 202):
        raise HttpError(f"notifications/initialized: HTTP {status}")
    return connection


async def _connect(server: Server) -> trio.SocketStream:
    stream = await trio.open_tcp_stream(server.host, server.port)
    stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return stream


def _call_headers(era: str, tool: str) -> bytes:
    """The header lines a tools/call carries in ``era`` besides the connection's."""
    if era != "stateless":
        return b""
    return b"mcp-method: tools/call\r\nmcp-name: %s\r\n" % tool.encode()


def _params(era: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {"name": tool, "arguments": arguments}
    if era == "stateless":
        params["_meta"] = ENVELOPE
    return params


class Caller:
    """One connection's loop: session_update on its own sessions, round-robin."""

    def __init__(self, connection: Connection, era: str, sessions: list[str]) -> None:
        self.connection = connection
        self.sessions = sessions
        self.headers = _call_headers(era, "session_update")
        self.templates = []
        for session_id in sessions:
            params = _params(
                era, "session_update", {"session_id": session_id, "increment": {"n": 1}}
            )
            after = json.dumps({"method": "tools/call", "params": params}, separators=(",", ":"))
            self.templates.append((b'{"jsonrpc":"2.0","id":', b"," + after[1:].encode()))
        self.versions: dict[int, int] = {}

    async def call(self, k: int, run: Run | None) -> None:
        """The ``k``-th call; counted in ``run`` (if measuring)."""
        index = k % len(self.sessions)
        before, after = self.templates[index]
        status, _, content = await self.connection.post(
            b"%s%d%s" % (before, k, after), self.headers
        )
        self._check(index, status, content, run)

    def _check(self, index: int, status: int, content: bytes, run: Run | None) -> None:
        result = json.loads(content).get("result") if status == 200 else None
        if result is None or result.get("isError"):
            if run is not None:
                run.errors += 1
            return
        version = result["structuredContent"]["version"]
        previous = self.versions.get(index)
        self.versions[index] = version
        if previous is not None and version != previous + 1 and run is not None:
            run.out_of_order += 1


async def measure(
    server: Server,
    era: str,
    window: int,
    sizes: Sizes,
    on_window: Callable[[bool], None] | None = None,
) -> Run:
    """``window`` connections, each with its sessions, calling in a loop: warm up, then
    measure ``sizes.seconds``."""
    per_connection = max(1, sizes.sessions // window)
    connections: list[Connection] = []
    callers: list[Caller] = []

    async def set_up() -> None:
        connection = await open_mcp(server, era)
        connections.append(connection)
        sessions = []
        for n in range(per_connection):
            result = await connection.request(
                "tools/call",
                _params(era, "session_create", {}),
                n,
                _call_headers(era, "session_create"),
            )
            sessions.append(result["structuredContent"]["session_id"])
        callers.append(Caller(connection, era, sessions))

    try:
        # Set up 16 connections at a time (one by one, C = 256 took longer than the
        # servers' 5 s keep-alive timeout, which closed the first ones again).
        async with trio.open_nursery() as nursery:
            limit = trio.Semaphore(16)
            for _ in range(window):
                await limit.acquire()
                nursery.start_soon(_released, limit, set_up)
        return await _measured(server, callers, sizes, on_window)
    finally:
        for connection in connections:
            await connection.aclose()


async def _released(limit: trio.Semaphore, work: Callable[[], Awaitable[None]]) -> None:
    try:
        await work()
    finally:
        limit.release()


async def _measured(
    server: Server,
    callers: list[Caller],
    sizes: Sizes,
    on_window: Callable[[bool], None] | None,
) -> Run:
    """Every caller in a loop until the window closes; what the window saw.
    ``on_window`` is told when the window opens (True) and closes (False)."""
    run = Run()
    measuring: Run | None = None
    begin = math.inf
    done = False
    clock = time.perf_counter

    waiting = len(callers)  # callers not answered yet
    all_answered = trio.Event()
    counted = trio.Event()  # a call answered in the window
    warm = trio.Event()  # sizes.warmup_calls answered
    answered = 0
    if not sizes.warmup_calls:
        warm.set()

    async def loop(caller: Caller) -> None:
        nonlocal waiting, answered
        k = 0
        while not done:
            k += 1
            sent = clock()
            await caller.call(k, measuring)
            if measuring is not None:
                run.latencies.append(clock() - max(sent, begin))
                counted.set()
            answered += 1
            if answered == sizes.warmup_calls:
                warm.set()
            if k == 1:
                waiting -= 1
                if not waiting:
                    all_answered.set()

    async def window() -> None:
        nonlocal measuring, begin, done
        # The warm-up lasts until every connection has been answered once (at C = 256
        # on a loaded machine that can take longer than the warm-up itself).
        await trio.sleep(sizes.warmup)
        await all_answered.wait()
        await warm.wait()
        if on_window is not None:
            on_window(True)
        cpu, client_cpu = cpu_seconds(server.process.pid), time.process_time()
        begin = clock()
        measuring = run
        await trio.sleep(sizes.seconds)
        await counted.wait()  # a quick run's window on a loaded machine may see none
        measuring = None
        done = True
        run.elapsed = clock() - begin
        run.server_cpu = cpu_seconds(server.process.pid) - cpu
        run.client_cpu = time.process_time() - client_cpu
        if on_window is not None:
            on_window(False)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(window)
        for caller in callers:
            nursery.start_soon(loop, caller)
    run.reconnects = sum(caller.connection.reconnects for caller in callers)
    run.rate = len(run.latencies) / run.elapsed
    return run


async def server_runs(
    command: Sequence[str], era: str, sizes: Sizes, windows: Sequence[int] = CONCURRENCY
) -> dict[int, Run]:
    """A fresh server process: C = 1, 16, 64 (or ``windows``) in turn."""
    async with running(command) as server:
        return {c: await measure(server, era, c, sizes) for c in windows}


# -- the figures -------------------------------------------------------------------


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 4)


def _median(values: list[float], digits: int = 1) -> float | None:
    if not values or any(math.isnan(v) for v in values):
        return None
    return round(statistics.median(values), digits)


def versions() -> tuple[str, str]:
    from importlib.metadata import version

    return version("mcp"), version("uvicorn")


def lines_for(
    prefix: str,
    era: str,
    ours: list[dict[int, Run]],
    theirs: list[dict[int, Run]],
    baseline: str,
    sizes: Sizes,
    *,
    targets: bool,
    windows: Sequence[int] = CONCURRENCY,
    goals: tuple[float, float] = (3, 1 / 3),
    goal_windows: Sequence[int] = (16,),
) -> Iterator[dict[str, Any]]:
    """The figures of each window: calls/s, server CPU per call and p99, each beside
    the baseline's; with ``targets``, calls/s and CPU against ``goals`` (ratios) at
    ``goal_windows``, p99 at most the baseline's at every window."""
    for window in windows:
        mine = [runs[window] for runs in ours]
        ref = [runs[window] for runs in theirs]
        p50 = [_ms(percentile(r.latencies, 0.5)) for r in mine]
        p99 = [_ms(percentile(r.latencies, 0.99)) for r in mine]
        ref_p50 = [_ms(percentile(r.latencies, 0.5)) for r in ref]
        ref_p99 = [_ms(percentile(r.latencies, 0.99)) for r in ref]
        cpu = _median([r.per_call_us(r.server_cpu) for r in mine])
        ref_cpu = _median([r.per_call_us(r.server_cpu) for r in ref])
        counts = {
            "concurrency": window,
            "protocol": ERAS[era],
            "client": CLIENT,
            "server_cpu_us_per_call": cpu,
            "baseline_server_cpu_us_per_call": ref_cpu,
            "cpu_ratio": None if not (cpu and ref_cpu) else round(cpu / ref_cpu, 3),
            "server_cores": _median([r.server_cpu / r.elapsed for r in mine], 2),
            "baseline_server_cores": _median([r.server_cpu / r.elapsed for r in ref], 2),
            "client_cpu_us_per_call": _median([r.per_call_us(r.client_cpu) for r in mine]),
            "baseline_client_cpu_us_per_call": _median([r.per_call_us(r.client_cpu) for r in ref]),
            "sessions": max(sizes.sessions, window),
            "seconds": sizes.seconds,
            "calls": sum(len(r.latencies) for r in mine),
            "baseline_calls": sum(len(r.latencies) for r in ref),
            "errors": sum(r.errors for r in mine),
            "baseline_errors": sum(r.errors for r in ref),
            "out_of_order": sum(r.out_of_order for r in mine),
            "baseline_out_of_order": sum(r.out_of_order for r in ref),
            "reconnects": sum(r.reconnects for r in mine),
            "baseline_reconnects": sum(r.reconnects for r in ref),
        }
        bad = counts["errors"] or counts["out_of_order"]
        line = figure(
            f"{prefix}_c{window}",
            "calls/s",
            [r.rate for r in mine],
            baseline=baseline,
            baseline_runs=[r.rate for r in ref],
            target=Target("ratio", ">=", goals[0]) if targets and window in goal_windows else None,
            p50_ms=statistics.median(p50),
            p99_ms=statistics.median(p99),
            baseline_p50_ms=statistics.median(ref_p50),
            baseline_p99_ms=statistics.median(ref_p99),
            **counts,
        )
        line["ok"] = line["ok"] and not bad
        yield line
        line = figure(
            f"{prefix}_c{window}_cpu",
            "server CPU µs/call",
            [r.per_call_us(r.server_cpu) for r in mine],
            baseline=baseline,
            baseline_runs=[r.per_call_us(r.server_cpu) for r in ref],
            target=Target("ratio", "<=", goals[1]) if targets and window in goal_windows else None,
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
            target=Target("ratio", "<=", 1) if targets else None,
            p50_ms=statistics.median(p50),
            baseline_p50_ms=statistics.median(ref_p50),
            **counts,
        )
        line["ok"] = line["ok"] and not bad
        yield line


def alternate(
    runs: int,
    ours: Sequence[str],
    theirs: Sequence[str],
    era: str,
    sizes: Sizes,
    windows: Sequence[int] = CONCURRENCY,
) -> tuple[list[dict[int, Run]], list[dict[int, Run]]]:
    """``runs`` runs of each server, alternately (so a noisy neighbour weighs on both)."""
    mine: list[dict[int, Run]] = []
    reference: list[dict[int, Run]] = []
    for _ in range(runs):
        mine.append(trio.run(server_runs, ours, era, sizes, windows))
        reference.append(trio.run(server_runs, theirs, era, sizes, windows))
    return mine, reference


def era_figures(era: str, options: Options, sizes: Sizes) -> Iterator[dict[str, Any]]:
    """triact beside the SDK's server, in ``era``."""
    ours, theirs = alternate(options.runs, TRIACT, REFERENCE, era, sizes)
    baseline = REFERENCE_NAME.format(*versions()) + f", protocol {ERAS[era]}"
    yield from lines_for(f"http_{era}", era, ours, theirs, baseline, sizes, targets=True)


def ts_figures(options: Options, sizes: Sizes) -> Iterator[dict[str, Any]]:
    """triact beside the official TypeScript SDK's streamable HTTP server (handshake
    era, the only one it speaks) at C = 16 and 256: at least its calls/s, with less
    server CPU per call and a lower p99."""
    command = ts_command("http_server.mjs", "mcp_http")
    if command is None:
        return
    if not options.quick:
        sizes = attrs.evolve(sizes, warmup_calls=TS_WARMUP_CALLS)
    ours, theirs = alternate(options.runs, TRIACT, command, "handshake", sizes, TS_CONCURRENCY)
    baseline = TS_NAME.format(*ts_versions(command)) + f", protocol {HANDSHAKE}"
    yield from lines_for(
        "http_ts_sdk_handshake",
        "handshake",
        ours,
        theirs,
        baseline,
        sizes,
        targets=True,
        windows=TS_CONCURRENCY,
        goals=(1, 1),
        goal_windows=TS_CONCURRENCY,
    )


def floor_figures(options: Options, sizes: Sizes) -> Iterator[dict[str, Any]]:
    """The floor: the least an MCP answer takes (``baselines/floor_asgi.py``) on
    Hypercorn's Trio worker, and in a bare h11 loop on Trio, each beside the same app
    on uvicorn; what each HTTP server costs."""
    uvicorn = (*FLOOR, "uvicorn")
    baseline = f"the same ASGI app on uvicorn {versions()[1]} (asyncio, h11)"
    for name, server in (
        ("floor_triact_h11", "triact"),
        ("floor_hypercorn", "hypercorn"),
        ("floor_h11_trio", "h11"),
    ):
        ours, theirs = alternate(options.runs, (*FLOOR, server), uvicorn, "handshake", sizes)
        yield from lines_for(name, "handshake", ours, theirs, baseline, sizes, targets=False)


# -- the profile -------------------------------------------------------------------

#: Where a function's own time is counted, by the path of its file.
_PARTS = (
    ("triact's HTTP server", "/triact/transport/_h11server.py"),
    ("hypercorn", "/hypercorn/"),
    ("h11", "/h11/"),
    ("triact", "/triact/"),
    ("trio", "/trio/"),
    ("json", "/json/"),
)


#: Whose time: the cumulative time of a few functions, by (path suffix, name). The app's
#: time includes the Hypercorn sends it awaits; they are taken out of it.
_WHO = (
    ("Hypercorn: reading, parsing requests", "hypercorn/trio/tcp_server.py", "run"),
    ("Hypercorn: sending answers", "hypercorn/protocol/http_stream.py", "app_send"),
    ("Hypercorn: keep-alive timer", "hypercorn/trio/worker_context.py", "restart"),
    ("triact's server: connection loop, app included", "transport/_h11server.py", "_serve"),
    ("triact's server: sending answers", "transport/_h11server.py", "_send"),
    ("triact: the ASGI app, sends excluded", "triact/transport/_http.py", "__call__"),
    ("triact: tool calls, sessions included", "triact/transport/_calls.py", "_work"),
)


def _who(raw: dict[Any, Any], total: float, calls: int) -> None:
    cumulative: dict[str, float] = {}
    for label, suffix, name in _WHO:
        cumulative[label] = sum(
            values[3]
            for (file, _, function), values in raw.items()
            if function == name and file.endswith(suffix)
        )
    cumulative["triact: the ASGI app, sends excluded"] -= (
        cumulative["Hypercorn: sending answers"] + cumulative["triact's server: sending answers"]
    )
    print("  by whose code it ran in (cumulative):", file=sys.stderr)
    for label, seconds in cumulative.items():
        print(
            f"    {label:40} {seconds / total:6.1%}  {seconds / calls * 1e6:7.1f} µs/call",
            file=sys.stderr,
        )


def profile(path: str, era: str, sizes: Sizes) -> None:
    """Run triact's server under cProfile (CPU time, the measured window only) at
    C = 16; print on stderr its own time per call by part (Hypercorn, h11, triact,
    Trio, JSON, the rest) and its top functions."""
    command = (sys.executable, str(HERE / "_profiled.py"), path, *TRIACT[2:])

    async def one() -> Run:
        async with running(command) as server:

            def signal_server(opened: bool) -> None:
                server.process.send_signal(signal.SIGUSR1 if opened else signal.SIGUSR2)

            return await measure(server, era, 16, sizes, signal_server)

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
            part = "epoll" if "poll" in name else "stdlib and builtins"
        parts[part] += tottime
    print(
        f"C=16 {era} under cProfile (CPU time): {run.rate:,.0f} calls/s, {calls:,} calls "
        f"measured; {total / calls * 1e6:.0f} µs of profiled CPU per call "
        f"(server CPU without the profiler's cost: see the benchmark's lines)",
        file=sys.stderr,
    )
    print("  by the package its own time was spent in:", file=sys.stderr)
    for part, seconds in sorted(parts.items(), key=lambda item: -item[1]):
        print(
            f"    {part:40} {seconds / total:6.1%}  {seconds / calls * 1e6:7.1f} µs/call",
            file=sys.stderr,
        )
    _who(raw, total, calls)
    stats.sort_stats("tottime").print_stats(30)


def main(argv: list[str] | None = None) -> None:
    pick = argparse.ArgumentParser(add_help=False)
    pick.add_argument("--era", choices=list(ERAS))
    pick.add_argument("--no-floor", action="store_true")
    pick.add_argument("--only", choices=("sdk", "ts", "floor"))
    pick.add_argument("--profile", metavar="PATH")
    pick.add_argument("--server", choices=("h11", "hypercorn"))
    picked, rest = pick.parse_known_args(argv)
    if picked.server is not None:
        global TRIACT
        TRIACT = (*TRIACT, "--server", picked.server)
    options = parse_options(
        "triact serve --http beside the official MCP SDK's streamable HTTP server on "
        "uvicorn and the TypeScript SDK's; prints JSON lines. --era handshake|stateless "
        "runs one protocol era; --no-floor skips the bare HTTP servers' floor; --only "
        "sdk|ts|floor runs one comparison; --server h11|hypercorn picks triact's HTTP "
        "server; "
        "--profile PATH runs triact's server under cProfile at C=16 instead.",
        rest,
    )
    sizes = QUICK if options.quick else FULL
    if picked.profile:
        profile(picked.profile, picked.era or "handshake", sizes)
        return
    if picked.only in (None, "sdk"):
        for era in ERAS:
            if picked.era in (None, era):
                for line in era_figures(era, options, sizes):
                    emit(line)
    if picked.only in (None, "ts") and picked.era in (None, "handshake"):
        for line in ts_figures(options, sizes):
            emit(line)
    if picked.only == "floor" or (picked.only is None and not picked.no_floor):
        for line in floor_figures(options, sizes):
            emit(line)


if __name__ == "__main__":
    main()
