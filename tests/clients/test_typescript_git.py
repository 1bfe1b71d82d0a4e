"""A git command that outlives ``--git-timeout`` reaches the TypeScript clients as an
error result with code ``git_timeout`` (a millisecond: no git command is that quick)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ._node import Driver
from ._results import content, error

SERVE_ARGS = ("--git-timeout", "0.001")


def test_git_timeout(client: Driver, tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    started = content(client.call("session_start", {"working_directory": str(tmp_path)}))
    assert started["report"]["git"]["error"] is not None  # its git status timed out too
    ids = {"session_id": started["session_id"]}
    failure = error(client.call("session_checkpoint", {**ids, "commit": True}))
    assert failure["code"] == "git_timeout"
    assert content(client.call("session_status", ids))["report"]["checkpoint_count"] == 0
    content(client.call("session_end", ids))
    assert client.request("errors") == []
