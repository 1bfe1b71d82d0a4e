"""``triact serve`` as a real subprocess, driven by the official MCP SDK client (both eras)
and by raw JSON lines below it."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp
import pytest
import trio
from mcp.client.stdio import stdio_client

from ._sdk import SERVE, SERVE_TOOL_NAMES, error, parameters, sdk_session, structured


async def exercise_every_tool(client: Any, tmp_path: Path) -> None:
    """List the tools and call each, with results and errors, through an SDK client
    (a ClientSession or an mcp.Client: both have list_tools and call_tool)."""
    tools = (await client.list_tools()).tools
    assert [tool.name for tool in tools] == SERVE_TOOL_NAMES
    assert all(tool.output_schema for tool in tools)

    created = structured(await client.call_tool("session_create", {"topic": "e2e"}))
    sid = created["session_id"]
    calls: list[tuple[str, dict[str, Any]]] = [
        ("session_get", {"session_id": sid}),
        ("session_update", {"session_id": sid, "set": {"a": 1}, "increment": {"n": 2}}),
        ("session_set_working_directory", {"session_id": sid, "path": str(tmp_path)}),
        ("session_get_working_directory", {"session_id": sid}),
        ("session_add_thread", {"session_id": sid, "name": "critic"}),
        ("session_record_analysis", {"session_id": sid, "prompt": "p", "responses": ["r"]}),
        ("session_list", {}),
        ("session_stats", {"session_id": sid}),
        ("health_check", {}),
    ]
    for name, arguments in calls:
        structured(await client.call_tool(name, arguments))
    got = structured(await client.call_tool("session_get", {"session_id": sid}))["session"]
    assert got["data"] == {"a": 1, "n": 2}
    assert got["working_directory"] == str(tmp_path)
    assert got["version"] == 5
    ended = structured(await client.call_tool("session_end", {"session_id": sid}))
    assert ended["session"]["version"] == 5
    gone = await client.call_tool("session_get", {"session_id": sid})
    assert error(gone)["code"] == "not_found"

    bound = structured(await client.call_tool("session_create", {"bind_client": True}))
    refused = await client.call_tool("session_get", {"session_id": bound["session_id"]})
    assert error(refused)["code"] == "unauthorized"
    with_token = {"session_id": bound["session_id"], "token": bound["token"]}
    structured(await client.call_tool("session_get", with_token))
    conflict = await client.call_tool(
        "session_update", {**with_token, "set": {"x": 1}, "expected_version": 99}
    )
    assert error(conflict)["code"] == "conflict"
    bad = await client.call_tool("session_update", {**with_token, "set": "not an object"})
    assert "arguments.set: expected an object" in error(bad)["message"]


async def test_sdk_handshake_calls_every_tool(tmp_path: Path) -> None:
    async with sdk_session(tmp_path, "--store", "memory") as session:
        await exercise_every_tool(session, tmp_path)
        # The connection's default session, when session_id is left out.
        default = structured(await session.call_tool("session_update", {"set": {"d": True}}))
        got = structured(await session.call_tool("session_get"))["session"]
        assert got["session_id"] == default["session_id"]


async def test_sdk_stateless_calls_every_tool(tmp_path: Path) -> None:
    params = parameters(tmp_path, "--store", "memory")
    async with mcp.Client(params, mode="2026-07-28") as client:
        await exercise_every_tool(client, tmp_path)
        no_id = await client.call_tool("session_get", {})
        assert "needs session_id" in error(no_id)["message"]


@pytest.mark.parametrize("era", ["legacy", "2026-07-28"])
async def test_sdk_50_concurrent_calls_across_sessions(tmp_path: Path, era: str) -> None:
    params = parameters(tmp_path, "--store", f"sqlite:{tmp_path / 's.db'}")
    async with mcp.Client(params, mode=era) as client:
        assert client.protocol_version == ("2025-11-25" if era == "legacy" else era)
        ids = [
            (await client.call_tool("session_create", {})).structured_content["session_id"]
            for _ in range(10)
        ]
        results: list[Any] = []

        async def bump(session_id: str) -> None:
            result = await client.call_tool(
                "session_update", {"session_id": session_id, "increment": {"n": 1}}
            )
            results.append(result)

        async with anyio.create_task_group() as tasks:
            for i in range(50):
                tasks.start_soon(bump, ids[i % 10])
        assert len(results) == 50
        assert not any(result.is_error for result in results)
        for session_id in ids:
            got = await client.call_tool("session_get", {"session_id": session_id})
            assert got.structured_content["session"]["data"] == {"n": 5}


async def test_sdk_stateless_era(tmp_path: Path) -> None:
    async with mcp.Client(parameters(tmp_path, "--store", "memory"), mode="auto") as client:
        assert client.protocol_version == "2026-07-28"
        tools = await client.list_tools()
        update = next(tool for tool in tools.tools if tool.name == "session_update")
        assert "session_id" in update.input_schema["required"]
        no_id = await client.call_tool("session_get", {})
        assert error(no_id)["code"] == "invalid_arguments"
        sid = structured(await client.call_tool("session_create", {"topic": "s"}))["session_id"]
        structured(await client.call_tool("session_update", {"session_id": sid, "set": {"k": "v"}}))
        got = structured(await client.call_tool("session_get", {"session_id": sid}))
        assert got["session"]["data"] == {"k": "v"}
        health = structured(await client.call_tool("health_check", {}))
        assert health["status"] == "ok"


@pytest.mark.parametrize("era", ["legacy", "2026-07-28"])
async def test_sdk_cancellations_reach_the_server(tmp_path: Path, era: str) -> None:
    params = parameters(tmp_path, "--store", f"sqlite:{tmp_path / 's.db'}", "--log-level", "debug")
    log = tmp_path / "stderr.log"
    with log.open("w") as errlog:
        async with mcp.Client(stdio_client(params, errlog=errlog), mode=era) as client:
            sid = structured(await client.call_tool("session_create", {}))["session_id"]
            done = 0
            ten_done = anyio.Event()

            async def bump() -> None:
                nonlocal done
                arguments = {"session_id": sid, "increment": {"n": 1}}
                await client.call_tool("session_update", arguments)
                done += 1
                if done == 10:
                    ten_done.set()

            async with anyio.create_task_group() as tasks:
                for _ in range(100):
                    tasks.start_soon(bump)
                await ten_done.wait()
                tasks.cancel_scope.cancel()  # the SDK sends notifications/cancelled
            assert structured(await client.call_tool("health_check", {}))["status"] == "ok"
            got = structured(await client.call_tool("session_get", {"session_id": sid}))
    n = got["session"]["data"]["n"]
    assert done <= n <= 100
    assert got["session"]["version"] == n + 1  # each change whole, none half-done
    text = log.read_text()
    # Every cancellation arrived: it found its call in flight (and stopped it), or
    # already answered.
    assert 0 < text.count("cancel of ") + text.count("cancelling request") <= 100 - done


# -- raw JSON lines ----------------------------------------------------------------------


class Raw:
    """``triact serve`` with its stdin and stdout as pipes."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = b""

    async def send(self, *messages: dict[str, Any] | bytes) -> None:
        data = b"".join(
            m if isinstance(m, bytes) else json.dumps(m).encode() + b"\n" for m in messages
        )
        assert self.process.stdin is not None
        await self.process.stdin.send_all(data)

    async def receive(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        # Only against a hang: several servers started at once on a loaded machine take
        # seconds each to import and answer their first message.
        with trio.fail_after(30):
            while b"\n" not in self._buffer:
                data = await self.process.stdout.receive_some(65536)
                assert data, "stdout ended"
                self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)  # stdout carries only JSON-RPC
        assert message["jsonrpc"] == "2.0"
        return message

    async def close_input(self) -> int:
        assert self.process.stdin is not None
        await self.process.stdin.aclose()
        return await self.wait()

    async def wait(self) -> int:
        assert self.process.stdout is not None
        with trio.fail_after(10):
            rest = b""
            while data := await self.process.stdout.receive_some(65536):
                rest += data
            assert rest == b"" or all(json.loads(line) for line in rest.splitlines())
            return await self.process.wait()


