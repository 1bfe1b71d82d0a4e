"""The work-session tools end to end: ``triact serve`` as a real subprocess (SQLite
store), driven by the official MCP SDK client."""

from __future__ import annotations

import subprocess
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import mcp
from mcp import ClientSession, StdioServerParameters

from ._sdk import error as tool_error
from ._sdk import parameters as serve_parameters
from ._sdk import sdk_session as serve_session
from ._sdk import structured


def store(tmp_path: Path) -> tuple[str, ...]:
    # Words alone: these tests check FTS5's ranking (tests/work/test_semantic.py and
    # test_semantic_serve.py search by meaning).
    return ("--store", f"sqlite:{tmp_path / 'sessions.db'}", "--semantic", "off")


def parameters(tmp_path: Path) -> StdioServerParameters:
    return serve_parameters(tmp_path, *store(tmp_path))


def sdk_session(tmp_path: Path) -> AbstractAsyncContextManager[ClientSession]:
    return serve_session(tmp_path, *store(tmp_path))


def git(directory: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=directory, check=True, capture_output=True, text=True)
    return done.stdout


def make_repo(directory: Path) -> Path:
    directory.mkdir()
    git(directory, "init", "-q", "-b", "main")
    git(directory, "config", "user.name", "E2E")
    git(directory, "config", "user.email", "e2e@example.com")
    (directory / "main.py").write_text("print('hello')\n")
    return directory


def error(result: Any) -> dict[str, Any]:
    failure = tool_error(result)
    assert result.content[0].text.startswith(failure["code"] + ": ")
    return failure


async def test_a_work_session_from_start_to_handoff(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "project")
    async with sdk_session(tmp_path) as client:
        call = client.call_tool
        started = structured(
            await call("session_start", {"working_directory": str(repo), "project": "demo"})
        )
        sid = started["session_id"]
        assert started["created"]
        assert started["report"]["previous_handoff"] is None
        git_state = started["report"]["git"]
        assert (git_state["repository"], git_state["branch"], git_state["dirty"]) == (
            True,
            "main",
            ["main.py"],
        )

        first = structured(await call("session_checkpoint", {"session_id": sid, "note": "read"}))
        assert first["checkpoint"]["commit"] is None
        (repo / "feature.py").write_text("x = 1\n")
        second = structured(
            await call("session_checkpoint", {"session_id": sid, "note": "feature", "commit": True})
        )
        commit = second["checkpoint"]["commit"]
        assert commit
        assert git(repo, "rev-parse", "HEAD").strip() == commit
        assert git(repo, "log", "--format=%H %s") == f"{commit} triact checkpoint 2: feature\n"
        assert git(repo, "status", "--porcelain") == ""

        status = structured(await call("session_status", {"session_id": sid}))
        assert status["report"]["checkpoint_count"] == 2
        assert status["report"]["git"]["head"] == commit

        ended = structured(await call("session_end", {"session_id": sid, "write_handoff": True}))
        handoff_file = repo / ".triact-handoff.md"
        assert ended["handoff"]["file"] == str(handoff_file)
        text = handoff_file.read_text()
        assert text == ended["handoff_markdown"]
        assert "feature" in text
        assert commit[:12] in text

        again = structured(await call("session_start", {"working_directory": str(repo)}))
        assert again["created"]
        assert again["session_id"] != sid
        previous = again["report"]["previous_handoff"]
        assert previous["session_id"] == sid
        assert [c["note"] for c in previous["checkpoints"]] == ["read", "feature"]
        assert again["handoff_markdown"] == text


async def test_trust_and_error_paths(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    async with sdk_session(tmp_path) as client:
        call = client.call_tool
        sid = structured(await call("session_start", {"working_directory": str(plain)}))[
            "session_id"
        ]
        granted = structured(
            await call("trust_grant", {"session_id": sid, "operation": "git_commit"})
        )
        assert [g["operation"] for g in granted["trusted"]] == ["git_commit"]
        listed = structured(await call("trust_list", {"session_id": sid}))
        assert listed["trusted"] == granted["trusted"]
        revoked = structured(
            await call("trust_revoke", {"session_id": sid, "operation": "git_commit"})
        )
        assert revoked["changed"]
        assert revoked["trusted"] == []
        assert structured(await call("trust_list", {"session_id": sid}))["trusted"] == []

        not_git = error(await call("session_checkpoint", {"session_id": sid, "commit": True}))
        assert not_git["code"] == "not_a_git_repository"
        missing = error(
            await call("session_start", {"working_directory": str(tmp_path / "missing")})
        )
        assert missing["code"] == "invalid_arguments"
        assert "does not exist" in missing["message"]
        relative = error(await call("session_start", {"working_directory": "../elsewhere"}))
        assert relative["code"] == "invalid_arguments"
        assert "absolute" in relative["message"]


async def test_a_thousand_reflections_found_again(tmp_path: Path) -> None:
    subjects = ["parser", "scheduler", "renderer", "database", "network"]
    async with sdk_session(tmp_path) as client:

        async def store(i: int) -> None:
            subject = subjects[i % 5]
            content = f"Note {i}: the {subject} needed work; see module {subject}_{i % 7}."
            tags = [subject] + (["urgent"] if i % 100 == 0 else [])
            structured(
                await client.call_tool(
                    "reflection_store", {"content": content, "tags": tags, "project": "big"}
                )
            )

        # 999 notes and the best match make 1,000: the default bound per project, so
        # none is dropped (the 1,001st would drop the oldest, whichever that was).
        for batch in range(0, 1000, 100):
            async with anyio.create_task_group() as tasks:
                for i in range(batch, min(batch + 100, 999)):
                    tasks.start_soon(store, i)
        best = "The scheduler deadlock: the scheduler held the scheduler queue while waiting"
        structured(
            await client.call_tool(
                "reflection_store", {"content": best, "tags": ["scheduler"], "project": "big"}
            )
        )

        found = structured(
            await client.call_tool(
                "reflection_search", {"query": "scheduler deadlock queue", "limit": 5}
            )
        )
        assert found["method"] == "fts5-bm25"
        assert found["results"][0]["content"] == best  # the best match first
        assert all("scheduler" in r["content"] for r in found["results"])
        urgent = structured(
            await client.call_tool(
                "reflection_search",
                {"query": "needed work", "tags": ["urgent"], "project": "big", "limit": 100},
            )
        )
        assert sorted(int(r["content"].split(":")[0][5:]) for r in urgent["results"]) == list(
            range(0, 1000, 100)
        )
        one = structured(await client.call_tool("reflection_search", {"query": "Note 517"}))
        assert one["results"][0]["content"].startswith("Note 517:")


async def test_stateless_era_client(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "project")
    async with mcp.Client(parameters(tmp_path), mode="2026-07-28") as client:
        await client.list_tools()
        started = structured(
            await client.call_tool("session_start", {"working_directory": str(repo)})
        )
        point = structured(
            await client.call_tool(
                "session_checkpoint", {"session_id": started["session_id"], "commit": True}
            )
        )
        assert git(repo, "rev-parse", "HEAD").strip() == point["checkpoint"]["commit"]
