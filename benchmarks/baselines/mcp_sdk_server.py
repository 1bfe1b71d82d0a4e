"""The reference MCP server for ``benchmarks/mcp_stdio.py``: a session tool written the
way the official MCP Python SDK teaches, with its own server class (``MCPServer``,
formerly ``FastMCP``) on its stdio transport.

It offers ``session_create`` and ``session_update`` with the arguments and the result
shape of triact's (``set``, ``increment``, ``delete``, ``expected_version``; result
``{session_id, version, data}`` as structured content with its text rendering, errors
as ``isError`` results). Sessions live in a dict in memory. The tools are ``async``
functions (the SDK runs plain functions on a worker thread) that never await, so no
two updates interleave and no lock is needed: every cost measured is the SDK's own.

The SDK's stdio server is dual-era: the client's first request decides whether the
connection speaks the initialize handshake (2024-11-05 to 2025-11-25) or the stateless
revision (2026-07-28).

    python benchmarks/baselines/mcp_sdk_server.py
"""

import math
import secrets
from typing import Any, TypedDict

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError


class _Session:
    __slots__ = ("data", "topic", "version")

    def __init__(self, topic: str | None) -> None:
        self.topic = topic
        self.version = 1
        self.data: dict[str, Any] = {}


class CreateResult(TypedDict):
    session_id: str
    version: int


class UpdateResult(TypedDict):
    session_id: str
    version: int
    data: dict[str, Any]


def make_server() -> MCPServer:
    server = MCPServer("sessions-reference", log_level="WARNING")
    sessions: dict[str, _Session] = {}

    @server.tool()
    async def session_create(topic: str | None = None) -> CreateResult:
        """Create a session and return its session_id."""
        session_id = secrets.token_urlsafe(16)
        sessions[session_id] = _Session(topic)
        return {"session_id": session_id, "version": 1}

    @server.tool()
    async def session_update(
        session_id: str,
        set: dict[str, Any] | None = None,  # the tool argument is named like triact's
        increment: dict[str, float] | None = None,
        delete: list[str] | None = None,
        expected_version: int | None = None,
    ) -> UpdateResult:
        """Change the session's data atomically: set keys, increment numeric keys,
        delete keys; with expected_version, only at that version."""
        session = sessions.get(session_id)
        if session is None:
            raise ToolError(f"not_found: no session {session_id!r}; create one")
        if expected_version is not None and expected_version != session.version:
            raise ToolError(
                f"conflict: session {session_id!r} is at version {session.version}, "
                f"not {expected_version}"
            )
        data = dict(session.data)
        for key in delete or ():
            data.pop(key, None)
        data.update(set or {})
        for key, delta in (increment or {}).items():
            old = data.get(key, 0)
            if type(old) not in (int, float) or not math.isfinite(old + delta):
                raise ToolError(f"invalid_arguments: data[{key!r}] cannot be incremented")
            data[key] = old + delta
        session.data = data
        session.version += 1
        return {"session_id": session_id, "version": session.version, "data": data}

    return server


if __name__ == "__main__":
    make_server().run("stdio")