@asynccontextmanager
async def raw_server(tmp_path: Path, *args: str) -> AsyncIterator[Raw]:
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    with (tmp_path / "stderr.log").open("a") as errlog:
        process = await trio.lowlevel.open_process(
            [*SERVE, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errlog,
            env=env,
        )
        try:
            yield Raw(process)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}


def call(request_id: Any, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments},
    }


async def test_raw_garbage_oversized_and_binary_lines(tmp_path: Path) -> None:
    async with raw_server(tmp_path, "--store", "memory", "--max-line-bytes", "2000") as server:
        await server.send(INITIALIZE)
        assert (await server.receive())["id"] == 0
        await server.send(
            b"not json at all\n",
            b"\x00\x9f\xff binary \xfe\n",
            b'{"jsonrpc":"2.0","id":1,"method":"ping"' + b" " * 5000 + b"}\n",
            b'[{"jsonrpc":"2.0","id":2,"method":"ping"}]\n',
            b'{"jsonrpc":"2.0","id":null,"method":"ping"}\n',
            {"jsonrpc": "2.0", "id": 3, "method": "ping"},
        )
        errors = [await server.receive() for _ in range(5)]
        assert [e["id"] for e in errors] == [None] * 5
        assert [e["error"]["code"] for e in errors] == [-32700, -32700, -32600, -32600, -32600]
        assert await server.receive() == {"jsonrpc": "2.0", "id": 3, "result": {}}
        assert await server.close_input() == 0


