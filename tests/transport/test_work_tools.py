"""The work-session tools over an in-memory connection: results matching their output
schemas, and errors with their stable codes."""

from __future__ import annotations

import stat
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import triact
from triact.transport import SESSION_TOOLS, ToolSet
from triact.work import WorkConfig, WorkSessions, open_work_sessions, work_tools

from .conftest import Peer, connect, envelope

WORK_TOOL_NAMES = [
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


def _repo(path: Path) -> Path:
    path.mkdir()
    for args in (
        ["init", "-q", "-b", "main"],
        ["config", "user.name", "T"],
        ["config", "user.email", "t@example.com"],
    ):
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True)
    (path / "a.txt").write_text("a\n")
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return _repo(tmp_path / "repo")


#: These tests check the word searches (tests/work/test_semantic.py: by meaning).
WORDS_ONLY = WorkConfig(semantic="off")


def serve_tools(work: WorkSessions) -> ToolSet:
    """The tools of ``triact serve``: the session tools and the work tools."""
    return SESSION_TOOLS | work_tools(work)


@pytest.fixture
async def peer(manager: triact.SessionManager) -> AsyncIterator[Peer]:
    """A connection offering the session and work tools, initialized at 2025-11-25."""
    async with (
        open_work_sessions(manager, WORDS_ONLY) as work,
        connect(manager, tools=serve_tools(work), initialize="2025-11-25") as peer,
    ):
        yield peer


def schemas(peer: Peer, *, stateless: bool = False) -> dict[str, Any]:
    return {tool["name"]: tool for tool in peer.server.tools.definitions(stateless=stateless)}


async def ok(peer: Peer, tool: str, arguments: dict[str, Any], **kw: Any) -> Any:
    """Call a tool that must succeed; check its result against its output schema."""
    result = await peer.ok(tool, arguments, **kw)
    jsonschema.validate(result, schemas(peer)[tool]["outputSchema"])
    return result


async def test_the_work_tools_are_listed_after_the_session_tools(peer: Peer) -> None:
    names = list(peer.server.tools.names)
    assert names[-len(WORK_TOOL_NAMES) :] == WORK_TOOL_NAMES
    assert names.index("session_end") == 7  # replaced in place
    assert names[: -len(WORK_TOOL_NAMES)] == list(SESSION_TOOLS.names)
    SCHEMAS = schemas(peer)
    end = SCHEMAS["session_end"]["inputSchema"]["properties"]
    assert end["write_handoff"] == {
        "description": end["write_handoff"]["description"],
        "type": "boolean",
        "default": False,
    }
    for name in WORK_TOOL_NAMES:
        tool = SCHEMAS[name]
        assert tool["description"]
        assert tool["outputSchema"]["type"] == "object"
        jsonschema.Draft202012Validator.check_schema(tool["inputSchema"])
        jsonschema.Draft202012Validator.check_schema(tool["outputSchema"])
    stateless = schemas(peer, stateless=True)
    assert "session_id" in stateless["session_checkpoint"]["inputSchema"]["required"]
    assert "session_id" not in stateless["session_start"]["inputSchema"]["properties"]


