"""``triact stress --target http``: a ``triact serve --http`` subprocess on a free
loopback port, driven by several MCP clients over streamable HTTP, in both protocol
eras at once (initialize handshake at 2025-11-25 with an ``Mcp-Session-Id``, and the
stateless 2026-07-28 with ``_meta`` on every request); each call goes to one of them
at random."""

from __future__ import annotations

import json
import random
import re
import shlex
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from itertools import count
from typing import IO, Any

import attrs
import trio

from .._version import __version__
from ._history import Call
from ._model import DataChange
from ._targets import (
    JsonRpcErrorReply,
    StdioServerError,
    StdioTarget,
    password_apart,
    tool_outcome,
)

#: The revisions the clients speak: the handshake era's newest, and the stateless one.
HANDSHAKE = "2025-11-25"
STATELESS = "2026-07-28"
_ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": STATELESS,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "triact-stress", "version": __version__},
}
_LISTENING = re.compile(r"(http://\S+/mcp)\b")
_URL = re.compile(r"http://(?P<host>\[[^\]]+\]|[^:/]+):(?P<port>\d+)(?P<path>/\S*)")
_READ_BYTES = 65536
#: Seconds an idle keep-alive connection is reused for (the server closes one after 5).
_IDLE_REUSE = 2.0
_ACCEPT = "application/json, text/event-stream"
#: Seconds a server has to print its address, and to exit after SIGTERM.
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0


class HttpServerError(StdioServerError):
    """The MCP server over HTTP misbehaved: it exited, refused a connection, or
    answered something that is not MCP."""


def _h11() -> Any:
    try:
        import h11
    except ImportError:
        raise HttpServerError(
            "--target http needs h11 (the server's too): install triact's "
            "http extra (pip install '.[http]' in a checkout)"
        ) from None
    return h11


@attrs.frozen
class Answer:
    """An HTTP answer: its status, headers (names in lower case) and body."""

    status: int
    headers: dict[str, str]
    body: bytes


