"""What ``triact stress`` drives: an in-process manager, or a ``triact serve``
subprocess spoken to over MCP on stdio."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit, urlunsplit

import trio

from .._version import __version__
from ..sessions import (
    MemoryStore,
    RedisStore,
    Session,
    SessionConfig,
    SessionManager,
    SessionStore,
    SqliteStore,
    open_session_manager,
)
from ..transport import ERROR_META_KEY
from ._faults import FaultyStore, InjectedError, failing_update, slow_update
from ._history import Call, Outcome
from ._model import DataChange

#: The MCP revision the stdio target asks for in its initialize handshake.
PROTOCOL_VERSION = "2025-11-25"
#: Tool error codes (see triact.transport) and the outcomes they stand for.
_CODES: dict[str, Outcome] = {
    "not_found": "gone",
    "conflict": "conflict",
    "busy": "busy",
    "rate_limited": "busy",
    "closed": "closed",
    "store_error": "store_error",
    "invalid_arguments": "raised",
}


def _outcome(tool: str, error: dict[str, Any]) -> Outcome:
    """The outcome a tool error stands for. An update whose store failed after it may
    have been saved (``applied`` null) is ``unknown``: the checker lets it fill a
    version no acknowledged update made."""
    code = error.get("code", "?")
    if code == "store_error" and tool == "session_update" and error.get("applied", 0) is None:
        return "unknown"
    return _CODES.get(code, "error")


class StressTarget(Protocol):
    """A system under stress: each call reports its result on ``call``, or raises a
    session error (which the recorder classifies)."""

    description: str

    async def create(self, call: Call) -> str: ...
    async def read(self, call: Call, session_id: str) -> None: ...
    async def update(
        self,
        call: Call,
        session_id: str,
        change: DataChange,
        expected_version: int | None,
        *,
        fails: bool,
        slow: float,
    ) -> None: ...
    async def end(self, call: Call, session_id: str) -> None: ...
    def faults(self) -> Mapping[str, int]: ...
    def arm(self, armed: bool) -> None:
        """Turn injected faults on or off (off while the sessions are set up)."""


@runtime_checkable
class DefaultSessions(Protocol):
    """A target whose clients speak in MCP sessions (the handshake era over HTTP),
    each with its default session: the load also updates those, and the history
    must show one default session per MCP session, whichever process answered."""

    def mcp_sessions(self) -> list[str]: ...
    async def update_default(self, call: Call, mcp_session: str, change: DataChange) -> None: ...


def store_for(spec: str) -> SessionStore:
    """``memory``, ``sqlite[:PATH]`` (a temporary file without a path) or a redis://
    URL (under a key prefix of the run's own without ``prefix=``)."""
    kind, _, path = spec.partition(":")
    if kind == "memory" and not path:
        return MemoryStore()
    if kind == "sqlite":
        if not path:
            path = tempfile.mkdtemp(prefix="triact-stress-") + "/sessions.db"
        return SqliteStore(path)
    if kind in ("redis", "rediss"):
        return RedisStore(own_prefix(spec))
    raise ValueError(f"--store must be memory, sqlite[:PATH] or redis://..., got {spec!r}")


def own_prefix(url: str) -> str:
    """A redis:// URL without a ``prefix=`` given one of this run's own, so that a
    stress run never writes to the sessions of a deployment (its keys expire with
    the sessions' idle TTL)."""
    if "prefix=" in url:
        return url
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}prefix=triact-stress-{secrets.token_hex(6)}:"


class InprocTarget:
    """A :class:`~triact.SessionManager` in this process; with ``fault_rate``, its store
    is a :class:`FaultyStore` and sessions passivate quickly (so loads happen)."""

    def __init__(self, manager: SessionManager, faulty: FaultyStore | None) -> None:
        self.manager = manager
        self.faulty = faulty
        self.handles: dict[str, Session] = {}
        self.description = f"in-process manager, {manager.store.kind} store"

    async def create(self, call: Call) -> str:
        session = await self.manager.create_session(topic="stress")
        self.handles[session.id] = session
        call.ok(session)
        return session.id

    async def read(self, call: Call, session_id: str) -> None:
        call.ok(await self.handles[session_id].snapshot())

    async def update(
        self,
        call: Call,
        session_id: str,
        change: DataChange,
        expected_version: int | None,
        *,
        fails: bool,
        slow: float,
    ) -> None:
        fn: Any = failing_update(InjectedError) if fails else change
        if slow:
            fn = slow_update(fn, slow)
        call.ok(await self.handles[session_id].update(fn, expected_version))

    async def end(self, call: Call, session_id: str) -> None:
        call.ok(await self.handles[session_id].end())

    def faults(self) -> Mapping[str, int]:
        if self.faulty is None:
            return {}
        return {str(kind): count for kind, count in self.faulty.injected.items()}

    def arm(self, armed: bool) -> None:
        if self.faulty is not None:
            self.faulty.armed = armed