async def test_start_checkpoint_status_end_and_start_again(peer: Peer, repo: Path) -> None:
    started = await ok(peer, "session_start", {"working_directory": str(repo), "project": "p"})
    sid = started["session_id"]
    assert (started["created"], started["token"], started["handoff_markdown"]) == (True, None, None)
    report = started["report"]
    assert (report["project"], report["git"]["branch"], report["git"]["dirty"]) == (
        "p",
        "main",
        ["a.txt"],
    )
    again = await ok(peer, "session_start", {"working_directory": str(repo)})
    assert (again["session_id"], again["created"]) == (sid, False)

    first = await ok(peer, "session_checkpoint", {"session_id": sid, "note": "look"})
    assert (first["checkpoint"]["number"], first["checkpoint"]["commit"]) == (1, None)
    second = await ok(peer, "session_checkpoint", {"session_id": sid, "commit": True})
    assert second["checkpoint"]["commit"] == second["checkpoint"]["head"]
    status = await ok(peer, "session_status", {"session_id": sid})
    assert status["report"]["checkpoint_count"] == 2
    assert status["report"]["git"]["dirty"] == []

    ended = await ok(peer, "session_end", {"session_id": sid, "write_handoff": True})
    assert ended["ended"]
    assert ended["handoff_stored"]
    assert ended["handoff_file_error"] is None
    assert ended["handoff"]["file"] == str(repo / ".triact-handoff.md")
    assert ended["handoff_markdown"] == (repo / ".triact-handoff.md").read_text()
    assert ended["session"]["session_id"] == sid
    gone = await peer.fails("session_status", {"session_id": sid})
    assert gone["code"] == "not_found"

    new = await ok(peer, "session_start", {"working_directory": str(repo)})
    assert new["created"]
    assert new["session_id"] != sid
    assert new["report"]["previous_handoff"]["session_id"] == sid
    assert new["handoff_markdown"].startswith("# Handoff: p")


async def test_plain_session_end_keeps_its_old_result_and_adds_the_handoff(peer: Peer) -> None:
    sid = (await peer.ok("session_create", {"topic": "t"}))["session_id"]
    ended = await ok(peer, "session_end", {"session_id": sid})
    assert ended["session"]["topic"] == "t"
    assert (ended["handoff_stored"], ended["handoff"]["working_directory"]) == (False, None)


async def test_error_codes(peer: Peer, tmp_path: Path) -> None:
    missing = await peer.fails("session_start", {"working_directory": str(tmp_path / "nope")})
    assert missing["code"] == "invalid_arguments"
    assert "does not exist" in missing["message"]
    relative = await peer.fails("session_start", {"working_directory": "rel/ative"})
    assert relative["code"] == "invalid_arguments"
    sid = (await ok(peer, "session_start", {"working_directory": str(tmp_path)}))["session_id"]
    not_git = await peer.fails("session_checkpoint", {"session_id": sid, "commit": True})
    assert not_git["code"] == "not_a_git_repository"
    assert "not a git repository" in not_git["message"]
    bad_expiry = await peer.fails(
        "trust_grant", {"session_id": sid, "operation": "x", "expires_in": -1}
    )
    assert bad_expiry["code"] == "invalid_arguments"
    no_words = await peer.fails("reflection_search", {"query": "?!"})
    assert no_words["code"] == "invalid_arguments"
    extra = await peer.fails("session_checkpoint", {"session_id": sid, "comit": True})
    assert "unknown field(s) comit" in extra["message"]


async def test_git_timeout_is_a_tool_error(manager: triact.SessionManager, repo: Path) -> None:
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\nsleep 30\n")
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    async with (
        open_work_sessions(manager, WorkConfig(git_timeout=0.3, allow_git_hooks=True)) as work,
        connect(manager, tools=serve_tools(work), initialize="2025-11-25") as peer,
    ):
        sid = (await ok(peer, "session_start", {"working_directory": str(repo)}))["session_id"]
        error = await peer.fails("session_checkpoint", {"session_id": sid, "commit": True})
        assert error["code"] == "git_timeout"
        status = await ok(peer, "session_status", {"session_id": sid})
        assert status["report"]["checkpoint_count"] == 0


async def test_bound_work_sessions_need_their_token(peer: Peer, repo: Path) -> None:
    started = await ok(peer, "session_start", {"working_directory": str(repo), "bind_client": True})
    sid, token = started["session_id"], started["token"]
    assert token
    refused = await peer.fails("session_start", {"working_directory": str(repo)})
    assert refused["code"] == "unauthorized"
    assert "pass its token" in refused["message"]
    for tool in ("trust_list", "session_status", "session_checkpoint"):
        assert (await peer.fails(tool, {"session_id": sid}))["code"] == "unauthorized"
    resumed = await ok(peer, "session_start", {"working_directory": str(repo), "token": token})
    assert (resumed["session_id"], resumed["token"]) == (sid, None)
    granted = await ok(peer, "trust_grant", {"session_id": sid, "token": token, "operation": "x"})
    assert granted["scope"] == "binding"


