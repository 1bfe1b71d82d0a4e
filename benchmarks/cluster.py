"""``triact serve --http --store redis://`` on one and three nodes beside the naive
shared-store baseline (the official MCP SDK's streamable HTTP server on uvicorn,
sessions in Redis by GET, change, SET: ``baselines/mcp_sdk_redis_server.py``) on one
and three processes, all on one private redis-server (AOF ``appendfsync everysec``),
in the same run, alternately.

The load is ``benchmarks/mcp_http.py``'s lean client in the stateless era: C callers,
each with one keep-alive connection to every node, calling ``session_update``
``{"increment": {"n": 1}}`` on one of S shared sessions picked at random (so updates
of one session overlap), sent to a node at random or, for triact's three nodes also,
by affinity (the session id's CRC-32 modulo the nodes, as a load balancer hashing the
session id would). After each cell every session is read: ``lost`` is the
acknowledged increments that its final count misses (0 for triact; the baseline loses
some whenever two updates of a session overlap), of ``acknowledged`` (warm-up
included; ``updates`` counts the measured window only).

Per cell: updates per second, the servers' CPU time per update (user + system of every
server process, from /proc, over the measured window; Redis's own is not counted),
p99 latency, errors (tool errors or failed requests) and lost updates.

    python benchmarks/cluster.py [--runs N] [--quick]
    python benchmarks/cluster.py --profile triact.prof  # one node under cProfile
    python benchmarks/cluster.py --only triact_1,naive_1  # some cells only
"""

from __future__ import annotations

import argparse
import math
import pstats
import random
import signal
import statistics
import sys
import tempfile
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import attrs
import trio
from _common import Target, cpu_seconds, emit, figure, parse_options, percentile
from mcp_http import (
    Connection,
    HttpError,
    Server,
    _call_headers,
    _params,
    open_mcp,
    running,
)
from shared_redis import start_redis

HERE = Path(__file__).resolve().parent
NAIVE = HERE / "baselines" / "mcp_sdk_redis_server.py"
BASELINE = (
    "official MCP SDK server (MCPServer.streamable_http_app, stateless, JSON responses, "
    "on uvicorn), sessions in Redis by GET, change, SET"
)
ERA = "stateless"


@attrs.frozen
class Sizes:
    seconds: float  # measured per cell, after the warm-up
    warmup: float
    sessions: int  # shared by all callers
    callers: int


FULL = Sizes(seconds=5.0, warmup=1.0, sessions=20, callers=16)
QUICK = Sizes(seconds=0.5, warmup=0.1, sessions=4, callers=4)


@attrs.define
class Cell:
    """One configuration's measurement."""

    updates: int = 0  # acknowledged in the measured window
    elapsed: float = math.nan
    server_cpu: float = math.nan
    latencies: list[float] = attrs.field(factory=list)
    errors: int = 0
    lost: int = 0  # acknowledged increments missing from the final counts
    acknowledged: int = 0  # increments acknowledged, warm-up included

    @property
    def rate(self) -> float:
        return self.updates / self.elapsed

    @property
    def cpu_us(self) -> float:
        return self.server_cpu / self.updates * 1e6 if self.updates else math.nan


def triact_command(url: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "triact", "serve", "--store", url, "--http", "127.0.0.1:0")


def naive_command(url: str) -> tuple[str, ...]:
    return (sys.executable, str(NAIVE), "--redis", url, "--http", "127.0.0.1:0")


async def _tool(connection: Connection, name: str, arguments: dict[str, Any]) -> Any:
    result = await connection.request(
        "tools/call", _params(ERA, name, arguments), 0, _call_headers(ERA, name)
    )
    if result.get("isError"):
        raise HttpError(f"{name}: {result}")
    return result["structuredContent"]


async def measure_cell(
    commands: Sequence[Sequence[str]],
    affinity: bool,
    sizes: Sizes,
    seed: int,
    on_window: Callable[[list[Server], bool], None] | None = None,
) -> Cell:
    """Start the servers, create the sessions, run the callers, read the counts."""
    cell = Cell()
    acked: dict[str, int] = {}
    async with AsyncExitStack() as stack:
        servers: list[Server] = [
            await stack.enter_async_context(running(command)) for command in commands
        ]
        first = await open_mcp(servers[0], ERA)
        stack.push_async_callback(first.aclose)
        sessions = [
            (await _tool(first, "session_create", {}))["session_id"] for _ in range(sizes.sessions)
        ]
        acked = dict.fromkeys(sessions, 0)
        callers = []
        for _ in range(sizes.callers):
            connections = [await open_mcp(server, ERA) for server in servers]
            for connection in connections:
                stack.push_async_callback(connection.aclose)
            callers.append(connections)
        await _load(cell, servers, callers, sessions, acked, affinity, sizes, seed, on_window)
        last = await open_mcp(servers[0], ERA)  # the first has been idle: it may be closed
        stack.push_async_callback(last.aclose)
        counts = [
            (await _tool(last, "session_get", {"session_id": s}))["session"] for s in sessions
        ]
        cell.acknowledged = sum(acked.values())
        cell.lost = cell.acknowledged - sum(int(c["data"].get("n", 0)) for c in counts)
    return cell