class _Connection:
    """One HTTP/1.1 connection (h11 on a Trio socket), one exchange at a time."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = _h11().Connection(_h11().CLIENT)
        self.idle_since = trio.current_time()

    async def exchange(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> Answer:
        h11 = _h11()
        request = h11.Request(method=method, target=target, headers=headers)
        await self.stream.send_all(
            self.h11.send(request)
            + self.h11.send(h11.Data(data=body))
            + self.h11.send(h11.EndOfMessage())
        )
        status, answer_headers, chunks = 0, {}, []
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self.stream.receive_some(_READ_BYTES))
            elif isinstance(event, h11.Response):
                status = event.status_code
                answer_headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return Answer(status, answer_headers, b"".join(chunks))
            elif isinstance(event, h11.ConnectionClosed):
                raise HttpServerError(f"{method} {target}: the server closed the connection")

    @property
    def reusable(self) -> bool:
        h11 = _h11()
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            self.idle_since = trio.current_time()
            return True
        return False


class Connections:
    """Keep-alive HTTP/1.1 connections to one address, as many as requests in flight.
    An idle connection is not reused after :data:`_IDLE_REUSE` seconds (the server may
    be closing it), so that no request is ever sent twice."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._idle: list[_Connection] = []

    async def exchange(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes = b""
    ) -> Answer:
        """One request and its answer; HttpServerError if the connection fails."""
        h11 = _h11()
        connection = await self._take()
        try:
            if connection is None:
                connection = _Connection(await trio.open_tcp_stream(self.host, self.port))
            headers = [
                ("host", f"{self.host}:{self.port}"),
                *headers,
                ("content-length", str(len(body))),
            ]
            answer = await connection.exchange(method, target, headers, body)
        except (OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
            if connection is not None:
                await trio.aclose_forcefully(connection.stream)
            raise HttpServerError(f"{method} {target}: {type(exc).__name__}: {exc}") from None
        except BaseException:
            if connection is not None:
                await trio.aclose_forcefully(connection.stream)
            raise
        if connection.reusable:
            self._idle.append(connection)
        else:
            await connection.stream.aclose()
        return answer

    async def _take(self) -> _Connection | None:
        """The most recently used idle connection, if still fresh (the older ones are
        then staler still: they are closed)."""
        if not self._idle:
            return None
        connection = self._idle.pop()
        if trio.current_time() - connection.idle_since < _IDLE_REUSE:
            return connection
        stale, self._idle = [connection, *self._idle], []
        for old in stale:
            await old.stream.aclose()
        return None

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.stream.aclose()


class McpHttpClient:
    """One MCP client over streamable HTTP on its own keep-alive connections: in the
    handshake era, one MCP session (initialized on :meth:`open`, ended by DELETE on
    :meth:`aclose`); in the stateless era, self-contained requests."""

    def __init__(self, url: str, era: str) -> None:
        found = _URL.fullmatch(url)
        if found is None:
            raise HttpServerError(f"not an http://HOST:PORT/PATH URL: {url!r}")
        self.url = url
        self.era = era
        self.session_id: str | None = None
        #: Whether this client opened its MCP session (and ends it on aclose), or
        #: speaks for another's (:meth:`through`).
        self.owner = True
        #: Requests answered (with a result or an error).
        self.answered = 0
        self._path = found.group("path")
        self._ids = count(1)
        self._http = Connections(found.group("host").strip("[]"), int(found.group("port")))

    async def open(self) -> None:
        if self.era == STATELESS:
            return
        answer = await self._post(
            {
                "jsonrpc": "2.0",
                "id": next(self._ids),
                "method": "initialize",
                "params": {
                    "protocolVersion": HANDSHAKE,
                    "capabilities": {},
                    "clientInfo": {"name": "triact-stress", "version": __version__},
                },
            },
            {},
        )
        message = self._message(answer, "initialize")
        if "result" not in message or message["result"].get("protocolVersion") != HANDSHAKE:
            raise HttpServerError(f"initialize answered {json.dumps(message)[:300]}")
        self.session_id = answer.headers.get("mcp-session-id")
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        answer = await self._post(note, self._headers())
        if answer.status not in (200, 202):
            raise HttpServerError(f"notifications/initialized: HTTP {answer.status}")

    def _headers(self, method: str = "", name: str | None = None) -> dict[str, str]:
        if self.era == STATELESS:
            headers = {"mcp-protocol-version": STATELESS, "mcp-method": method}
            if name is not None:
                headers["mcp-name"] = name
            return headers
        headers = {"mcp-protocol-version": HANDSHAKE}
        if self.session_id is not None:
            headers["mcp-session-id"] = self.session_id
        return headers

    async def _post(self, body: dict[str, Any], headers: dict[str, str]) -> Answer:
        all_headers = [
            ("content-type", "application/json"),
            ("accept", _ACCEPT),
            *headers.items(),
        ]
        return await self._http.exchange(
            "POST", self._path, all_headers, json.dumps(body, separators=(",", ":")).encode()
        )

    def _message(self, answer: Answer, method: str) -> dict[str, Any]:
        """The JSON-RPC message of an answer (a JSON body, or the last message of an
        SSE stream); HttpServerError if it has none."""
        text = answer.body.decode(errors="replace")
        try:
            if answer.headers.get("content-type", "").startswith("text/event-stream"):
                data = [
                    line[5:].strip()
                    for line in text.splitlines()
                    if line.startswith("data:") and line[5:].strip()
                ]
                message = json.loads(data[-1])
            else:
                message = json.loads(text)
        except (ValueError, IndexError):
            raise HttpServerError(
                f"{method}: HTTP {answer.status}, not a JSON-RPC answer: {text[:200]!r}"
            ) from None
        if type(message) is not dict:
            raise HttpServerError(f"{method}: not a JSON-RPC object: {text[:200]!r}")
        return message

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """A request's result; JsonRpcErrorReply for a JSON-RPC error (or a refusal),
        HttpServerError for anything else."""
        name = params.get("name") if method == "tools/call" else None
        if self.era == STATELESS:
            params = {**params, "_meta": _ENVELOPE}
        request_id = next(self._ids)
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        answer = await self._post(body, self._headers(method, name))
        message = self._message(answer, method)
        self.answered += 1
        if "error" in message or answer.status != 200:
            raise JsonRpcErrorReply(
                f"{method}: HTTP {answer.status}, JSON-RPC error {message.get('error')}"
            )
        if message.get("id") != request_id or type(message.get("result")) is not dict:
            raise HttpServerError(f"{method}: answered {json.dumps(message)[:300]}")
        result: dict[str, Any] = message["result"]
        return result

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> tuple[bool, Any]:
        """(is_error, structured content) of a tools/call (see :func:`tool_outcome`)."""
        result = await self.request("tools/call", {"name": name, "arguments": arguments})
        return tool_outcome(result)

    def through(self, url: str) -> McpHttpClient:
        """This client's MCP session, spoken to through the server at ``url`` (another
        process on the same store, which reads the session's record from it)."""
        other = McpHttpClient(url, self.era)
        other.session_id = self.session_id
        other.owner = False
        return other

    async def aclose(self) -> None:
        """End the MCP session (DELETE) if this client opened one, and close the
        connections."""
        try:
            if self.session_id is not None and self.owner:
                with trio.move_on_after(_STOP_TIMEOUT):
                    headers = list(self._headers().items())
                    await self._http.exchange("DELETE", self._path, headers)
        except HttpServerError:
            pass  # the server is gone; nothing left to end
        finally:
            await self._http.aclose()


class MixedClients:
    """Several :class:`McpHttpClient` of both eras, used as one: each call goes to one
    of them, chosen at random (so the eras' calls interleave on the same sessions)."""

    def __init__(self, clients: list[McpHttpClient], seed: str) -> None:
        self.clients = clients
        self._rng = random.Random(seed)

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> tuple[bool, Any]:
        client = self.clients[self._rng.randrange(len(self.clients))]
        return await client.call_tool(name, arguments)


class HttpTarget(StdioTarget):
    """A ``triact serve --http`` subprocess, over MCP by several HTTP clients."""

    def __init__(self, clients: MixedClients, url: str) -> None:
        super().__init__(clients, [])
        self.url = url
        self.mixed = clients
        eras = sorted({client.era for client in clients.clients})
        self.description = (
            f"MCP server over HTTP at {url} ({len(clients.clients)} clients, "
            f"protocols {' and '.join(eras)})"
        )

    def own_sessions(self) -> list[McpHttpClient]:
        """The clients that opened an MCP session on this server."""
        return [c for c in self.mixed.clients if c.owner and c.session_id is not None]

    def mcp_sessions(self) -> list[str]:
        """The ids of the MCP sessions this server's clients speak in (their own and,
        with several servers, the others')."""
        return sorted({c.session_id for c in self.mixed.clients if c.session_id is not None})

    async def update_default(self, call: Call, mcp_session: str, change: DataChange) -> None:
        """``change`` applied to the default session of the MCP session ``mcp_session``
        (a ``session_update`` without ``session_id``), through this server; the answer
        names the session (``call.op.session_id``)."""
        (client,) = [c for c in self.mixed.clients if c.session_id == mcp_session]
        content = await self._tool(call, "session_update", change.arguments(), client)
        if content is not None:
            call.ok_version(content["version"], content["data"], content["session_id"])

    @asynccontextmanager
    async def serving(self, others: list[McpHttpClient]) -> AsyncIterator[None]:
        """For the block, this server also takes calls for the MCP sessions ``others``
        opened on other servers (their records are in the shared store)."""
        through = [client.through(self.url) for client in others]
        self.mixed.clients.extend(through)
        try:
            yield
        finally:
            for client in through:
                self.mixed.clients.remove(client)
                await client.aclose()


def http_command(command: list[str]) -> list[str]:
    """``command`` (a ``triact serve``) listening on a free loopback port."""
    return [*command, "--http", "127.0.0.1:0"]


async def _listening(process: trio.Process, log: IO[bytes]) -> str:
    """The URL the server prints once it listens; HttpServerError if it exits first
    or takes too long."""
    with trio.move_on_after(_START_TIMEOUT):
        while process.poll() is None:
            log.seek(0)
            found = _LISTENING.search(log.read().decode(errors="replace"))
            if found:
                return found.group(1)
            await trio.sleep(0.05)
    log.seek(0)
    tail = log.read()[-2000:].decode(errors="replace")
    state = "exited" if process.returncode is not None else "did not listen in time"
    raise HttpServerError(
        f"the server {state}; its stderr ends with:\n{tail or '(nothing)'}"
    ) from None


@asynccontextmanager
async def open_http(command: list[str], clients: int, seed: str) -> AsyncIterator[HttpTarget]:
    """Start ``command --http 127.0.0.1:0``, open ``clients`` MCP clients of it (at
    least two: the eras alternate), and on exit end their sessions and stop the
    server (SIGTERM, then SIGKILL)."""
    command, env = password_apart(http_command(command))
    _h11()
    with tempfile.TemporaryFile() as log:
        try:
            process = await trio.lowlevel.open_process(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=env
            )
        except OSError as exc:
            raise HttpServerError(
                f"cannot start the server command {shlex.join(command)!r}: {exc.strerror or exc}"
            ) from None
        try:
            url = await _listening(process, log)
            async with AsyncExitStack() as stack:
                mcp_clients = []
                for index in range(max(2, clients)):
                    client = McpHttpClient(url, (HANDSHAKE, STATELESS)[index % 2])
                    stack.push_async_callback(client.aclose)
                    await client.open()
                    mcp_clients.append(client)
                yield HttpTarget(MixedClients(mcp_clients, seed), url)
        finally:
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                    with trio.move_on_after(_STOP_TIMEOUT):
                        await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
