"""The HTTP app (``open_http_app``) on triact's h11 server (or Hypercorn's Trio worker)
on a free loopback port, in the test's own Trio run, and ``triact serve --http`` as a
subprocess."""

from __future__ import annotations

import re
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Literal

import attrs
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

import triact
from triact.transport import (
    SESSION_TOOLS,
    HttpOptions,
    McpHttpApp,
    ServerOptions,
    ToolSet,
    open_http_app,
)
from triact.transport._h11server import HttpServerOptions, serve_http

from ._sdk import SERVE

MCP_NAMESPACE = "mcp-session"
ACCEPT = {"accept": "application/json, text/event-stream"}
STATELESS_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "tests", "version": "0"},
}


@attrs.define
class Served:
    """A running app: its URL, the app, and the session ids it handed out."""

    url: str
    app: McpHttpApp
    session_ids: list[str] = attrs.Factory(list)


@asynccontextmanager
async def http_server(
    manager: triact.SessionManager,
    tools: ToolSet = SESSION_TOOLS,
    options: ServerOptions | None = None,
    http: HttpOptions | None = None,
    keep_alive: float | None = None,
    server: Literal["h11", "hypercorn"] = "h11",
) -> AsyncIterator[Served]:
    """The app at ``/mcp`` on a free loopback port, on triact's h11 server (what
    ``triact serve --http`` runs by default) or Hypercorn's."""
    stop = trio.Event()
    async with (
        open_http_app(manager, tools, options, http) as app,
        trio.open_nursery() as nursery,
    ):
        served = Served("", app)

        async def recording(scope: Any, receive: Any, send: Any) -> None:
            async def send_recorded(event: Any) -> None:
                if event["type"] == "http.response.start":
                    for name, value in event.get("headers", []):
                        if name.lower() == b"mcp-session-id":
                            served.session_ids.append(value.decode())
                await send(event)

            await app(scope, receive, send_recorded)

        if server == "hypercorn":
            config = Config()
            config.bind = ["127.0.0.1:0"]
            config.accesslog = None
            if keep_alive is not None:
                config.keep_alive_timeout = keep_alive
            run = partial(serve, recording, config, shutdown_trigger=stop.wait)
        else:
            settings = HttpServerOptions(keep_alive=keep_alive or 5.0)
            run = partial(serve_http, recording, "127.0.0.1", 0, settings, stop=stop)
        binds = await nursery.start(run)
        served.url = f"{binds[0]}/mcp"
        yield served
        stop.set()


def stateless_headers(method: str, name: str | None = None) -> dict[str, str]:
    headers = {**ACCEPT, "mcp-protocol-version": "2026-07-28", "mcp-method": method}
    if name is not None:
        headers["mcp-name"] = name
    return headers


def stateless_call(name: str, arguments: Mapping[str, Any], request_id: int = 1) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": dict(arguments), "_meta": STATELESS_META},
    }


def initialize_body(request_id: int = 1) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"},
        },
    }


@attrs.define
class Process:
    """A ``triact serve --http`` subprocess: its URL and what it wrote to stderr."""

    process: trio.Process
    url: str
    stderr: bytearray


@asynccontextmanager
async def serve_process(*args: str, env: Mapping[str, str] | None = None) -> AsyncIterator[Process]:
    """``triact serve --http 127.0.0.1:0 *args``; killed if still running at the end."""
    async with serve_processes([env], *args) as (process,):
        yield process


@asynccontextmanager
async def serve_processes(
    envs: Sequence[Mapping[str, str] | None], *args: str
) -> AsyncIterator[list[Process]]:
    """One ``triact serve --http 127.0.0.1:0 *args`` per environment of ``envs``,
    started together; those still running at the end are killed."""
    processes: list[trio.Process] = []
    try:
        for env in envs:
            processes.append(
                await trio.lowlevel.open_process(
                    [*SERVE, "--http", "127.0.0.1:0", *args], stderr=subprocess.PIPE, env=env
                )
            )
        served: list[Process] = []
        with trio.fail_after(60):
            for process in processes:
                served.append(await _listening(process))
        async with trio.open_nursery() as nursery:
            for one in served:
                assert one.process.stderr is not None
                nursery.start_soon(_drain, one.process.stderr, one.stderr)
            yield served
            nursery.cancel_scope.cancel()
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def _listening(process: trio.Process) -> Process:
    """The server once it says where it listens (what it wrote up to then kept)."""
    assert process.stderr is not None
    seen = bytearray()
    while b"/mcp\n" not in seen:
        chunk = await process.stderr.receive_some(4096)
        assert chunk, seen.decode(errors="replace")
        seen += chunk
    found = re.search(rb"MCP over HTTP at (\S+/mcp)", seen)
    assert found is not None, seen
    return Process(process, found.group(1).decode(), seen)


async def _drain(stream: trio.abc.ReceiveStream, into: bytearray) -> None:
    while chunk := await stream.receive_some(65536):
        into += chunk
