"""``notifications/cancelled`` across ``triact serve --http`` processes on one Redis:
a cancellation sent to one process cancels the call wherever it runs, also when it
gets there before the call does, and never another principal's call. Node A reaches
Redis through a gate that holds its requests at a chosen point, so that its call is
caught mid-way. A process that cannot listen to the others still serves, and listens
again once Redis is back."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import httpx
import pytest
import trio

import triact
from triact.transport import open_http_app

from .._redis import RedisGate, RedisPlace, RedisServer
from ._http_server import ACCEPT, Process, initialize_body, serve_process

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef0"
KEPT = b"received by another process: not running here"


@attrs.frozen
class Nodes:
    a: Process  # reaches Redis through the gate
    b: Process
    gate: RedisGate
    place: RedisPlace


@pytest.fixture
async def nodes(tmp_path: Path, redis_place: RedisPlace) -> AsyncIterator[Nodes]:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice {ALICE}\nbob {BOB}\n")
    tokens.chmod(0o600)
    common = [
        "--tokens",
        str(tokens),
        "--secret-key-file",
        str(tmp_path / "redis.key"),
        "--log-level",
        "info",
    ]
    address = urlsplit(redis_place.url)
    assert address.hostname is not None
    assert address.port is not None
    gate = RedisGate(address.hostname, address.port)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(gate.serve)
        through_gate = f"redis://127.0.0.1:{port}/0?prefix={redis_place.prefix}"
        direct = f"{redis_place.url}?prefix={redis_place.prefix}"
        async with (
            serve_process("--store", through_gate, *common, env=home(tmp_path, "a")) as a,
            serve_process("--store", direct, *common, env=home(tmp_path, "b")) as b,
        ):
            yield Nodes(a, b, gate, redis_place)
        nursery.cancel_scope.cancel()


def home(tmp_path: Path, name: str) -> dict[str, str]:
    path = tmp_path / name
    path.mkdir()
    return {**os.environ, "HOME": str(path), "XDG_STATE_HOME": str(path / "state")}


async def open_session(client: httpx.AsyncClient, url: str, token: str) -> dict[str, str]:
    """An MCP session opened through ``url``: the headers of its requests."""
    auth = {**ACCEPT, "authorization": f"Bearer {token}"}
    started = await client.post(url, json=initialize_body(), headers=auth)
    assert started.status_code == 200, started.text
    headers = {
        **auth,
        "mcp-session-id": started.headers["mcp-session-id"],
        "mcp-protocol-version": "2025-11-25",
    }
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await client.post(url, json=note, headers=headers)).status_code == 202
    return headers


def tool_call(request_id: Any, name: str, **arguments: Any) -> dict[str, Any]:
    params = {"name": name, "arguments": arguments}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


def cancel(request_id: Any) -> dict[str, Any]:
    params = {"requestId": request_id, "reason": "no longer needed"}
    return {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params}


async def tool(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], name: str, **arguments: Any
) -> dict[str, Any]:
    response = await client.post(url, json=tool_call(99, name, **arguments), headers=headers)
    result: dict[str, Any] = response.json()["result"]
    assert not result["isError"], result
    structured: dict[str, Any] = result["structuredContent"]
    return structured


async def wait_for(process: Process, text: bytes, count: int = 1) -> None:
    with trio.fail_after(20):
        while bytes(process.stderr).count(text) < count:  # noqa: ASYNC110 (another process)
            await trio.sleep(0.01)


def cancelled_without_answer(response: httpx.Response) -> None:
    """The POST of a cancelled call: an SSE stream that ends with no message."""
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.content == b""


async def test_cancellations_reach_the_call_on_any_node_and_only_its_principals(
    nodes: Nodes,
) -> None:
    # One pair of processes for the three cases: starting them is most of the time.
    await a_cancellation_sent_to_one_node_cancels_the_call_running_on_another(nodes)
    await a_cancellation_that_gets_to_the_cluster_before_its_call_cancels_it(nodes)
    await another_principal_cannot_cancel_a_call(nodes)


async def a_cancellation_sent_to_one_node_cancels_the_call_running_on_another(
    nodes: Nodes,
) -> None:
    a, b = nodes.a.url, nodes.b.url
    async with httpx.AsyncClient(timeout=30) as client:
        alice = await open_session(client, b, ALICE)
        session_id = (await tool(client, b, alice, "session_create"))["session_id"]
        nodes.gate.hold(session_id.encode())  # node A's look-up of the session waits
        responses: list[httpx.Response] = []

        async def call_through_a() -> None:
            update = tool_call("c", "session_update", session_id=session_id, set={"x": 1})
            responses.append(await client.post(a, json=update, headers=alice))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call_through_a)
            with trio.fail_after(20):
                await nodes.gate.held.wait()
            assert (await client.post(b, json=cancel("c"), headers=alice)).status_code == 202
            with trio.fail_after(20):
                while not responses:  # noqa: ASYNC110 (another process)
                    await trio.sleep(0.01)
        nodes.gate.release()
        cancelled_without_answer(responses[0])
        await wait_for(nodes.a, b"request 'c' (session_update) was cancelled; not answered")
        for url in (b, a):  # A serves again once its Redis answers; nothing changed
            state = (await tool(client, url, alice, "session_get", session_id=session_id))[
                "session"
            ]
            assert (state["version"], state["data"]) == (1, {})


async def a_cancellation_that_gets_to_the_cluster_before_its_call_cancels_it(
    nodes: Nodes,
) -> None:
    a, b = nodes.a.url, nodes.b.url
    async with httpx.AsyncClient(timeout=30) as client:
        alice = await open_session(client, b, ALICE)
        session_id = (await tool(client, b, alice, "session_create"))["session_id"]
        # Node A has not seen this MCP session: reading its record waits, before the
        # call is known there.
        nodes.gate.hold(alice["mcp-session-id"].encode())
        responses: list[httpx.Response] = []

        async def call_through_a() -> None:
            update = tool_call(5, "session_update", session_id=session_id, increment={"n": 1})
            responses.append(await client.post(a, json=update, headers=alice))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call_through_a)
            with trio.fail_after(20):
                await nodes.gate.held.wait()
            assert (await client.post(b, json=cancel(5), headers=alice)).status_code == 202
            await wait_for(nodes.a, KEPT)  # A keeps it for the call still to come
            nodes.gate.release()
        cancelled_without_answer(responses[0])
        assert b"request 5 (session_update) was cancelled; not run" in nodes.a.stderr
        state = (await tool(client, a, alice, "session_get", session_id=session_id))["session"]
        assert (state["version"], state["data"]) == (1, {})
        # The same request id of another MCP session is another request.
        other = await open_session(client, b, ALICE)
        again = tool_call(5, "session_update", session_id=session_id, increment={"n": 1})
        answer = await client.post(a, json=again, headers=other)
        assert answer.json()["result"]["structuredContent"]["version"] == 2


async def another_principal_cannot_cancel_a_call(nodes: Nodes) -> None:
    a, b = nodes.a.url, nodes.b.url
    async with httpx.AsyncClient(timeout=30) as client:
        alice = await open_session(client, b, ALICE)
        bob = await open_session(client, b, BOB)
        session_id = (await tool(client, b, alice, "session_create"))["session_id"]
        nodes.gate.hold(session_id.encode())
        responses: list[httpx.Response] = []
        kept = bytes(nodes.a.stderr).count(KEPT)
        cancelled = bytes(nodes.a.stderr).count(b"cancelling request")

        async def call_through_a() -> None:
            update = tool_call("c", "session_update", session_id=session_id, increment={"n": 1})
            responses.append(await client.post(a, json=update, headers=alice))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call_through_a)
            with trio.fail_after(20):
                await nodes.gate.held.wait()
            # Alice's MCP session id with Bob's token: no such session, for Bob.
            stolen = {**bob, "mcp-session-id": alice["mcp-session-id"]}
            assert (await client.post(b, json=cancel("c"), headers=stolen)).status_code == 404
            # Bob's own MCP session's request "c" is not Alice's.
            assert (await client.post(b, json=cancel("c"), headers=bob)).status_code == 202
            # A forged broadcast naming Alice's MCP session as Bob's is not hers either.
            forged = {
                "session": alice["mcp-session-id"],
                "principal": "bob",
                "request": "c",
                "reason": None,
            }
            with nodes.place.client() as redis:
                assert redis.publish(f"{nodes.place.prefix}cancel", json.dumps(forged)) == 2
            await wait_for(nodes.a, KEPT, count=kept + 2)
            nodes.gate.release()
        (response,) = responses
        assert response.json()["result"]["structuredContent"]["version"] == 2
        assert bytes(nodes.a.stderr).count(b"cancelling request") == cancelled


async def test_an_app_that_cannot_listen_to_other_processes_serves_and_says_so(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = triact.RedisStore(f"{private_redis.url}?timeout=0.5")
    async with triact.open_session_manager(triact.SessionConfig(store=store)) as manager:
        private_redis.stop()  # gone between the store's opening and the app's
        with caplog.at_level(logging.WARNING, logger="triact.transport"):
            async with open_http_app(manager) as app:
                assert not app.closing
    (record,) = [r for r in caplog.records if r.name == "triact.transport"]
    assert "notifications/cancelled from other processes do not reach this one" in (
        record.getMessage()
    )
    assert "could not connect" in record.getMessage()


async def test_an_app_listens_to_other_processes_again_once_redis_is_back(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = triact.RedisStore(f"{private_redis.url}?timeout=0.5")
    other = triact.RedisStore(f"{private_redis.url}?timeout=0.5")
    cancel = {"session": "s" * 22, "principal": None, "request": 7, "reason": None}
    async with triact.open_session_manager(triact.SessionConfig(store=store)) as manager:
        private_redis.stop()
        with caplog.at_level(logging.INFO, logger="triact.transport"):
            async with open_http_app(manager) as app:
                assert not app.closing
                await trio.to_thread.run_sync(private_redis.start)
                async with other.open():
                    # Sent again until heard: what is published before the app
                    # listens again is lost.
                    with trio.fail_after(20):
                        while KEPT.decode() not in caplog.text:
                            await other.broadcast("cancel", json.dumps(cancel))
                            await trio.sleep(0.1)
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    logged = [m for m in logged if "notifications/cancelled" in m]
    assert "do not reach this one" in logged[0]
    assert logged[1] == "notifications/cancelled from other processes reach this one again"