async def test_trust_tools(peer: Peer, tmp_path: Path) -> None:
    sid = (await ok(peer, "session_start", {"working_directory": str(tmp_path)}))["session_id"]
    granted = await ok(
        peer, "trust_grant", {"session_id": sid, "operation": "git_commit", "expires_in": 3600}
    )
    assert (granted["operation"], granted["changed"], granted["scope"]) == (
        "git_commit",
        True,
        "session",
    )
    grant = granted["trusted"][0]
    assert grant["expires_at"] == pytest.approx(grant["granted_at"] + 3600)
    listed = await ok(peer, "trust_list", {"session_id": sid})
    assert [g["operation"] for g in listed["trusted"]] == ["git_commit"]
    revoked = await ok(peer, "trust_revoke", {"session_id": sid, "operation": "git_commit"})
    assert (revoked["changed"], revoked["trusted"]) == (True, [])
    again = await ok(peer, "trust_revoke", {"session_id": sid, "operation": "git_commit"})
    assert again["changed"] is False


async def test_reflection_tools(peer: Peer) -> None:
    stored = await ok(
        peer, "reflection_store", {"content": "use trio.run_process", "tags": ["Trio"]}
    )
    assert stored["reflection"]["tags"] == ["trio"]
    assert stored["kept"] == 1
    await ok(peer, "reflection_store", {"content": "unrelated", "project": "p"})
    found = await ok(peer, "reflection_search", {"query": "process", "tags": ["trio"]})
    assert found["method"] == "text-match"
    assert [r["content"] for r in found["results"]] == ["use trio.run_process"]
    assert found["count"] == 1


@pytest.fixture
async def sqlite_manager(tmp_path: Path) -> AsyncIterator[triact.SessionManager]:
    config = triact.SessionConfig(store=triact.SqliteStore(tmp_path / "s.db"))
    async with triact.open_session_manager(config) as manager:
        yield manager


async def test_stateless_era_and_sqlite_search(
    sqlite_manager: triact.SessionManager, tmp_path: Path
) -> None:
    async with (
        open_work_sessions(sqlite_manager, WORDS_ONLY) as work,
        connect(sqlite_manager, tools=serve_tools(work)) as peer,
    ):
        meta = envelope()
        started = await ok(peer, "session_start", {"working_directory": str(tmp_path)}, meta=meta)
        await ok(peer, "session_checkpoint", {"session_id": started["session_id"]}, meta=meta)
        no_id = await peer.fails("session_checkpoint", {}, meta=meta)
        assert "needs session_id" in no_id["message"]
        await ok(peer, "reflection_store", {"content": "bm25 ranks it"}, meta=meta)
        found = await ok(peer, "reflection_search", {"query": "ranks"}, meta=meta)
        assert found["method"] == "fts5-bm25"
        assert found["count"] == 1


