"""``triact serve`` as a real subprocess, for the tests that drive it with the official
MCP SDK client."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

SERVE = [sys.executable, "-m", "triact.cli", "serve"]
#: The tools ``triact serve`` lists, in order: the session tools, the work layer's
#: session_end in the place of theirs, then the other work tools.
SERVE_TOOL_NAMES = [
    "session_create",
    "session_get",
    "session_update",
    "session_set_working_directory",
    "session_get_working_directory",
    "session_add_thread",
    "session_record_analysis",
    "session_end",
    "session_list",
    "session_stats",
    "health_check",
    "session_start",
    "session_checkpoint",
    "session_status",
    "trust_grant",
    "trust_revoke",
    "trust_list",
    "reflection_store",
    "reflection_search",
    "conversation_save",
    "conversation_search",
]


def parameters(tmp_path: Path, *args: str, path: str | None = None) -> StdioServerParameters:
    """``triact serve *args``, with its state directory and home under ``tmp_path``
    (and ``path`` as its ``PATH``, if given)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "HOME": str(home)}
    if "PYTHONPATH" in os.environ:  # the triact under test, not the one installed
        paths = os.environ["PYTHONPATH"].split(os.pathsep)
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(path) for path in paths)
    if path is not None:
        env["PATH"] = path
    return StdioServerParameters(command=SERVE[0], args=[*SERVE[1:], *args], env=env)


@asynccontextmanager
async def sdk_session(
    tmp_path: Path, *args: str, path: str | None = None
) -> AsyncIterator[ClientSession]:
    """An initialized (handshake-era) SDK ClientSession on a fresh ``triact serve
    *args`` (``path``: its ``PATH``), its stderr in ``tmp_path / "stderr.log"``."""
    with (tmp_path / "stderr.log").open("a") as errlog:
        async with (
            stdio_client(parameters(tmp_path, *args, path=path), errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            await session.list_tools()  # the SDK checks results against these schemas
            yield session


def structured(result: Any) -> dict[str, Any]:
    """The structured content of a successful tool result (its text block holds the
    same JSON)."""
    assert result.is_error is False, result
    content: dict[str, Any] = result.structured_content
    assert json.loads(result.content[0].text) == content
    return content


def error(result: Any) -> dict[str, Any]:
    """The error object of a failed tool result."""
    assert result.is_error is True, result
    assert result.structured_content is None, result
    failure: dict[str, Any] = result.meta["triact/error"]
    assert result.content[0].text == f"{failure['code']}: {failure['message']}"
    return failure
