"""The HTTP transport's ASGI app mounted in a Starlette app, under Hypercorn's Trio
worker, for the official SDK client: what a program that embeds triact does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import httpx
import mcp
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import triact
from triact.transport import SESSION_TOOLS, open_http_app

from ._http_server import ACCEPT, initialize_body

ERAS = ["legacy", "2026-07-28"]

# The SDK client stops reading an SSE response at its answer without closing its
# iterators, which Trio reports when they are collected (see test_http.py).
pytestmark = pytest.mark.filterwarnings(
    r"ignore:Exception ignored in. <async_generator object "
    r"(EventSource|Response|HTTP11ConnectionByteStream|PoolByteStream)\."
    ":pytest.PytestUnraisableExceptionWarning"
)


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


@asynccontextmanager
async def starlette_server(manager: triact.SessionManager) -> AsyncIterator[str]:
    """A Starlette app with triact's MCP mounted at /sessions, on Hypercorn; its URL."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    stop = trio.Event()
    async with open_http_app(manager, SESSION_TOOLS) as mcp_app, trio.open_nursery() as nursery:
        app = Starlette(routes=[Route("/", hello), Mount("/sessions", app=mcp_app)])
        binds = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
        yield binds[0]
        stop.set()


@pytest.mark.parametrize("era", ERAS)
async def test_the_app_mounted_in_starlette_serves_the_sdk_client(
    manager: triact.SessionManager, era: str
) -> None:
    async with starlette_server(manager) as base:
        async with mcp.Client(f"{base}/sessions/mcp", mode=era) as client:
            names = [tool.name for tool in (await client.list_tools()).tools]
            assert names == list(SESSION_TOOLS.names)
            made = await client.call_tool("session_create", {"topic": "embedded"})
            session_id = made.structured_content["session_id"]
            got = await client.call_tool("session_get", {"session_id": session_id})
            assert got.structured_content["session"]["topic"] == "embedded"
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{base}/")).text == "hello"  # the host's own routes
            elsewhere = await http.post(f"{base}/mcp", json=initialize_body(), headers=ACCEPT)
            assert elsewhere.status_code == 404  # MCP is where it was mounted only
    state = await (await manager.get_session(session_id)).snapshot()
    assert state.topic == "embedded"