@pytest.fixture
async def rooted(
    manager: triact.SessionManager, tmp_path: Path
) -> AsyncIterator[tuple[Peer, Path]]:
    """A connection whose work layer allows only ``tmp_path / "allowed"``."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    async with (
        open_work_sessions(manager, WorkConfig(allowed_roots=(allowed,))) as work,
        connect(manager, tools=serve_tools(work), initialize="2025-11-25") as peer,
    ):
        yield peer, allowed


async def test_a_directory_outside_the_allowed_roots_is_refused_when_set(
    rooted: tuple[Peer, Path], tmp_path: Path
) -> None:
    peer, allowed = rooted
    (tmp_path / "exists").mkdir()
    for outside in (tmp_path / "exists", tmp_path / "does-not-exist", allowed / ".." / "exists"):
        error = await peer.fails("session_create", {"working_directory": str(outside)})
        assert error["code"] == "invalid_arguments"
        assert error["message"] == (
            f"working_directory {str(outside)!r} is outside the allowed roots of this server "
            "(triact serve --allowed-root); use a directory inside one of them"
        )
    assert peer.server.manager.session_count == 0
    sid = (await ok(peer, "session_create", {"working_directory": str(allowed)}))["session_id"]
    for outside in (tmp_path / "exists", tmp_path / "does-not-exist"):
        error = await peer.fails(
            "session_set_working_directory", {"session_id": sid, "path": str(outside)}
        )
        assert error["code"] == "invalid_arguments"
        assert error["message"].startswith(f"path {str(outside)!r} is outside the allowed roots")
    got = await ok(peer, "session_get_working_directory", {"session_id": sid})
    assert (got["working_directory"], got["version"]) == (str(allowed), 1)
    # Inside the roots, a missing directory is named as such.
    error = await peer.fails(
        "session_set_working_directory", {"session_id": sid, "path": str(allowed / "missing")}
    )
    assert "does not exist" in error["message"]
    inner = allowed / "inner"
    inner.mkdir()
    done = await ok(peer, "session_set_working_directory", {"session_id": sid, "path": str(inner)})
    assert done["working_directory"] == str(inner)


async def test_the_directory_tools_say_where_a_directory_may_be(peer: Peer) -> None:
    tools = schemas(peer)
    for name in ("session_create", "session_set_working_directory"):
        assert "allowed roots" in tools[name]["description"]
    assert "not an authorization" in tools["trust_grant"]["description"]


def _arm(repo: Path, trap: Path) -> None:
    """Name ``trap`` as the repository's fsmonitor, pager, editor, gpg and hooks."""
    for key in ("core.fsmonitor", "core.pager", "core.editor", "gpg.program"):
        subprocess.run(["git", "config", key, str(trap)], cwd=repo, check=True)
    subprocess.run(["git", "config", "commit.gpgSign", "true"], cwd=repo, check=True)
    for hook in ("pre-commit", "post-commit", "post-index-change", "reference-transaction"):
        (repo / ".git" / "hooks" / hook).symlink_to(trap)


async def test_the_work_tools_run_no_program_of_a_hostile_repository(
    peer: Peer, repo: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    trap = tmp_path / "trap"
    trap.write_text(f"#!/bin/sh\necho \"$0 $*\" >> '{marker}'\ncat\n")
    trap.chmod(0o755)
    _arm(repo, trap)
    sid = (await ok(peer, "session_start", {"working_directory": str(repo)}))["session_id"]
    await ok(peer, "session_status", {"session_id": sid})
    point = await ok(peer, "session_checkpoint", {"session_id": sid, "commit": True})
    assert point["checkpoint"]["commit"] is not None
    await ok(peer, "session_end", {"session_id": sid, "write_handoff": True})
    assert not marker.exists()


async def test_conversation_tools(peer: Peer) -> None:
    saved = await ok(
        peer,
        "conversation_save",
        {"content": "user: why trio?\nassistant: structured concurrency", "project": "p"},
    )
    assert (saved["excerpt"]["project"], saved["kept"], saved["embedded"]) == ("p", 1, False)
    await ok(peer, "reflection_store", {"content": "structured concurrency pays", "project": "p"})
    found = await ok(peer, "conversation_search", {"query": "concurrency", "project": "p"})
    assert found["method"] == "text-match"
    assert [r["id"] for r in found["results"]] == [saved["excerpt"]["id"]]
    assert found["results"][0]["similarity"] is None
    too_long = await peer.fails("conversation_save", {"content": "x" * 20_001})
    assert too_long["code"] == "invalid_arguments"
    assert "max_conversation_chars" in too_long["message"]
    no_words = await peer.fails("conversation_search", {"query": "!!!"})
    assert no_words["code"] == "invalid_arguments"
