"""The naive shared-store baseline: session tools written the way the official MCP
Python SDK teaches (its ``MCPServer`` served by its own ``streamable_http_app``,
stateless, JSON responses, on uvicorn), keeping each session as one JSON value in Redis
and changing it by read-modify-write: ``GET``, change it in Python, ``SET``. Nothing
makes the ``GET`` and the ``SET`` one step: two updates of one session that overlap
(in one process, across an ``await``, or in two processes) both read version v and
both write v + 1, and one of them is lost although both were acknowledged.

``triact stress`` (``--target http`` or ``cluster`` with ``--server-command``) and
``benchmarks/cluster.py`` run it beside ``triact serve --http`` so that the history
checker shows what it catches. Its tools take the arguments and give the results of
triact's (``session_create``, ``session_get``, ``session_update`` with ``set``,
``increment``, ``delete`` and ``expected_version``, ``session_end``), errors as
``isError`` results whose ``_meta`` carries triact's error object (code, message,
actual version), so one client reads both.

    python benchmarks/baselines/mcp_sdk_redis_server.py --redis redis://HOST:PORT/DB?prefix=P
        [--http HOST:PORT]

It prints ``listening on http://HOST:PORT/mcp`` on stderr once uvicorn has started.
"""

import argparse
import json
import math
import secrets
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import anyio
import redis.asyncio as aioredis
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult, TextContent

ERROR_META_KEY = "triact/error"  # where triact's tool errors carry their object


def _ok(result: dict[str, Any]) -> CallToolResult:
    text = json.dumps(result, separators=(",", ":"))
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=result)


def _error(code: str, message: str, **extra: Any) -> CallToolResult:
    error = {"code": code, "message": message, **extra}
    return CallToolResult(
        content=[TextContent(type="text", text=f"{code}: {message}")],
        is_error=True,
        _meta={ERROR_META_KEY: error},
    )


def make_server(client: "aioredis.Redis", prefix: str) -> MCPServer:
    server = MCPServer("sessions-redis-naive", log_level="WARNING")

    def key(session_id: str) -> str:
        return f"{prefix}{session_id}"

    async def load(session_id: str) -> dict[str, Any] | None:
        raw = await client.get(key(session_id))
        return None if raw is None else json.loads(raw)  # type: ignore[no-any-return]

    def view(session_id: str, record: dict[str, Any]) -> dict[str, Any]:
        return {"session_id": session_id, "version": record["version"], "data": record["data"]}

    @server.tool()
    async def session_create(topic: str | None = None) -> CallToolResult:
        """Create a session and return its session_id."""
        session_id = secrets.token_urlsafe(16)
        record = {"topic": topic, "version": 1, "data": {}}
        await client.set(key(session_id), json.dumps(record))
        return _ok({"session_id": session_id, "session": view(session_id, record)})

    @server.tool()
    async def session_get(session_id: str) -> CallToolResult:
        """The session's version and data."""
        record = await load(session_id)
        if record is None:
            return _error("not_found", f"no session {session_id!r}")
        return _ok({"session": view(session_id, record)})

    @server.tool()
    async def session_update(
        session_id: str,
        set: dict[str, Any] | None = None,  # the tool argument is named like triact's
        increment: dict[str, float] | None = None,
        delete: list[str] | None = None,
        expected_version: int | None = None,
    ) -> CallToolResult:
        """Change the session's data: GET, change, SET (no atomicity at all)."""
        record = await load(session_id)
        if record is None:
            return _error("not_found", f"no session {session_id!r}")
        if expected_version is not None and expected_version != record["version"]:
            return _error(
                "conflict",
                f"session {session_id!r} is at version {record['version']}",
                actual_version=record["version"],
            )
        data = dict(record["data"])
        for name in delete or ():
            data.pop(name, None)
        data.update(set or {})
        for name, delta in (increment or {}).items():
            old = data.get(name, 0)
            if type(old) not in (int, float) or not math.isfinite(old + delta):
                return _error("invalid_arguments", f"data[{name!r}] cannot be incremented")
            data[name] = old + delta
        record = {**record, "version": record["version"] + 1, "data": data}
        await client.set(key(session_id), json.dumps(record))
        return _ok(view(session_id, record))

    @server.tool()
    async def session_end(session_id: str) -> CallToolResult:
        """End the session: its last version and data."""
        record = await load(session_id)
        if record is None:
            return _error("not_found", f"no session {session_id!r}")
        await client.delete(key(session_id))
        return _ok({"session": view(session_id, record)})

    return server


def redis_and_prefix(url: str) -> tuple[str, str]:
    """The Redis URL without its ``prefix=`` query, and the prefix."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    prefix = query.pop("prefix", ["triact-naive:"])[0]
    rest = "&".join(f"{k}={v[0]}" for k, v in query.items())
    return urlunsplit(parts._replace(query=rest)), prefix


async def serve(redis_url: str, host: str, port: int) -> None:
    url, prefix = redis_and_prefix(redis_url)
    client = aioredis.Redis.from_url(url)
    app = make_server(client, prefix).streamable_http_app(stateless_http=True, json_response=True)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as group:
        group.start_soon(server.serve)
        while not server.started:  # noqa: ASYNC110 (uvicorn has no event for it)
            await anyio.sleep(0.01)
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        print(f"listening on http://{host}:{port}/mcp", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument("--redis", required=True, metavar="URL")
    parser.add_argument("--http", default="127.0.0.1:0", metavar="HOST:PORT")
    args = parser.parse_args()
    host, _, port = args.http.rpartition(":")
    anyio.run(serve, args.redis, host or "127.0.0.1", int(port))


if __name__ == "__main__":
    main()
