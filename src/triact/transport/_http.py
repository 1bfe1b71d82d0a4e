"""MCP over streamable HTTP: an ASGI app at ``/mcp`` that hands each message to the
same protocol core as stdio (an :class:`McpServer` per MCP session, and one for the
stateless revision's requests), over in-memory streams.

Each request's id is replaced by one of the app's own on the way in and restored on
the way out, so that requests of different clients (or of one client's concurrent
POSTs) never collide, and ``notifications/cancelled`` names the right call. A request
is answered with ``application/json``; notifications sent while it runs (progress,
logs) are not carried over HTTP yet.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from itertools import count
from typing import Any

import attrs
import trio
import trio.testing

from ..sessions import SessionManager
from ._jsonrpc import INVALID_REQUEST, PARSE_ERROR, RequestId
from ._server import McpServer, ServerOptions
from ._session_tools import SESSION_TOOLS
from ._tools import ToolSet

logger = logging.getLogger("triact.transport")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: The path MCP is served at.
MCP_PATH = "/mcp"
_SESSION_HEADER = b"mcp-session-id"
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
#: Messages queued for one connection's server; beyond, POSTs wait.
_QUEUED_LINES = 256


@attrs.frozen(kw_only=True)
class HttpOptions:
    """How the HTTP transport takes requests."""

    #: Largest request body accepted, in bytes; beyond it, 413.
    max_body_bytes: int = 4 * 1024 * 1024
    #: Origins a browser may send requests from (``scheme://host[:port]``); requests
    #: with any other ``Origin`` get 403. Loopback origins are always allowed.
    allowed_origins: tuple[str, ...] = ()
    #: MCP sessions (handshake era) open at once; beyond it, initialize gets 503.
    max_mcp_sessions: int = 1000


class _Connection:
    """One McpServer and the requests waiting for its answers."""

    def __init__(self, server: McpServer, stream: trio.abc.Stream) -> None:
        self.server = server
        self.stream = stream
        # Lines for the server, written by one task (a stream has one writer).
        self.outgoing, self.lines = trio.open_memory_channel[bytes](_QUEUED_LINES)
        self.waiting: dict[int, tuple[RequestId, trio.MemorySendChannel[bytes]]] = {}
        self.ids: dict[RequestId, int] = {}  # the client's id -> ours, while in flight
        self.done = trio.Event()


class McpHttpApp:
    """The ASGI app; make it with :func:`open_http_app`, which runs what it needs."""

    def __init__(
        self,
        manager: SessionManager,
        tools: ToolSet,
        options: ServerOptions,
        http: HttpOptions,
        nursery: trio.Nursery,
    ) -> None:
        self._manager = manager
        self._tools = tools
        self._options = options
        self._http = http
        self._nursery = nursery
        self._ids = count(1)
        self._sessions: dict[str, _Connection] = {}
        self._stateless: _Connection | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"].rstrip("/") != MCP_PATH:
            await _respond(
                send, 404, _rpc_error(INVALID_REQUEST, f"Not Found: MCP is at {MCP_PATH}")
            )
            return
        headers = {name.lower(): value for name, value in scope["headers"]}
        if not self._origin_allowed(headers.get(b"origin")):
            await _respond(send, 403, _rpc_error(INVALID_REQUEST, "Forbidden: origin not allowed"))
            return
        method = scope["method"]
        if method == "POST":
            await self._post(headers, receive, send)
        elif method == "DELETE":
            await self._delete(headers, send)
        else:
            await _respond(
                send,
                405,
                _rpc_error(INVALID_REQUEST, f"Method Not Allowed: {method}; use POST"),
                [(b"allow", b"POST, DELETE")],
            )

    def _origin_allowed(self, origin: bytes | None) -> bool:
        if origin is None:
            return True  # not a browser
        text = origin.decode("latin-1")
        host = text.split("://", 1)[-1].rsplit(":", 1)[0] if "://" in text else ""
        return host in _LOOPBACK_HOSTS or text in self._http.allowed_origins

    async def _post(self, headers: dict[bytes, bytes], receive: Receive, send: Send) -> None:
        body = await _read_body(receive, self._http.max_body_bytes)
        if body is None:
            message = f"Request Entity Too Large: over {self._http.max_body_bytes} bytes"
            await _respond(send, 413, _rpc_error(INVALID_REQUEST, message))
            return
        try:
            message = json.loads(body)
        except ValueError:
            await _respond(send, 400, _rpc_error(PARSE_ERROR, "Parse error: invalid JSON"))
            return
        if type(message) is not dict:
            error = _rpc_error(INVALID_REQUEST, "Invalid Request: send one JSON-RPC object")
            await _respond(send, 400, error)
            return
        session_id = headers.get(_SESSION_HEADER)
        extra: list[tuple[bytes, bytes]] = []
        if session_id is not None:
            connection = self._sessions.get(session_id.decode("latin-1"))
            if connection is None:
                error = _rpc_error(INVALID_REQUEST, "Not Found: unknown or ended MCP session")
                await _respond(send, 404, error)
                return
        elif message.get("method") == "initialize":
            if len(self._sessions) >= self._http.max_mcp_sessions:
                error = _rpc_error(INVALID_REQUEST, "Service Unavailable: too many sessions")
                await _respond(send, 503, error)
                return
            new_id = secrets.token_urlsafe(24)
            connection = self._sessions[new_id] = self._open_connection()
            extra.append((b"mcp-session-id", new_id.encode()))
        else:
            connection = self._stateless or self._open_stateless()
        if "id" not in message or "method" not in message:  # a notification or response
            await self._forward(connection, message)
            await _respond(send, 202, None)
            return
        answer = await self._ask(connection, message)
        await _respond(send, 200, answer, extra)

    async def _delete(self, headers: dict[bytes, bytes], send: Send) -> None:
        session_id = headers.get(_SESSION_HEADER)
        connection = self._sessions.pop(session_id.decode("latin-1"), None) if session_id else None
        if connection is None:
            await _respond(send, 404, _rpc_error(INVALID_REQUEST, "Not Found: no such session"))
            return
        connection.outgoing.close()  # its server finishes the calls in flight and stops
        await _respond(send, 200, None)

    def _open_stateless(self) -> _Connection:
        self._stateless = self._open_connection()
        return self._stateless

    def _open_connection(self) -> _Connection:
        client, server_end = trio.testing.memory_stream_pair()
        server = McpServer(self._manager, tools=self._tools, options=self._options)
        connection = _Connection(server, client)
        self._nursery.start_soon(self._run_server, server, server_end)
        self._nursery.start_soon(self._read_answers, connection)
        self._nursery.start_soon(self._write_lines, connection)
        return connection

    async def _write_lines(self, connection: _Connection) -> None:
        async with connection.lines:
            async for line in connection.lines:
                await connection.stream.send_all(line)
        await connection.stream.send_eof()  # type: ignore[attr-defined]

    async def _run_server(self, server: McpServer, stream: trio.abc.Stream) -> None:
        async with stream:  # closing it ends the reader of the answers
            await server.serve(stream, stream)

    async def _read_answers(self, connection: _Connection) -> None:
        buffer = b""
        try:
            while True:
                data = await connection.stream.receive_some(65536)
                if not data:
                    return
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    self._deliver(connection, line)
        finally:
            connection.done.set()
            for _, channel in connection.waiting.values():
                channel.close()

    def _deliver(self, connection: _Connection, line: bytes) -> None:
        message = json.loads(line)
        ours = message.get("id")
        waiting = connection.waiting.pop(ours, None) if type(ours) is int else None
        if waiting is None:
            logger.debug("not carried over HTTP: %.200r", line)
            return
        theirs, channel = waiting
        connection.ids.pop(theirs, None)
        message["id"] = theirs
        channel.send_nowait(json.dumps(message, separators=(",", ":")).encode())

    async def _forward(self, connection: _Connection, message: dict[str, Any]) -> None:
        if message.get("method") == "notifications/cancelled":
            params = message.get("params")
            if type(params) is dict and params.get("requestId") in connection.ids:
                params = {**params, "requestId": connection.ids[params["requestId"]]}
                message = {**message, "params": params}
        await connection.outgoing.send(json.dumps(message).encode() + b"\n")

    async def _ask(self, connection: _Connection, message: dict[str, Any]) -> bytes | None:
        theirs, ours = message["id"], next(self._ids)
        send_answer, receive_answer = trio.open_memory_channel[bytes](1)
        connection.waiting[ours] = (theirs, send_answer)
        if type(theirs) in (str, int):
            connection.ids[theirs] = ours
        try:
            await self._forward(connection, {**message, "id": ours})
            async with receive_answer:
                try:
                    return await receive_answer.receive()
                except trio.EndOfChannel:
                    return _rpc_error(INVALID_REQUEST, "the MCP session ended", theirs)
        except trio.Cancelled:
            # The client went away: the call is cancelled, as a cancellation would.
            with trio.CancelScope(shield=True):
                cancel = {
                    "jsonrpc": "2.0",
                    "method": "notifications/cancelled",
                    "params": {"requestId": ours, "reason": "the HTTP request was closed"},
                }
                with trio.move_on_after(1):
                    await connection.outgoing.send(json.dumps(cancel).encode() + b"\n")
            raise
        finally:
            connection.waiting.pop(ours, None)
            if connection.ids.get(theirs) == ours:
                del connection.ids[theirs]

    async def aclose(self) -> None:
        """End every connection: their servers finish the calls in flight and return."""
        connections = [*self._sessions.values(), *([self._stateless] if self._stateless else [])]
        self._sessions.clear()
        self._stateless = None
        for connection in connections:
            connection.outgoing.close()


@asynccontextmanager
async def open_http_app(
    manager: SessionManager,
    tools: ToolSet = SESSION_TOOLS,
    options: ServerOptions | None = None,
    http: HttpOptions | None = None,
) -> AsyncIterator[McpHttpApp]:
    """An ASGI app serving ``tools`` over MCP's streamable HTTP at ``/mcp``, for the
    block: on exit, each MCP session's server finishes its calls in flight (within
    ``options.shutdown_grace``) and stops."""
    async with trio.open_nursery() as nursery:
        app = McpHttpApp(manager, tools, options or ServerOptions(), http or HttpOptions(), nursery)
        try:
            yield app
        finally:
            with trio.CancelScope(shield=True):
                await app.aclose()


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        event = await receive()
        if event["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif event["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await receive()
        chunk = event.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not event.get("more_body", False):
            return b"".join(chunks)


def _rpc_error(code: int, message: str, request_id: Any = None) -> bytes:
    error = {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
    return json.dumps(error).encode()


async def _respond(
    send: Send, status: int, body: bytes | None, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    all_headers = list(headers or [])
    if body is not None:
        all_headers.append((b"content-type", b"application/json"))
    all_headers.append((b"content-length", str(len(body or b"")).encode()))
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body or b""})
