"""Errors that quote what a client sent quote at most a short prefix of it: a method,
a tool's name, a session id or a working directory of megabytes does not come back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import triact
from triact.transport import SESSION_TOOLS
from triact.work import WorkConfig, open_work_sessions, work_tools

from .conftest import Peer, connect
from .test_prompts import GREET

LONG = "x" * 100_000


def error_of(response: dict[str, Any]) -> dict[str, Any]:
    error: dict[str, Any] = response["error"]
    return error


def _small(answer: dict[str, Any]) -> str:
    said = json.dumps(answer)
    assert len(said) < 2_000, said[:300]
    return said


async def test_an_unknown_method_is_quoted_cut_short(peer: Peer) -> None:
    error = error_of(await peer.request("tools/" + LONG, {}))
    _small(error)
    assert error["code"] == -32601
    assert error["message"].startswith('Method not found: "tools/xxx')
    assert error["message"].endswith("... (100006 characters)")
    assert error["data"]["method"] == ("tools/" + LONG)[:40]
    short = error_of(await peer.request("nope/nope", {}))
    assert (short["message"], short["data"]) == (
        "Method not found: nope/nope",
        {"method": "nope/nope"},
    )


async def test_an_unknown_tool_is_quoted_cut_short(peer: Peer) -> None:
    error = error_of(await peer.request("tools/call", {"name": LONG}))
    _small(error)
    assert error["code"] == -32602
    assert error["message"] == f'Unknown tool: "{"x" * 40}"... (100000 characters)'


async def test_a_session_id_is_quoted_cut_short(peer: Peer) -> None:
    answer = await peer.request(
        "tools/call", {"name": "session_get", "arguments": {"session_id": LONG}}
    )
    said = _small(answer)
    assert "not_found" in said
    assert "100000 characters" in said


async def test_a_working_directory_is_quoted_cut_short(
    manager: triact.SessionManager, tmp_path: Path
) -> None:
    async with open_work_sessions(manager, WorkConfig(semantic="off")) as work:
        tools = SESSION_TOOLS | work_tools(work)
        async with connect(manager, tools=tools, initialize="2025-11-25") as peer:
            for directory in ("/" + LONG, LONG, str(tmp_path / LONG[:200]) + "/" + LONG):
                arguments = {"working_directory": directory}
                answer = await peer.request(
                    "tools/call", {"name": "session_start", "arguments": arguments}
                )
                said = _small(answer)
                assert "invalid_arguments" in said
                assert "characters" in said


async def test_a_notification_method_with_an_id_is_quoted_cut_short(peer: Peer) -> None:
    error = error_of(await peer.request("notifications/" + LONG, {}))
    _small(error)
    assert error["code"] == -32600
    assert '"notifications/xxx' in error["message"]


async def test_unknown_prompt_arguments_are_listed_cut_short(
    manager: triact.SessionManager,
) -> None:
    async with connect(manager, prompts=GREET, initialize="2025-11-25") as peer:
        arguments = {"name": "a", **{f"{n}{LONG[:1000]}": "b" for n in range(100)}}
        answer = await peer.request("prompts/get", {"name": "greet", "arguments": arguments})
    error = error_of(answer)
    _small(error)
    assert error["message"].count(" characters)") == 5
    assert "and 95 more" in error["message"]