@asynccontextmanager
async def open_inproc(store: str, fault_rate: float, seed: int) -> AsyncIterator[InprocTarget]:
    inner = store_for(store)
    faulty = None
    if fault_rate:
        faulty = FaultyStore(
            inner,
            seed=seed,
            fail_rate=fault_rate / 2,
            stall_rate=fault_rate / 2,
            stall=0.005,
            corrupt_rate=fault_rate / 4,
        )
    config = SessionConfig(store=faulty or inner, passivate_after=0.05 if fault_rate else None)
    async with open_session_manager(config) as manager:
        yield InprocTarget(manager, faulty)


class StdioServerError(Exception):
    """The MCP server process misbehaved: it exited, or broke the protocol."""


class JsonRpcErrorReply(StdioServerError):
    """The server answered a request with a JSON-RPC error (a tool error is not one)."""


class McpStdioClient:
    """A minimal MCP client: newline-delimited JSON-RPC over a subprocess's stdin and
    stdout, any number of requests in flight."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._ids = 0
        self._waiting: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._outbox, self._outbox_recv = trio.open_memory_channel[bytes](1024)
        self.closed: str | None = None

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write)
            task_status.started()
            await self._read()
            nursery.cancel_scope.cancel()

    async def _write(self) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        async with self._outbox_recv:
            async for line in self._outbox_recv:
                await stdin.send_all(line)
        await stdin.aclose()

    async def _read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        buffer = b""
        async for chunk in stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                try:
                    message = json.loads(line)
                except ValueError:
                    self.closed = f"the server wrote a line that is not JSON: {line[:200]!r}"
                    break
                self._dispatch(message)
            if self.closed:
                break
        self.closed = self.closed or "the server closed its stdout"
        for channel in self._waiting.values():
            channel.close()

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel = self._waiting.pop(message.get("id", -1), None)
        if channel is not None:
            channel.send_nowait(message)

    async def send(self, message: dict[str, Any]) -> None:
        await self._outbox.send(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send a request and return its result; StdioServerError for a JSON-RPC error
        or a server that went away."""
        if self.closed:
            raise StdioServerError(self.closed)
        self._ids += 1
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        self._waiting[self._ids] = send
        await self.send({"jsonrpc": "2.0", "id": self._ids, "method": method, "params": params})
        try:
            reply = await receive.receive()
        except trio.EndOfChannel:
            raise StdioServerError(self.closed or "no reply") from None
        if "error" in reply:
            raise JsonRpcErrorReply(f"{method}: JSON-RPC error {reply['error']}")
        return reply["result"]  # type: ignore[no-any-return]

    async def initialize(self) -> dict[str, Any]:
        result = await self.request(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "triact-stress", "version": __version__},
            },
        )
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return result

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> tuple[bool, Any]:
        """(is_error, structured content) of a tools/call (see :func:`tool_outcome`)."""
        result = await self.request("tools/call", {"name": name, "arguments": arguments})
        return tool_outcome(result)

    async def aclose(self) -> None:
        self._outbox.close()


def tool_outcome(result: dict[str, Any]) -> tuple[bool, Any]:
    """(is_error, structured content) of a ``tools/call`` result; for an error, the
    content is ``{"error": <the error object the result carries in _meta>}``."""
    if result.get("isError"):
        return True, {"error": (result.get("_meta") or {}).get(ERROR_META_KEY, {})}
    return False, result.get("structuredContent")


class ToolClient(Protocol):
    """What a target calls tools through (an MCP client, or several used as one)."""

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> tuple[bool, Any]: ...


