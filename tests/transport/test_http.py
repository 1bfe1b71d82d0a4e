"""MCP over streamable HTTP (``triact.transport.open_http_app``) under Hypercorn's Trio
worker, driven by the official MCP SDK client and by raw HTTP."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import mcp
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

import triact
from triact.transport import SESSION_TOOLS, HttpOptions, open_http_app

from ._sdk import SERVE, SERVE_TOOL_NAMES

STATELESS_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "tests", "version": "0"},
}


@asynccontextmanager
async def http_server(
    manager: triact.SessionManager, http: HttpOptions | None = None
) -> AsyncIterator[str]:
    """The URL of ``/mcp`` on a Hypercorn server on a free loopback port."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    stop = trio.Event()
    async with (
        open_http_app(manager, SESSION_TOOLS, http=http) as app,
        trio.open_nursery() as nursery,
    ):
        binds = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
        yield f"{binds[0]}/mcp"
        stop.set()


@pytest.fixture
async def url(manager: triact.SessionManager) -> AsyncIterator[str]:
    async with http_server(manager) as url:
        yield url


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result
    content: dict[str, Any] = result.structured_content
    return content


@pytest.mark.parametrize("era", ["legacy", "2026-07-28"])
async def test_the_sdk_client_calls_tools_over_http(url: str, era: str) -> None:
    async with mcp.Client(url, mode=era) as client:
        tools = (await client.list_tools()).tools
        assert [tool.name for tool in tools] == list(SESSION_TOOLS.names)
        sid = structured(await client.call_tool("session_create", {"topic": "http"}))["session_id"]
        updated = structured(
            await client.call_tool("session_update", {"session_id": sid, "set": {"a": 1}})
        )
        assert updated["version"] == 2
        got = structured(await client.call_tool("session_get", {"session_id": sid}))
        assert got["session"]["data"] == {"a": 1}
        ended = structured(await client.call_tool("session_end", {"session_id": sid}))
        assert ended["ended"] is True
        missing = await client.call_tool("session_get", {"session_id": sid})
        assert missing.is_error


async def test_fifty_concurrent_sdk_calls_over_http(url: str) -> None:
    async with mcp.Client(url, mode="legacy") as client:
        sid = structured(await client.call_tool("session_create", {}))["session_id"]

        async def bump() -> None:
            await client.call_tool("session_update", {"session_id": sid, "increment": {"n": 1}})

        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(bump)
        got = structured(await client.call_tool("session_get", {"session_id": sid}))
        assert got["session"]["data"] == {"n": 50}
        assert got["session"]["version"] == 51


def initialize_body() -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"},
        },
    }


async def test_raw_http_sessions_and_refusals(manager: triact.SessionManager) -> None:
    async with http_server(manager, HttpOptions(max_body_bytes=64 * 1024)) as url:
        await raw_exchanges(url)


async def raw_exchanges(url: str) -> None:
    accept = {"accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient() as http:
        started = await http.post(url, json=initialize_body(), headers=accept)
        assert started.status_code == 200
        session_id = started.headers["mcp-session-id"]
        assert started.json()["result"]["protocolVersion"] == "2025-11-25"
        headers = {**accept, "mcp-session-id": session_id}
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert (await http.post(url, json=note, headers=headers)).status_code == 202
        listed = await http.post(
            url, json={"jsonrpc": "2.0", "id": "x", "method": "tools/list"}, headers=headers
        )
        assert listed.json()["id"] == "x"
        assert len(listed.json()["result"]["tools"]) == len(SESSION_TOOLS)

        unknown = await http.post(
            url,
            json={"jsonrpc": "2.0", "id": 2, "method": "ping"},
            headers={**accept, "mcp-session-id": "nope"},
        )
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == -32600
        foreign = await http.post(
            url, json=initialize_body(), headers={**accept, "origin": "https://evil.example"}
        )
        assert foreign.status_code == 403
        bad = await http.post(url, content=b"{not json", headers=accept)
        assert (bad.status_code, bad.json()["error"]["code"]) == (400, -32700)
        big = await http.post(url, content=b" " * (65 * 1024), headers=accept)
        assert big.status_code == 413
        assert (await http.get(url, headers=accept)).status_code == 405

        assert (await http.delete(url, headers=headers)).status_code == 200
        gone = await http.post(
            url, json={"jsonrpc": "2.0", "id": 3, "method": "ping"}, headers=headers
        )
        assert gone.status_code == 404


async def test_stateless_requests_need_no_session(url: str) -> None:
    async with httpx.AsyncClient() as http:
        body = {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {"name": "health_check", "arguments": {}, "_meta": STATELESS_META},
        }
        answer = await http.post(url, json=body)
    assert answer.status_code == 200
    assert answer.json()["id"] == 7
    assert answer.json()["result"]["structuredContent"]["status"] == "ok"


async def test_triact_serve_http_serves_until_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")}
    process = await trio.lowlevel.open_process(
        [*SERVE, "--http", "127.0.0.1:0", "--store", "memory"],
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stderr is not None
        seen = b""
        with trio.fail_after(30):
            while b"/mcp\n" not in seen:
                chunk = await process.stderr.receive_some(4096)
                assert chunk, seen
                seen += chunk
        url = re.search(rb"MCP over HTTP at (\S+/mcp)", seen).group(1).decode()  # type: ignore[union-attr]
        async with mcp.Client(url, mode="legacy") as client:
            names = [tool.name for tool in (await client.list_tools()).tools]
            assert names == SERVE_TOOL_NAMES
            started = await client.call_tool("session_start", {"working_directory": str(tmp_path)})
            assert structured(started)["created"] is True
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_triact_serve_http_refuses_a_host_beyond_loopback() -> None:
    done = subprocess.run(
        [*SERVE, "--http", "0.0.0.0:8765", "--store", "memory"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "only a loopback host" in done.stderr


async def test_serve_http_without_hypercorn_names_the_extra(
    manager: triact.SessionManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    from triact._serve import ServeStartError, _serve_http
    from triact.transport import ServerOptions

    monkeypatch.setitem(sys.modules, "hypercorn.trio", None)  # import fails
    with pytest.raises(ServeStartError, match="http extra"):
        await _serve_http(manager, SESSION_TOOLS, ServerOptions(), ("127.0.0.1", 0))
