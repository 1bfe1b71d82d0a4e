"""An MCP server written with the official MCP Python SDK (``MCPServer``), run on
Trio, whose tools keep their state in triact sessions.

The SDK is built on anyio, so it runs on Trio as it is: its Streamable HTTP app is
served here by Hypercorn's Trio worker. The triact ``SessionManager`` is opened in
the MCP server's lifespan, which the SDK enters once for the server's lifetime,
and tools reach it through their request context. Each counter is a triact
session; calls from any number of MCP clients to one counter are applied one at a
time by its actor.

    python examples/mcp_sdk_server.py --port 8000    # endpoint: http://127.0.0.1:8000/mcp

Tools: ``counter_create``, ``counter_add``, ``counter_get``, ``counter_end``. A triact
error (unknown counter, say) is a tool error whose message says what to do.

It prints ``ready http://HOST:PORT/mcp`` once it accepts connections (``--port 0``
picks a free port) and ``stopped`` once, after SIGINT or SIGTERM, the session
manager has shut down.
"""

from __future__ import annotations

import argparse
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypedDict, TypeVar

import attrs
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

import triact

T = TypeVar("T")


class Counter(TypedDict):
    session_id: str
    count: int
    version: int


@asynccontextmanager
async def lifespan(server: MCPServer[Any]) -> AsyncIterator[triact.SessionManager]:
    config = triact.SessionConfig(idle_ttl=3600.0, shutdown_grace=5.0)
    async with triact.open_session_manager(config) as sessions:
        yield sessions
    print("stopped", flush=True)


mcp: MCPServer[triact.SessionManager] = MCPServer(
    "triact-counters",
    instructions="Counters whose state lives in triact sessions.",
    lifespan=lifespan,
    log_level="WARNING",
)


async def on_session(
    ctx: Context[triact.SessionManager, Any],
    session_id: str,
    call: Callable[[triact.Session], Awaitable[T]],
) -> T:
    """``call(session)`` on the named session; triact's errors become tool errors."""
    sessions = ctx.request_context.lifespan_context
    try:
        return await call(await sessions.get_session(session_id))
    except triact.SessionError as exc:
        raise ToolError(str(exc)) from exc


def counter(state: triact.SessionState) -> Counter:
    return {"session_id": state.id, "count": state.data.get("count", 0), "version": state.version}


@mcp.tool()
async def counter_create(ctx: Context[triact.SessionManager, Any]) -> Counter:
    """Create a counter at 0; its session_id names it in the other tools."""
    session = await ctx.request_context.lifespan_context.create_session(topic="counter")
    return counter(await session.snapshot())


@mcp.tool()
async def counter_add(
    session_id: str, amount: int, ctx: Context[triact.SessionManager, Any]
) -> Counter:
    """Add ``amount`` to a counter; returns its new count and version."""

    def add(state: triact.SessionState) -> triact.SessionState:
        count = state.data.get("count", 0) + amount
        return attrs.evolve(state, data={**state.data, "count": count})

    return counter(await on_session(ctx, session_id, lambda session: session.update(add)))


@mcp.tool()
async def counter_get(session_id: str, ctx: Context[triact.SessionManager, Any]) -> Counter:
    """A counter's count and version."""
    return counter(await on_session(ctx, session_id, lambda session: session.snapshot()))


@mcp.tool()
async def counter_end(session_id: str, ctx: Context[triact.SessionManager, Any]) -> Counter:
    """End a counter; returns its final count."""
    return counter(await on_session(ctx, session_id, lambda session: session.end()))


async def until_signalled() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


async def main(host: str, port: int) -> None:
    app = mcp.streamable_http_app(json_response=True, host=host)
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.graceful_timeout = 5.0
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, app, config, shutdown_trigger=until_signalled))
        print(f"ready {binds[0]}/mcp", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    trio.run(main, args.host, args.port)