class StdioTarget:
    """A ``triact serve`` subprocess, over MCP."""

    def __init__(self, client: ToolClient, command: list[str]) -> None:
        self.client = client
        self.description = f"MCP server over stdio ({' '.join(command[-3:])})"

    async def _tool(
        self, call: Call, name: str, arguments: dict[str, Any], client: ToolClient | None = None
    ) -> Any:
        try:
            is_error, content = await (client or self.client).call_tool(name, arguments)
        except JsonRpcErrorReply as exc:  # a server bug: an unexpected outcome
            call.failed("error", str(exc)[:300])
            return None
        if not is_error:
            return content
        error = (content or {}).get("error", {})
        code = error.get("code", "?")
        call.failed(
            _outcome(name, error),
            f"{code}: {error.get('message', '')}"[:300],
            error.get("actual_version"),
        )
        return None

    async def create(self, call: Call) -> str:
        content = await self._tool(call, "session_create", {"topic": "stress"})
        if content is None:
            raise StdioServerError(f"session_create failed: {call.op.error}")
        view = content["session"]
        call.ok_version(view["version"], view["data"], content["session_id"])
        return str(content["session_id"])

    async def read(self, call: Call, session_id: str) -> None:
        content = await self._tool(call, "session_get", {"session_id": session_id})
        if content is not None:
            view = content["session"]
            call.ok_version(view["version"], view["data"])

    async def update(
        self,
        call: Call,
        session_id: str,
        change: DataChange,
        expected_version: int | None,
        *,
        fails: bool,
        slow: float,
    ) -> None:
        arguments = {"session_id": session_id, **change.arguments()}
        if fails:  # "label" holds a string: incrementing it raises inside the update
            arguments["increment"] = {**arguments.get("increment", {}), "label": 1}
        if expected_version is not None:
            arguments["expected_version"] = expected_version
        content = await self._tool(call, "session_update", arguments)
        if content is not None:
            call.ok_version(content["version"], content["data"])

    async def end(self, call: Call, session_id: str) -> None:
        content = await self._tool(call, "session_end", {"session_id": session_id})
        if content is not None:
            view = content["session"]
            call.ok_version(view["version"], view["data"])

    def faults(self) -> Mapping[str, int]:
        return {}

    def arm(self, armed: bool) -> None:
        pass  # the server's faults are failing updates, chosen per call


def server_command(store: str) -> list[str]:
    """This Python running ``triact serve --store STORE``."""
    return [
        sys.executable,
        "-m",
        "triact",
        "serve",
        "--store",
        store,
    ]


def password_apart(command: list[str]) -> tuple[list[str], dict[str, str] | None]:
    """``command`` with the password of the Redis URL after its ``--store`` taken out,
    and the environment that gives it to the server instead (``TRIACT_REDIS_PASSWORD``;
    None: this process's, unchanged): every user of the machine can read a process's
    command line (``ps``), and an error quoting the command quotes what it holds."""
    command = list(command)
    for i, word in enumerate(command[:-1]):
        url = command[i + 1]
        if word != "--store" or not url.startswith(("redis://", "rediss://")):
            continue
        try:
            parts = urlsplit(url)
        except ValueError:
            continue  # the server refuses it, without quoting its password
        if parts.password is None:
            continue
        user, _, host = parts.netloc.rpartition("@")
        user = user.partition(":")[0]
        command[i + 1] = urlunsplit(parts._replace(netloc=f"{user}@{host}" if user else host))
        return command, {**os.environ, "TRIACT_REDIS_PASSWORD": unquote(parts.password)}
    return command, None


@asynccontextmanager
async def open_stdio(command: list[str]) -> AsyncIterator[StdioTarget]:
    """Start the server, shake hands, and stop it (end of input) on exit."""
    command, env = password_apart(command)
    with tempfile.TemporaryFile() as log:
        try:
            process = await trio.lowlevel.open_process(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env
            )
        except OSError as exc:
            raise StdioServerError(
                f"cannot start the server command {shlex.join(command)!r}: {exc.strerror or exc}"
            ) from None
        client = McpStdioClient(process)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(client.run)
                try:
                    with trio.fail_after(30):
                        await client.initialize()
                except (StdioServerError, trio.TooSlowError) as exc:
                    log.seek(0)
                    tail = log.read()[-2000:].decode(errors="replace")
                    raise StdioServerError(
                        f"the server did not complete the MCP handshake ({exc}); "
                        f"its stderr ends with:\n{tail or '(nothing)'}"
                    ) from None
                yield StdioTarget(client, command)
                await client.aclose()
                with trio.move_on_after(10):
                    await process.wait()
                nursery.cancel_scope.cancel()
        finally:
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()


def open_target(
    target: str, store: str, fault_rate: float, seed: int, command: list[str] | None
) -> AbstractAsyncContextManager[StressTarget]:
    if target == "inproc":
        return open_inproc(store, fault_rate, seed)
    return open_stdio(command or server_command(store))
