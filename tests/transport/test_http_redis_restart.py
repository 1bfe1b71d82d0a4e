"""Two ``triact serve --http`` processes on one Redis that is killed (SIGKILL) and
started again on its port and data directory (AOF, ``appendfsync always``) while
clients of both protocol eras increment counters through both: every answer is a
success or a clear retryable error (never a 500 or an internal error), and the history
of what was acknowledged is one the history checker explains, final reads through both
processes included."""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from triact.testing import DataChange, HistoryRecorder, check_history
from triact.transport import ERROR_META_KEY

from .._redis import RedisServer, unique_prefix
from ._http_server import (
    ACCEPT,
    initialize_body,
    serve_processes,
    stateless_call,
    stateless_headers,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")

RESTARTS = 3
SESSIONS = 4
WORKERS = 6
#: Seconds each Redis call may take (the store URL's timeout) before it fails.
REDIS_TIMEOUT = 1
#: The tool errors a client may be answered with while Redis is away: retry later.
RETRYABLE = {"store_error", "busy"}


class Clients:
    """One handshake-era MCP session, opened through the first process and used
    through both, and stateless requests to both: each call picks one at random."""

    def __init__(self, http: httpx.AsyncClient, urls: list[str], seed: int) -> None:
        self.http = http
        self.urls = urls
        self.mcp_session_id = ""
        self.rng = random.Random(seed)
        self.problems: list[str] = []
        self._ids = iter(range(2, 10**9))

    async def open(self) -> None:
        answer = await self.http.post(self.urls[0], json=initialize_body(), headers=ACCEPT)
        assert answer.status_code == 200, answer.text
        self.mcp_session_id = answer.headers["mcp-session-id"]

    async def call(
        self,
        name: str,
        arguments: dict[str, Any],
        url: str | None = None,
        *,
        handshake: bool | None = None,
    ) -> httpx.Response:
        """A tool call through ``url`` (else either process), in the handshake era's
        MCP session or stateless (``handshake``; else either)."""
        url = url or self.rng.choice(self.urls)
        request_id = next(self._ids)
        if handshake is None:
            handshake = self.rng.random() < 0.5
        if not handshake:
            body = stateless_call(name, arguments, request_id)
            return await self.http.post(
                url, json=body, headers=stateless_headers("tools/call", name)
            )
        body = {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": name, "arguments": arguments},
        }
        headers = {
            **ACCEPT,
            "mcp-session-id": self.mcp_session_id,
            "mcp-protocol-version": "2025-11-25",
        }
        return await self.http.post(url, json=body, headers=headers)

    def content(self, answer: httpx.Response) -> dict[str, Any] | None:
        """The call's structured content if it succeeded; None for a clear retryable
        refusal; anything else is noted as a problem (and is None too)."""
        try:
            message: dict[str, Any] = answer.json()
        except ValueError:  # an SSE stream without an answer, say
            message = {}
        if answer.status_code == 503 and "error" in message:
            error = message["error"]
            if error["code"] in (-32600, -32603) and "retry later" in error["message"]:
                return None
        elif answer.status_code == 200 and "result" in message:
            result = message["result"]
            if not result.get("isError"):
                structured: dict[str, Any] = result["structuredContent"]
                return structured
            if result["_meta"][ERROR_META_KEY]["code"] in RETRYABLE:
                return None
        self.problems.append(f"HTTP {answer.status_code}: {answer.text[:500]}")
        return None


async def restart_redis(redis: RedisServer, settle: trio.Event) -> None:
    """Kill Redis and start it again, RESTARTS times, with load in between."""
    for _ in range(RESTARTS):
        await trio.sleep(0.6)
        await trio.to_thread.run_sync(redis.kill)
        await trio.sleep(0.2)
        await trio.to_thread.run_sync(redis.start)
    await trio.sleep(0.6)
    settle.set()


async def increments(
    clients: Clients, recorder: HistoryRecorder, sessions: list[str], task: str, stop: trio.Event
) -> None:
    change = DataChange(increment={"n": 1})
    while not stop.is_set():
        session_id = clients.rng.choice(sessions)
        with recorder.call(task, session_id, "update", change=change) as call:
            answer = await clients.call(
                "session_update", {"session_id": session_id, "increment": {"n": 1}}
            )
            content = clients.content(answer)
            # Refused: it may have happened all the same (a store_error for a write
            # Redis was killed during was committed, in every run tried).
            if content is None:
                call.failed("unknown", answer.text[:300])
            else:
                call.ok_version(content["version"], content["data"])


async def default_increments(
    clients: Clients, recorder: HistoryRecorder, made: set[str], stop: trio.Event
) -> None:
    """Increments of the MCP session's default session (made by the first of them)."""
    change = DataChange(increment={"n": 1})
    while not stop.is_set():
        with recorder.call("default", None, "update", change=change) as call:
            answer = await clients.call("session_update", {"increment": {"n": 1}}, handshake=True)
            content = clients.content(answer)
            if content is None:
                call.failed("unknown", answer.text[:300])
            else:
                made.add(content["session_id"])
                call.ok_version(content["version"], content["data"], content["session_id"])


async def until_answered(attempt: Callable[[], Awaitable[dict[str, Any] | None]]) -> dict[str, Any]:
    """``attempt()`` again until it succeeds (Redis may still be coming back)."""
    with trio.fail_after(20):
        while True:
            content = await attempt()
            if content is not None:
                return content
            await trio.sleep(0.1)


async def test_redis_restarts_under_two_http_processes_lose_nothing_acknowledged(
    private_redis: RedisServer, tmp_path: Path
) -> None:
    store = f"{private_redis.url}?prefix={unique_prefix()}&timeout={REDIS_TIMEOUT}"
    args = ["--store", store, "--secret-key-file", str(tmp_path / "redis.key")]
    recorder = HistoryRecorder()
    async with AsyncExitStack() as stack:
        envs = []
        for name in ("a", "b"):
            home = tmp_path / name
            envs.append({**os.environ, "HOME": str(home), "XDG_STATE_HOME": str(home / "state")})
        processes = await stack.enter_async_context(serve_processes(envs, *args))
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=15))
        clients = Clients(http, [p.url for p in processes], seed=7)
        await clients.open()
        sessions = []
        for _ in range(SESSIONS):
            with recorder.call("setup", None, "create") as call:
                created = await clients.call("session_create", {"topic": "restart"})
                content = clients.content(created)
                assert content is not None, created.text
                view = content["session"]
                call.ok_version(view["version"], view["data"], content["session_id"])
                sessions.append(content["session_id"])
        settle = trio.Event()
        made: set[str] = set()  # the default sessions the MCP session was answered from
        async with trio.open_nursery() as nursery:
            nursery.start_soon(restart_redis, private_redis, settle)
            nursery.start_soon(default_increments, clients, recorder, made, settle)
            for worker in range(WORKERS):
                nursery.start_soon(increments, clients, recorder, sessions, f"w{worker}", settle)
        assert len(made) == 1, made  # one default session, whatever failed meanwhile
        for op in recorder.operations:  # the refused ones were calls of it too
            if op.task == "default":
                op.session_id = next(iter(made))
        # Each process reads every session once Redis serves again.
        for url in clients.urls:
            for session_id in [*sessions, *made]:
                with recorder.call("final", session_id, "read") as call:

                    async def read(session_id: str = session_id, url: str = url) -> Any:
                        arguments = {"session_id": session_id}
                        return clients.content(await clients.call("session_get", arguments, url))

                    view = (await until_answered(read))["session"]
                    call.ok_version(view["version"], view["data"])
        logs = b"".join(p.stderr for p in processes).decode(errors="replace")
    assert not clients.problems, "\n".join([*clients.problems, logs[-4000:]])
    assert "Traceback" not in logs, logs[-4000:]
    history = recorder.history()
    acknowledged = [op for op in history.operations if op.kind == "update" and op.outcome == "ok"]
    assert acknowledged  # the load ran between the restarts
    check_history(history)