async def test_raw_stateless_discover_and_unsupported_version(tmp_path: Path) -> None:
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    async with raw_server(tmp_path, "--store", "memory") as server:
        await server.send(
            {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta}}
        )
        discover = (await server.receive())["result"]
        assert discover["supportedVersions"][0] == "2026-07-28"
        assert discover["resultType"] == "complete"
        old = {**meta, "io.modelcontextprotocol/protocolVersion": "2020-01-01"}
        await server.send(
            {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"_meta": old}}
        )
        refused = (await server.receive())["error"]
        assert refused["code"] == -32022
        assert refused["data"]["requested"] == "2020-01-01"
        assert await server.close_input() == 0


async def test_raw_cancelled_calls_either_happened_and_were_answered_or_did_not(
    tmp_path: Path,
) -> None:
    async with raw_server(tmp_path, "--store", f"sqlite:{tmp_path / 's.db'}") as server:
        await server.send(INITIALIZE, call(1, "session_create", {}))
        await server.receive()
        sid = (await server.receive())["result"]["structuredContent"]["session_id"]
        bumps = [
            call(100 + i, "session_update", {"session_id": sid, "increment": {"n": 1}})
            for i in range(100)
        ]
        cancels = [
            {
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": {"requestId": 100 + i},
            }
            for i in range(0, 100, 2)
        ]
        await server.send(*bumps, *cancels)
        never_cancelled = set(range(101, 200, 2))
        answered = set()
        while not never_cancelled <= answered:
            message = await server.receive()
            assert message["result"]["isError"] is False
            answered.add(message["id"])
        await server.send(call(3, "session_get", {"session_id": sid}))
        message = await server.receive()
        while message["id"] != 3:  # a late answer to a call cancelled too late
            answered.add(message["id"])
            message = await server.receive()
        assert message["result"]["structuredContent"]["session"]["data"]["n"] == len(answered)
        assert await server.close_input() == 0


