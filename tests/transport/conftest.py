"""An in-memory client for the MCP server, speaking raw JSON-RPC lines."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import triact
from triact.transport import SESSION_TOOLS, McpServer, PromptSet, ServerOptions, ToolSet

STATELESS = "2026-07-28"
CAPABILITIES_KEY = "io.modelcontextprotocol/clientCapabilities"
VERSION_KEY = "io.modelcontextprotocol/protocolVersion"


def error_of(result: dict[str, Any]) -> dict[str, Any]:
    """The error object of an error result: in ``_meta``, its code also the text's
    prefix; no ``structuredContent`` (the output schemas describe results only)."""
    assert result["isError"] is True, result
    assert "structuredContent" not in result, result
    error: dict[str, Any] = result["_meta"]["triact/error"]
    assert result["content"] == [
        {"type": "text", "text": f"{error['code']}: {error['message']}"}
    ], result
    return error


def envelope(version: str = STATELESS, **extra: Any) -> dict[str, Any]:
    """The per-request ``_meta`` of the stateless revision."""
    return {
        VERSION_KEY: version,
        CAPABILITIES_KEY: {},
        "io.modelcontextprotocol/clientInfo": {"name": "tests", "version": "0"},
        **extra,
    }


class Peer:
    """The client end of one in-memory connection."""

    def __init__(self, stream: trio.abc.Stream, server: McpServer) -> None:
        self.stream = stream
        self.server = server
        self._buffer = b""
        self._next_id = 1000
        #: Notifications received while waiting for responses.
        self.notifications: list[dict[str, Any]] = []
        #: Responses received while waiting for another id.
        self.responses: dict[Any, dict[str, Any]] = {}
        # Test code: several tasks may share one peer.
        self.sending = trio.Lock()
        self._receiving = trio.Lock()

    async def send_raw(self, data: bytes) -> None:
        async with self.sending:
            await self.stream.send_all(data)

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_raw(json.dumps(message).encode() + b"\n")

    async def receive(self) -> dict[str, Any]:
        """The next message the server wrote."""
        while b"\n" not in self._buffer:
            data = await self.stream.receive_some(65536)
            assert data, "the server closed its output"
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    async def response(self, request_id: Any) -> dict[str, Any]:
        """The response to ``request_id`` (keeping what arrives before it)."""
        while request_id not in self.responses:
            async with self._receiving:
                if request_id in self.responses:
                    break
                message = await self.receive()
                if "method" in message:
                    self.notifications.append(message)
                else:
                    self.responses[message["id"]] = message
        return self.responses.pop(request_id)

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def request(
        self, method: str, params: dict[str, Any] | None = None, *, id: Any = None
    ) -> dict[str, Any]:
        """Send a request; return its whole response message."""
        request_id = self.new_id() if id is None else id
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        await self.send(message)
        return await self.response(request_id)

    async def initialize(self, version: str = "2025-11-25") -> dict[str, Any]:
        response = await self.request(
            "initialize",
            {
                "protocolVersion": version,
                "capabilities": {},
                "clientInfo": {"name": "tests", "version": "0"},
            },
        )
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return response

    def call_message(
        self,
        tool: str,
        arguments: dict[str, Any] | None = None,
        *,
        id: Any = None,
        meta: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"name": tool, "arguments": arguments or {}}
        if meta is not None:
            params["_meta"] = meta
        return {
            "jsonrpc": "2.0",
            "id": self.new_id() if id is None else id,
            "method": "tools/call",
            "params": params,
        }

    async def call(
        self,
        tool: str,
        arguments: dict[str, Any] | None = None,
        *,
        meta: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Call a tool; return its CallToolResult (asserting it is not a JSON-RPC error)."""
        message = self.call_message(tool, arguments, meta=meta)
        await self.send(message)
        response = await self.response(message["id"])
        assert "result" in response, response
        result: dict[str, Any] = response["result"]
        return result

    async def ok(self, tool: str, arguments: dict[str, Any] | None = None, **kw: Any) -> Any:
        """Call a tool that must succeed; return its structured content."""
        result = await self.call(tool, arguments, **kw)
        assert result["isError"] is False, result
        return result["structuredContent"]

    async def fails(self, tool: str, arguments: dict[str, Any] | None = None, **kw: Any) -> Any:
        """Call a tool that must fail; return its error object."""
        return error_of(await self.call(tool, arguments, **kw))

    async def close(self) -> None:
        await self.stream.send_stream.aclose()  # type: ignore[attr-defined]


@asynccontextmanager
async def connect(
    manager: triact.SessionManager,
    *,
    tools: ToolSet = SESSION_TOOLS,
    prompts: PromptSet | None = None,
    initialize: str | None = None,
    **options: Any,
) -> AsyncIterator[Peer]:
    """An McpServer offering ``tools`` (and ``prompts``) for ``manager`` over an
    in-memory stream; EOF on exit, and the server must then return."""
    client, server_end = trio.testing.memory_stream_pair()
    server = McpServer(manager, tools=tools, options=ServerOptions(**options), prompts=prompts)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve, server_end, server_end)
        peer = Peer(client, server)
        if initialize is not None:
            await peer.initialize(initialize)
        yield peer
        await peer.close()


@asynccontextmanager
async def serving(
    *, initialize: str | None = "2025-11-25", **config: Any
) -> AsyncIterator[tuple[triact.SessionManager, Peer]]:
    """A manager opened with ``SessionConfig(**config)`` and a connection to it."""
    async with (
        triact.open_session_manager(triact.SessionConfig(**config)) as manager,
        connect(manager, initialize=initialize) as peer,
    ):
        yield manager, peer


@pytest.fixture
async def manager() -> AsyncIterator[triact.SessionManager]:
    async with triact.open_session_manager() as manager:
        yield manager


@pytest.fixture
async def peer(manager: triact.SessionManager) -> AsyncIterator[Peer]:
    """A connection initialized at 2025-11-25."""
    async with connect(manager, initialize="2025-11-25") as peer:
        yield peer
