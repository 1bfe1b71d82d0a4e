"""``triact serve --log-level debug`` writes one stderr line per tool call: its tool,
request, session, outcome (with the error code) and duration."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import trio

from ._sdk import error, sdk_session, structured

LINE = re.compile(
    r"DEBUG triact\.transport: tools/call tool=(?P<tool>\w+) request=(?P<request>\S+) "
    r"session=(?P<session>\S+) outcome=(?P<outcome>ok|error code=\w+|cancelled|failed) "
    r"ms=(?P<ms>\d+\.\d+|0)$"
)


def _calls(log: Path) -> list[dict[str, str]]:
    return [m.groupdict() for line in log.read_text().splitlines() if (m := LINE.search(line))]


async def test_each_call_is_logged_with_its_outcome(tmp_path: Path) -> None:
    async with sdk_session(tmp_path, "--store", "memory", "--log-level", "debug") as session:
        created = structured(await session.call_tool("session_create", {}))
        sid = created["session_id"]
        await session.call_tool("session_update", {"session_id": sid, "set": {"a": 1}})
        conflict = await session.call_tool(
            "session_update", {"session_id": sid, "set": {"a": 2}, "expected_version": 1}
        )
        assert error(conflict)["code"] == "conflict"
        missing = await session.call_tool("session_get", {"session_id": "no-such-session"})
        assert error(missing)["code"] == "not_found"
        bad = await session.call_tool("session_update", {"session_id": sid, "set": 3})
        assert error(bad)["code"] == "invalid_arguments"
        await session.call_tool("health_check", {})
    calls = _calls(tmp_path / "stderr.log")
    assert [(c["tool"], c["session"], c["outcome"]) for c in calls] == [
        ("session_create", sid, "ok"),
        ("session_update", sid, "ok"),
        ("session_update", sid, "error code=conflict"),
        ("session_get", "no-such-session", "error code=not_found"),
        ("session_update", sid, "error code=invalid_arguments"),
        ("health_check", "-", "ok"),
    ]
    assert len({c["request"] for c in calls}) == len(calls)
    assert all(float(c["ms"]) >= 0 for c in calls)


async def test_nothing_is_logged_per_call_at_the_default_level(tmp_path: Path) -> None:
    async with sdk_session(tmp_path, "--store", "memory") as session:
        structured(await session.call_tool("session_create", {}))
    assert _calls(tmp_path / "stderr.log") == []
    assert "tools/call" not in (tmp_path / "stderr.log").read_text()


def test_docs_show_the_line_as_it_is() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "mcp.md").read_text()
    (shown,) = [line for line in docs.splitlines() if " DEBUG triact.transport: " in line]
    match = LINE.search(shown)
    assert match is not None, shown
    assert match["outcome"] == "error code=conflict"


async def test_a_call_cancelled_while_git_runs_is_logged_cancelled(tmp_path: Path) -> None:
    """A work tool cancelled by its client while its git runs is logged ``cancelled``
    (trio.run_process raises the cancellation as a group of Cancelled), not
    ``failed``, which says a server bug."""
    repo, bin_dir = tmp_path / "repo", tmp_path / "bin"
    repo.mkdir()
    bin_dir.mkdir()
    real_git = shutil.which("git")
    assert real_git is not None
    await trio.run_process([real_git, "init", "-q", str(repo)])
    hold, running = tmp_path / "hold", tmp_path / "running"
    # git as the server finds it on its PATH: while ``hold`` exists, it says it runs
    # and waits (the server kills its process group when the call is cancelled).
    (bin_dir / "git").write_text(
        f'#!/bin/sh\nif [ -e "{hold}" ]; then touch "{running}"; exec sleep 30; fi\n'
        f'exec "{real_git}" "$@"\n'
    )
    (bin_dir / "git").chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    async with sdk_session(tmp_path, "--store", "memory", "--log-level", "debug", path=path) as sdk:
        started = structured(await sdk.call_tool("session_start", {"working_directory": str(repo)}))
        ids = {"session_id": started["session_id"]}
        hold.touch()
        async with trio.open_nursery() as nursery:

            async def checkpoint() -> None:
                await sdk.call_tool("session_checkpoint", ids)  # never answered

            nursery.start_soon(checkpoint)
            with trio.fail_after(30):
                while not running.exists():  # noqa: ASYNC110 (another process)
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()  # the SDK sends notifications/cancelled
        hold.unlink()
        status = structured(await sdk.call_tool("session_status", ids))
        assert status["report"]["checkpoint_count"] == 0  # it did not happen
    calls = _calls(tmp_path / "stderr.log")
    assert [(c["tool"], c["outcome"]) for c in calls] == [
        ("session_start", "ok"),
        ("session_checkpoint", "cancelled"),
        ("session_status", "ok"),
    ]
