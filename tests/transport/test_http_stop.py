"""A stopping ``triact serve --http`` answers the calls it cancels: a call still running
past the grace period is cancelled (it did not happen) and its client is told so, with
``closed``, rather than cut off with its connection (an unknown outcome)."""

from __future__ import annotations

import signal
import sys
from functools import partial
from typing import Any

import attrs
import httpx
import pytest
import trio

import triact
from triact._serve import _serve_http
from triact.transport import SESSION_TOOLS, ServerOptions, ToolSet

from .._redis import free_port
from ._http_server import stateless_call, stateless_headers

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGTERM")


def _tools(run: Any) -> ToolSet:
    health = SESSION_TOOLS.get("health_check")
    assert health is not None
    return SESSION_TOOLS | ToolSet([attrs.evolve(health, name="wait_forever", run=run)])


async def _until_serving(url: str) -> None:
    """Poll until the server answers (it binds in a task of its own); a real server
    on a real socket, so there is no clock to jump."""
    with trio.fail_after(30):
        while True:
            try:
                async with httpx.AsyncClient() as client:
                    await client.post(url, json={}, headers=stateless_headers("ping"))
                return
            except httpx.ConnectError:
                await trio.sleep(0.02)


async def test_a_call_past_the_grace_is_answered_closed(manager: triact.SessionManager) -> None:
    began = trio.Event()
    cancelled = False

    async def wait_forever(env: Any, args: Any) -> Any:
        nonlocal cancelled
        began.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled = True
            raise

    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    serve = partial(
        _serve_http,
        manager,
        _tools(wait_forever),
        ServerOptions(shutdown_grace=0.2),
        ("127.0.0.1", port),
    )
    answers: list[httpx.Response] = []
    async with httpx.AsyncClient(timeout=30) as client, trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        await _until_serving(url)

        async def call() -> None:
            answers.append(
                await client.post(
                    url,
                    json=stateless_call("wait_forever", {}, request_id=7),
                    headers=stateless_headers("tools/call", "wait_forever"),
                )
            )

        nursery.start_soon(call)
        with trio.fail_after(30):
            await began.wait()
        signal.raise_signal(signal.SIGTERM)  # taken by the server's signal receiver
    # The server has returned: it answered the call it cancelled before it stopped.
    assert cancelled
    [answer] = answers
    assert answer.status_code == 200
    body = answer.json()
    assert body["id"] == 7
    result = body["result"]
    assert result["isError"] is True
    error = result["_meta"]["triact/error"]
    assert error["code"] == "closed"
    assert "cancelled and nothing was done; retry it" in error["message"]