async def _load(
    cell: Cell,
    servers: list[Server],
    callers: list[list[Connection]],
    sessions: list[str],
    acked: dict[str, int],
    affinity: bool,
    sizes: Sizes,
    seed: int,
    on_window: Callable[[list[Server], bool], None] | None = None,
) -> None:
    measuring = False
    done = False
    clock = time.perf_counter
    headers = _call_headers(ERA, "session_update")
    home = {s: zlib.crc32(s.encode()) % len(servers) for s in sessions}

    async def loop(index: int, connections: list[Connection]) -> None:
        rng = random.Random(f"{seed}:{index}")
        k = 0
        while not done:
            k += 1
            session_id = sessions[rng.randrange(len(sessions))]
            node = home[session_id] if affinity else rng.randrange(len(connections))
            params = _params(
                ERA, "session_update", {"session_id": session_id, "increment": {"n": 1}}
            )
            sent = clock()
            counted = measuring
            try:
                result = await connections[node].request("tools/call", params, k, headers)
            except HttpError:
                result = None
            ok = result is not None and not result.get("isError")
            if ok:
                acked[session_id] += 1
            if counted and measuring:
                if ok:
                    cell.updates += 1
                    cell.latencies.append(clock() - sent)
                else:
                    cell.errors += 1

    async def window() -> None:
        nonlocal measuring, done
        await trio.sleep(sizes.warmup)
        if on_window is not None:
            on_window(servers, True)
        pids = [server.process.pid for server in servers]
        cpu = sum(cpu_seconds(pid) for pid in pids)
        begin = clock()
        measuring = True
        await trio.sleep(sizes.seconds)
        measuring = False
        cell.elapsed = clock() - begin
        cell.server_cpu = sum(cpu_seconds(pid) for pid in pids) - cpu
        if on_window is not None:
            on_window(servers, False)
        done = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(window)
        for index, connections in enumerate(callers):
            nursery.start_soon(loop, index, connections)


CELLS = ("triact_1", "naive_1", "triact_3_random", "triact_3_affinity", "naive_3")


def run_cells(
    url: str, sizes: Sizes, runs: int, cells: Sequence[str] = CELLS
) -> dict[str, list[Cell]]:
    """Every cell ``runs`` times, alternately, each on a key prefix of its own."""
    results: dict[str, list[Cell]] = {name: [] for name in CELLS}
    for run in range(runs):
        for name in cells:
            kind, nodes, *routing = name.split("_")
            place = f"{url}?prefix=cluster-bench-{run}-{name}:"
            command = triact_command(place) if kind == "triact" else naive_command(place)
            cell = trio.run(
                measure_cell, [command] * int(nodes), routing == ["affinity"], sizes, run
            )
            results[name].append(cell)
    return results


def _median(values: list[float]) -> float:
    return statistics.median(values)


