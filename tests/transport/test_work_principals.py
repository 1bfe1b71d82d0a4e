"""The work tools keep each principal's records apart, through ``triact serve``: two
principals over ``--http --tokens`` with the official SDK client save reflections and
conversation excerpts in one project and end sessions in one directory, and each finds
only its own; an unauthenticated stdio server on the same SQLite file sees only what
was kept without a principal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mcp

from ._sdk import sdk_session, structured
from .test_http_auth import ALICE, BOB, sdk_client, served, token_file


async def call(client: mcp.Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert result.is_error is False, result
    content: dict[str, Any] = result.structured_content  # type: ignore[assignment]
    return content


def contents(found: dict[str, Any]) -> list[str]:
    return sorted(hit["content"] for hit in found["results"])


async def test_principals_keep_their_work_records_apart(tmp_path: Path) -> None:
    directory = tmp_path / "project"
    directory.mkdir()
    database = tmp_path / "shared.db"
    # Words alone (docs/testing.md), or each of the three servers would load the model;
    # tests/work/test_principals.py keeps the principals apart in search by meaning.
    stdio = ("--store", f"sqlite:{database}", "--semantic", "off")

    # Without a principal (stdio): a reflection, and a session ended in the directory.
    async with sdk_session(tmp_path, *stdio) as nobody:
        await nobody.call_tool(
            "reflection_store", {"content": "parser note of nobody", "project": "p"}
        )
        started = structured(
            await nobody.call_tool("session_start", {"working_directory": str(directory)})
        )
        nobodys_session = started["session_id"]
        await nobody.call_tool("session_end", {"session_id": nobodys_session})

    options = ("--http", "127.0.0.1:0", "--tokens", str(token_file(tmp_path)), *stdio)
    async with (
        served(*options, env_home=tmp_path) as (url, _),
        sdk_client(url, ALICE, "legacy") as alice,
        sdk_client(url, BOB, "2026-07-28") as bob,
    ):
        for client, who in ((alice, "alice"), (bob, "bob")):
            stored = await call(
                client, "reflection_store", {"content": f"parser note of {who}", "project": "p"}
            )
            assert stored["kept"] == 1  # its own only: nobody's is not counted
            await call(client, "conversation_save", {"content": f"parser talk of {who}"})
        for client, who in ((alice, "alice"), (bob, "bob")):
            for scope in ({"project": "p"}, {}):
                found = await call(client, "reflection_search", {"query": "parser", **scope})
                assert contents(found) == [f"parser note of {who}"]
            talk = await call(client, "conversation_search", {"query": "parser"})
            assert contents(talk) == [f"parser talk of {who}"]

        # One directory: each principal's start, handoff and resume are its own.
        where = {"working_directory": str(directory)}
        alices = await call(alice, "session_start", where)
        assert alices["created"]
        assert alices["report"]["previous_handoff"] is None
        assert alices["handoff_markdown"] is None  # not nobody's
        bobs = await call(bob, "session_start", where)
        assert bobs["created"]
        assert bobs["session_id"] != alices["session_id"]
        again = await call(alice, "session_start", where)
        assert (again["created"], again["session_id"]) == (False, alices["session_id"])
        await call(
            alice,
            "session_checkpoint",
            {"session_id": alices["session_id"], "note": "alice's secret plan"},
        )
        await call(alice, "session_end", {"session_id": alices["session_id"]})
        status = await call(bob, "session_status", {"session_id": bobs["session_id"]})
        assert status["report"]["previous_handoff"] is None
        assert "secret" not in str(status)
        await call(bob, "session_end", {"session_id": bobs["session_id"]})
        bob_next = await call(bob, "session_start", where)
        handoff = bob_next["report"]["previous_handoff"]
        assert handoff["session_id"] == bobs["session_id"]
        assert "secret" not in str(bob_next)
        alice_next = await call(alice, "session_start", where)
        assert alice_next["report"]["previous_handoff"]["session_id"] == alices["session_id"]
        assert "alice's secret plan" in alice_next["handoff_markdown"]

    # Unauthenticated again: only what was kept without a principal.
    async with sdk_session(tmp_path, *stdio) as nobody:
        found = structured(await nobody.call_tool("reflection_search", {"query": "parser"}))
        assert contents(found) == ["parser note of nobody"]
        talk = structured(await nobody.call_tool("conversation_search", {"query": "parser"}))
        assert talk["results"] == []
        started = structured(
            await nobody.call_tool("session_start", {"working_directory": str(directory)})
        )
        assert started["report"]["previous_handoff"]["session_id"] == nobodys_session
        assert "secret" not in str(started)
