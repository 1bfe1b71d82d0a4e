"""``triact serve --http`` as real processes: two on one SQLite file serve one client's
MCP session, the HTTP flags, and a graceful stop under load."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import mcp
import pytest
import trio

from triact.transport._http import RECORD_FRESH

from ._http_server import (
    ACCEPT,
    STATELESS_META,
    initialize_body,
    serve_process,
    stateless_headers,
)
from ._sdk import SERVE

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGTERM")


def environment(tmp_path: Path, name: str) -> dict[str, str]:
    home = tmp_path / name
    home.mkdir(exist_ok=True)
    return {**os.environ, "HOME": str(home), "XDG_STATE_HOME": str(home / "state")}


def tool_call(request_id: int, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }


def result_of(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    assert result["isError"] is False, result
    structured: dict[str, Any] = result["structuredContent"]
    return structured


async def test_two_processes_on_one_store_serve_one_mcp_session(tmp_path: Path) -> None:
    store = f"sqlite:{tmp_path / 'shared.db'}"
    async with (
        serve_process("--store", store, env=environment(tmp_path, "a")) as one,
        serve_process("--store", store, env=environment(tmp_path, "b")) as two,
        httpx.AsyncClient(timeout=30) as client,
    ):
        started = await client.post(one.url, json=initialize_body(), headers=ACCEPT)
        assert started.status_code == 200
        headers = {
            **ACCEPT,
            "mcp-session-id": started.headers["mcp-session-id"],
            "mcp-protocol-version": "2025-11-25",
        }
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert (await client.post(two.url, json=note, headers=headers)).status_code == 202
        # The default session, made through one process, is the session's on both.
        made = result_of(
            await client.post(
                one.url, json=tool_call(2, "session_update", {"set": {"n": 0}}), headers=headers
            )
        )
        for i in range(6):
            url = (one.url, two.url)[i % 2]
            bump = tool_call(10 + i, "session_update", {"increment": {"n": 1}})
            assert (
                result_of(await client.post(url, json=bump, headers=headers))["data"]["n"] == i + 1
            )
        seen = result_of(
            await client.post(two.url, json=tool_call(3, "session_get", {}), headers=headers)
        )
        assert seen["session"]["session_id"] == made["session_id"]
        assert seen["session"]["data"] == {"n": 6}
        # Ended through the other process, it is gone for both: at once for the one
        # that ended it (and for a DELETE anywhere), within RECORD_FRESH seconds for
        # the other, which may have read its record just before.
        assert (await client.delete(two.url, headers=headers)).status_code == 200
        ping = {"jsonrpc": "2.0", "id": 4, "method": "ping"}
        ended = trio.current_time()
        assert (await client.post(two.url, json=ping, headers=headers)).status_code == 404
        while (await client.post(one.url, json=ping, headers=headers)).status_code == 200:
            assert trio.current_time() - ended < RECORD_FRESH
            await trio.sleep(RECORD_FRESH / 20)
        assert (await client.post(one.url, json=ping, headers=headers)).status_code == 404
        assert (await client.delete(one.url, headers=headers)).status_code == 404
        # Its default session ended with it.
        other = await client.post(one.url, json=initialize_body(), headers=ACCEPT)
        headers["mcp-session-id"] = other.headers["mcp-session-id"]
        got = await client.post(
            one.url,
            json=tool_call(5, "session_get", {"session_id": made["session_id"]}),
            headers=headers,
        )
        assert got.json()["result"]["isError"] is True


async def test_a_keep_alive_connection_outlives_hypercorns_default_1000_requests(
    tmp_path: Path,
) -> None:
    listing = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/list",
        "params": {"_meta": STATELESS_META},
    }
    headers = stateless_headers("tools/list")
    async with (
        serve_process("--store", "memory", env=environment(tmp_path, "a")) as served,
        httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=1)) as client,
    ):
        for _ in range(1_001):
            response = await client.post(served.url, json=listing, headers=headers)
            assert response.status_code == 200, response.text
            # Hypercorn's default would close the connection with the 1,000th answer.
            assert response.headers.get("connection") != "close"
            assert "server" not in response.headers


async def test_allow_origin_and_the_body_limit_from_the_command_line(tmp_path: Path) -> None:
    async with (
        serve_process(
            "--store",
            "memory",
            "--allow-origin",
            "https://app.example",
            "--allow-origin",
            "https://other.example:8443",
            "--max-body-bytes",
            "2048",
            "--log-level",
            "info",
            env=environment(tmp_path, "a"),
        ) as served,
        httpx.AsyncClient(timeout=30) as client,
    ):
        for origin, status in [
            ("https://app.example", 200),
            ("https://other.example:8443", 200),
            ("https://other.example", 403),
            ("https://evil.example", 403),
        ]:
            response = await client.post(
                served.url, json=initialize_body(), headers={**ACCEPT, "origin": origin}
            )
            assert response.status_code == status, origin
        # Its log names the transport it serves (it said stdio).
        assert b"serving MCP on HTTP; store: memory" in served.stderr
        assert b"stdio" not in served.stderr
        big = await client.post(
            served.url,
            content=b" " * 4096,
            headers={**ACCEPT, "content-type": "application/json"},
        )
        assert big.status_code == 413


# httpx leaves the body iterator of a request the stopping server refused unclosed.
@pytest.mark.filterwarnings(
    r"ignore:Exception ignored in. <async_generator object ByteStream\.__aiter__"
    ":pytest.PytestUnraisableExceptionWarning"
)
async def test_sigterm_finishes_the_calls_in_flight_then_exits_0(tmp_path: Path) -> None:
    """Under a burst of calls, SIGTERM stops the server gracefully: the calls it was
    running are answered and flushed to the store, it exits 0, and the store holds every
    answered change. (A request whose connection the stopping server closed has an
    unknown outcome: Hypercorn closes idle keep-alive connections on shutdown, and one
    whose next request had just arrived may have been read.)"""
    store = f"sqlite:{tmp_path / 'db.sqlite'}"
    env = environment(tmp_path, "a")
    answered = unknown = 0
    async with (
        serve_process("--store", store, env=env) as served,
        httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64)) as client,
    ):
        started = await client.post(served.url, json=initialize_body(), headers=ACCEPT)
        headers = {**ACCEPT, "mcp-session-id": started.headers["mcp-session-id"]}
        session_id = result_of(
            await client.post(served.url, json=tool_call(2, "session_create", {}), headers=headers)
        )["session_id"]
        first = trio.Event()

        async def bump(i: int) -> None:
            nonlocal answered, unknown
            call = tool_call(
                100 + i, "session_update", {"session_id": session_id, "increment": {"n": 1}}
            )
            try:
                response = await client.post(served.url, json=call, headers=headers)
            except httpx.ConnectError:
                return  # not taken: the server had stopped accepting
            except httpx.TransportError:
                unknown += 1  # the connection closed with the request sent
                return
            if response.status_code == 503:
                return  # refused while stopping: not taken either
            result_of(response)
            answered += 1
            first.set()

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(bump, i)
            await first.wait()
            served.process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await served.process.wait() == 0
    assert answered >= 1
    # The store holds every answered change (and maybe those of unknown outcome).
    async with (
        serve_process("--store", store, env=env) as again,
        httpx.AsyncClient(timeout=30) as client,
    ):
        started = await client.post(again.url, json=initialize_body(), headers=ACCEPT)
        headers = {**ACCEPT, "mcp-session-id": started.headers["mcp-session-id"]}
        got = result_of(
            await client.post(
                again.url,
                json=tool_call(3, "session_get", {"session_id": session_id}),
                headers=headers,
            )
        )
    assert answered <= got["session"]["data"]["n"] <= answered + unknown


@pytest.mark.parametrize("server", ["h11", "hypercorn"])
async def test_either_server_serves_the_sdk_client_and_stops_on_sigterm(
    tmp_path: Path, server: str
) -> None:
    async with serve_process(
        "--store", "memory", "--server", server, env=environment(tmp_path, "a")
    ) as served:
        async with mcp.Client(served.url, mode="legacy") as client:
            made = await client.call_tool("session_create", {})
            assert not made.is_error
        served.process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await served.process.wait() == 0


async def test_max_connections_from_the_command_line(tmp_path: Path) -> None:
    async with serve_process(
        "--store",
        "memory",
        "--server",
        "h11",
        "--max-connections",
        "1",
        env=environment(tmp_path, "a"),
    ) as served:
        host, port = served.url.removeprefix("http://").removesuffix("/mcp").rsplit(":", 1)
        held = await trio.open_tcp_stream(host, int(port))
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                refused = await client.post(served.url, json=initialize_body(), headers=ACCEPT)
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
        finally:
            await held.aclose()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--allow-origin", "https://app.example"], "add --http"),
        (["--server", "h11"], "add --http"),
        (["--max-connections", "5"], "add --http"),
        (["--http", "127.0.0.1:0", "--server", "hypercorn", "--max-connections", "5"], "h11"),
    ],
)
def test_server_options_are_checked(options: list[str], message: str) -> None:
    done = subprocess.run(
        [*SERVE, "--store", "memory", *options],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert message in done.stderr


async def test_an_ipv6_bind_prints_its_real_address(tmp_path: Path) -> None:
    try:
        socket.socket(socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 here")
    # (serve_process gives --http 127.0.0.1:0 first; the last --http is the one taken.)
    async with (
        serve_process(
            "--store", "memory", "--http", "[::1]:0", env=environment(tmp_path, "a")
        ) as served,
        httpx.AsyncClient(timeout=30) as client,
    ):
        assert served.url.startswith("http://[::1]:")
        assert not served.url.startswith("http://[::1]:0/")
        started = await client.post(served.url, json=initialize_body(), headers=ACCEPT)
        assert started.status_code == 200