def lines(results: dict[str, list[Cell]], sizes: Sizes) -> list[dict[str, Any]]:
    def rates(name: str) -> list[float]:
        return [cell.rate for cell in results[name]]

    def cpus(name: str) -> list[float]:
        return [cell.cpu_us for cell in results[name]]

    def about(name: str, prefix: str = "") -> dict[str, Any]:
        cells = results[name]
        return {
            f"{prefix}server_cpu_us_per_update": round(_median(cpus(name)), 1),
            f"{prefix}p99_ms": round(
                _median([percentile(c.latencies, 0.99) * 1000 for c in cells]), 2
            ),
            f"{prefix}errors": sum(c.errors for c in cells),
            f"{prefix}lost": sum(c.lost for c in cells),
            f"{prefix}acknowledged": sum(c.acknowledged for c in cells),
            f"{prefix}updates": sum(c.updates for c in cells),
        }

    shape = {"sessions": sizes.sessions, "callers": sizes.callers, "protocol": "2026-07-28"}
    one = "triact serve --http, 1 node"
    naive_1, naive_3 = f"{BASELINE}, 1 process", f"{BASELINE}, 3 processes, random routing"
    # name, unit, measured, baseline run and label, target, whether to describe each side
    table: list[tuple[str, str, str, str, str, Target | None, bool, bool]] = [
        ("cluster_1node", "updates/s", "triact_1", "naive_1", naive_1,
         Target("ratio", ">=", 3), True, True),
        ("cluster_1node_cpu", "server CPU µs/update", "triact_1", "naive_1", naive_1,
         Target("ratio", "<=", 1 / 3), False, False),
        ("cluster_3node_random", "updates/s", "triact_3_random", "naive_3", naive_3,
         Target("ratio", ">=", 3), True, True),
        ("cluster_3node_random_vs_1node", "updates/s", "triact_3_random", "triact_1", one,
         Target("ratio", ">=", 0.6), False, False),
        ("cluster_3node_affinity_vs_1node", "updates/s", "triact_3_affinity", "triact_1", one,
         Target("ratio", ">=", 0.8), True, False),
        ("cluster_3node_random_cpu", "server CPU µs/update", "triact_3_random", "triact_1", one,
         None, False, False),
    ]  # fmt: skip
    out = []
    for name, unit, mine, base, label, target, describe, describe_base in table:
        if not (results.get(mine) and results.get(base)):
            continue
        values = rates if unit == "updates/s" else cpus
        extra = {
            **(about(mine) if describe else {}),
            **(about(base, "baseline_") if describe_base else {}),
        }
        out.append(
            figure(
                name, unit, values(mine), baseline=label, baseline_runs=values(base),
                target=target, **shape, **extra,
            )
        )  # fmt: skip
    return out


#: Where the server's own time went, by the file a function is in (first match).
_PARTS = (
    ("hypercorn", "/hypercorn/"),
    ("h11", "/h11/"),
    ("glide", "/glide/"),
    ("triact's HTTP server", "/triact/transport/_h11server"),
    ("triact.transport", "/triact/transport/"),
    ("triact.sessions", "/triact/sessions/"),
    ("triact.actors", "/triact/actors/"),
    ("trio", "/trio/"),
    ("attrs, cattrs", "/attr"),
    ("json", "/json/"),
)


def profile(url: str, path: str, sizes: Sizes) -> None:
    """Run one triact node under cProfile (CPU time, the measured window only); print on
    stderr its own time per update by package and its top functions."""
    command = (
        sys.executable,
        str(HERE / "_profiled.py"),
        path,
        *triact_command(f"{url}?prefix=cluster-profile:")[2:],
    )

    def signal_server(servers: list[Server], opened: bool) -> None:
        servers[0].process.send_signal(signal.SIGUSR1 if opened else signal.SIGUSR2)

    Path(path).unlink(missing_ok=True)
    cell = trio.run(measure_cell, [command], False, sizes, 0, signal_server)
    if not Path(path).exists():
        raise SystemExit(f"the server wrote no profile to {path}")
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
    updates = cell.updates
    print(
        f"1 node under cProfile (CPU time): {cell.rate:,.0f} updates/s, {updates:,} updates "
        f"measured; {total / updates * 1e6:.0f} µs of profiled CPU per update",
        file=sys.stderr,
    )
    for part, seconds in sorted(parts.items(), key=lambda item: -item[1]):
        print(
            f"    {part:40} {seconds / total:6.1%}  {seconds / updates * 1e6:7.1f} µs/update",
            file=sys.stderr,
        )
    stats.sort_stats("tottime").print_stats(40)


def main(argv: list[str] | None = None) -> None:
    pick = argparse.ArgumentParser(add_help=False)
    pick.add_argument("--profile", metavar="PATH")
    pick.add_argument("--only", metavar="CELLS")
    picked, rest = pick.parse_known_args(argv)
    options = parse_options(
        "triact serve --http on 1 and 3 nodes on Redis beside the SDK's HTTP server with "
        "a Redis dict (GET, change, SET) on 1 and 3 processes; prints JSON lines. "
        "--profile PATH runs one triact node under cProfile instead; --only CELL,... "
        f"runs some cells only (of {', '.join(CELLS)}).",
        rest,
    )
    cells = CELLS if picked.only is None else tuple(picked.only.split(","))
    if unknown := set(cells) - set(CELLS):
        raise SystemExit(f"unknown cells: {', '.join(sorted(unknown))}")
    sizes = QUICK if options.quick else FULL
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as directory:
        redis_server, port = start_redis(Path(directory), "everysec")
        url = f"redis://127.0.0.1:{port}/0"
        try:
            if picked.profile:
                profile(url, picked.profile, sizes)
                return
            results = run_cells(url, sizes, options.runs, cells)
        finally:
            redis_server.terminate()
            redis_server.wait(timeout=10)
    for line in lines(results, sizes):
        emit(line)


if __name__ == "__main__":
    main()