async def test_end_of_input_exits_0_and_sessions_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    async with raw_server(tmp_path, "--store", f"sqlite:{db}") as server:
        await server.send(
            INITIALIZE,
            call(1, "session_create", {"bind_client": True, "topic": "kept"}),
        )
        await server.receive()
        created = (await server.receive())["result"]["structuredContent"]
        sid, token = created["session_id"], created["token"]
        await server.send(
            call(2, "session_update", {"session_id": sid, "token": token, "set": {"a": 1}})
        )
        assert (await server.receive())["result"]["isError"] is False
        assert await server.close_input() == 0
    key_file = tmp_path / "s.db.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    async with raw_server(tmp_path, "--store", f"sqlite:{db}") as server:
        await server.send(INITIALIZE, call(1, "session_get", {"session_id": sid, "token": token}))
        await server.receive()
        session = (await server.receive())["result"]["structuredContent"]["session"]
        assert (session["topic"], session["data"], session["version"]) == ("kept", {"a": 1}, 2)
        assert await server.close_input() == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_exits_0_after_flushing(tmp_path: Path, signum: int) -> None:
    db = tmp_path / "s.db"
    async with raw_server(tmp_path, "--store", f"sqlite:{db}") as server:
        await server.send(INITIALIZE, call(1, "session_update", {"set": {"saved": True}}))
        await server.receive()
        sid = (await server.receive())["result"]["structuredContent"]["session_id"]
        server.process.send_signal(signum)
        assert await server.wait() == 0
    async with raw_server(tmp_path, "--store", f"sqlite:{db}") as server:
        await server.send(INITIALIZE, call(1, "session_get", {"session_id": sid}))
        await server.receive()
        session = (await server.receive())["result"]["structuredContent"]["session"]
        assert session["data"] == {"saved": True}
        assert await server.close_input() == 0


async def test_default_store_is_sqlite_in_the_state_directory(tmp_path: Path) -> None:
    async with raw_server(tmp_path) as server:
        await server.send(INITIALIZE, call(1, "health_check", {}))
        await server.receive()
        health = (await server.receive())["result"]["structuredContent"]
        assert health["store"] == "sqlite"
        assert await server.close_input() == 0
    assert (tmp_path / "state" / "triact" / "sessions.db").exists()
    assert (tmp_path / "state" / "triact" / "sessions.db.key").exists()


def test_requests_from_a_file_are_answered_into_a_file(tmp_path: Path) -> None:
    """``triact serve < requests.jsonl > answers.jsonl``: a regular file cannot be
    waited on (epoll refuses it), and the server failed with a PermissionError
    traceback before reading a line; stdin from /dev/null did too."""
    requests = tmp_path / "requests.jsonl"
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    lines = [INITIALIZE, call(1, "session_create", {"topic": "f"}), ping]
    requests.write_text("".join(json.dumps(line) + "\n" for line in lines))
    answers = tmp_path / "answers.jsonl"
    with requests.open("rb") as stdin, answers.open("wb") as stdout:
        done = subprocess.run(
            [*SERVE, "--store", "memory"], stdin=stdin, stdout=stdout, timeout=60, check=False
        )
    assert done.returncode == 0
    answered = {
        answer["id"]: answer for answer in map(json.loads, answers.read_text().splitlines())
    }
    assert sorted(answered) == [0, 1, 2]  # (answered as they finish)
    assert answered[1]["result"]["structuredContent"]["session"]["topic"] == "f"
    nothing = subprocess.run(
        [*SERVE, "--store", "memory"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert (nothing.returncode, nothing.stdout) == (0, b"")


@pytest.mark.parametrize(("fd", "name"), [(0, "stdin"), (1, "stdout")])
def test_a_closed_stdin_or_stdout_is_refused_before_anything_opens(
    tmp_path: Path, fd: int, name: str
) -> None:
    """It failed with an AttributeError traceback (sys.stdin or sys.stdout is None);
    a file opened meanwhile (the store's) could have taken the fd."""
    done = subprocess.run(
        [*SERVE, "--store", f"sqlite:{tmp_path / 's.db'}"],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=lambda: os.close(fd),
    )
    assert done.returncode == 2
    assert f"triact serve: error: {name} is closed" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "s.db").exists()
