"""``triact demo``: start ``triact serve`` as a subprocess, drive it as an MCP client
would (newline-delimited JSON-RPC on its stdin and stdout), and print each exchange.

The client here is a minimal one of our own, so that the demo needs nothing beyond
triact itself (the official MCP SDK is only a test dependency).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import trio

from .transport import ERROR_META_KEY

#: The server the demo starts: this interpreter's triact, sessions kept in memory.
SERVE = (sys.executable, "-m", "triact", "serve", "--store", "memory")
PROTOCOL = "2025-11-25"
_TIMEOUT = 30.0  # seconds for the whole demo; a stuck server is killed


class DemoError(Exception):
    """The server did not answer as the demo expected."""


class Client:
    """A minimal MCP client on a ``triact serve`` subprocess: one JSON-RPC message
    per line, requests numbered from 1."""

    def __init__(self, process: trio.Process) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        self._stdin = process.stdin
        self._stdout = process.stdout
        self._buffer = b""
        self._next_id = 0
        self._answers: dict[int, dict[str, Any]] = {}

    async def send(self, *messages: dict[str, Any]) -> None:
        await self._stdin.send_all(b"".join(json.dumps(m).encode() + b"\n" for m in messages))

    def request_message(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        return {"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params}

    async def answer(self, request_id: int) -> dict[str, Any]:
        """The response to ``request_id``, keeping those that arrive before it."""
        while request_id not in self._answers:
            data = await self._stdout.receive_some(1 << 16)
            if not data:
                raise DemoError("the server closed its output")
            *lines, self._buffer = (self._buffer + data).split(b"\n")
            for line in lines:
                message = json.loads(line)
                if "id" in message:  # not a notification
                    self._answers[message["id"]] = message
        answer = self._answers.pop(request_id)
        if "result" not in answer:
            raise DemoError(f"request {request_id} failed: {answer.get('error')}")
        result: dict[str, Any] = answer["result"]
        return result

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        message = self.request_message(method, params)
        await self.send(message)
        return await self.answer(message["id"])

    async def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """Call a tool; return its structured content, or ``{"error": ...}`` with the
        error object of a tool error."""
        result = await self.request("tools/call", {"name": tool, "arguments": arguments})
        if result.get("isError"):
            return {"error": result["_meta"][ERROR_META_KEY]}
        structured: dict[str, Any] = result["structuredContent"]
        return structured

    async def close(self) -> None:
        """End of input: the server finishes and exits."""
        await self._stdin.aclose()


def show(arrow: str, text: str) -> None:
    print(f"{arrow} {text}", flush=True)


def brief(arguments: dict[str, Any]) -> str:
    """The arguments as compact JSON, without the session id every call carries."""
    shown = {k: v for k, v in arguments.items() if k != "session_id"}
    return json.dumps(shown) if shown else ""


async def demo() -> int:
    """Run the demo; return the exit status (0 if every step went as expected)."""
    show("$", " ".join(["python", *SERVE[1:]]))
    process = await trio.lowlevel.open_process(
        list(SERVE), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        with trio.fail_after(_TIMEOUT):
            await converse(Client(process))
            status = await process.wait()
    except (DemoError, trio.TooSlowError, trio.BrokenResourceError, OSError) as exc:
        print(f"demo failed: {exc!r}", file=sys.stderr)
        process.kill()
        await process.wait()
        return 1
    show("  ", f"the server stopped at end of input, exit status {status}")
    return 0 if status == 0 else 1


async def converse(client: Client) -> None:
    await handshake(client)
    session_id = await updates(client)
    await reads_and_end(client, session_id)
    await client.close()


async def handshake(client: Client) -> None:
    show("->", f"initialize (protocol {PROTOCOL})")
    init = await client.request(
        "initialize",
        {
            "protocolVersion": PROTOCOL,
            "capabilities": {},
            "clientInfo": {"name": "triact-demo", "version": "0"},
        },
    )
    await client.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    server = init["serverInfo"]
    show(
        "<-",
        f"{server['name']} {server['version']}, protocol {init['protocolVersion']}, "
        f"capabilities: {', '.join(init['capabilities'])}",
    )
    show("->", "tools/list")
    tools = [tool["name"] for tool in (await client.request("tools/list", {}))["tools"]]
    show("<-", f"{len(tools)} tools: {', '.join(tools)}")


async def update(client: Client, session_id: str, **arguments: Any) -> dict[str, Any]:
    show("->", f"session_update {brief(arguments)}")
    result = await client.call("session_update", {"session_id": session_id, **arguments})
    if "error" in result:
        error = result["error"]
        show("<-", f"{error['code']}: {error['message']}")
    else:
        show("<-", f"version {result['version']}, data {json.dumps(result['data'])}")
    return result


async def updates(client: Client) -> str:
    show("->", 'session_create {"topic": "demo"}')
    created = await client.call("session_create", {"topic": "demo"})
    session_id: str = created["session_id"]
    show("<-", f"session {session_id}, version {created['session']['version']}")
    await update(client, session_id, set={"draft": "intro"})
    await update(client, session_id, increment={"edits": 1}, expected_version=2)
    stale = await update(client, session_id, set={"draft": "lost?"}, expected_version=2)
    if stale.get("error", {}).get("code") != "conflict":
        raise DemoError(f"a stale expected_version was not refused: {stale}")
    show("  ", "(expected_version 2 was stale: nothing changed)")

    burst = [
        client.request_message(
            "tools/call",
            {
                "name": "session_update",
                "arguments": {"session_id": session_id, "increment": {"edits": 1}},
            },
        )
        for _ in range(10)
    ]
    show("->", 'session_update {"increment": {"edits": 1}} x 10, sent at once')
    await client.send(*burst)
    versions = [(await client.answer(m["id"]))["structuredContent"]["version"] for m in burst]
    show("<-", f"versions {', '.join(map(str, versions))}: one at a time, in the order sent")
    if versions != list(range(versions[0], versions[0] + len(burst))):
        raise DemoError(f"the burst was not applied in order: {versions}")
    return session_id


async def reads_and_end(client: Client, session_id: str) -> None:
    show("->", "session_get")
    session = (await client.call("session_get", {"session_id": session_id}))["session"]
    show("<-", f"version {session['version']}, data {json.dumps(session['data'])}")
    show("->", "session_stats")
    stats = await client.call("session_stats", {"session_id": session_id})
    mine, everyone = stats["session"], stats["manager"]
    show(
        "<-",
        f"session: {mine['operations']} operations, {mine['errors']} error(s); "
        f"server: {everyone['sessions']} session(s), store {everyone['store']}, "
        f"p50 latency {everyone['latency']['p50'] * 1e3:.3f} ms",
    )
    show("->", "session_end")
    ended = await client.call("session_end", {"session_id": session_id})
    show("<-", f"ended: {ended['ended']}, final version {ended['session']['version']}")
    show("->", "session_get")
    gone = (await client.call("session_get", {"session_id": session_id}))["error"]
    show("<-", f"{gone['code']}: {gone['message']}")
