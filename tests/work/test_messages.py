"""What the work layer tells a client names no path but those the client gave: not
the resolved working directory, nor paths of the server's environment in git's
messages."""

from __future__ import annotations

from pathlib import Path

import pytest

import triact
from triact.work import GitError, GitTimeoutError, WorkConfig, WorkSessions
from triact.work._gitsafe import redact

from .conftest import make_repo, opened


@pytest.fixture
def linked(tmp_path: Path) -> tuple[Path, Path]:
    """A repository reached through a symlink: (the link a client names, its target)."""
    target = make_repo(tmp_path / "server-side" / "real-place")
    (target / "README.md").write_text("hello\n")
    link = tmp_path / "link"
    link.symlink_to(target)
    return link, target


async def test_a_bound_directory_refusal_names_no_resolved_path(
    work: WorkSessions, linked: tuple[Path, Path]
) -> None:
    link, _ = linked
    await work.start(link, bind_client=True)
    with pytest.raises(triact.SessionSecurityError, match="pass its token") as raised:
        await work.start(link)
    assert "server-side" not in str(raised.value)


async def test_git_failures_name_no_server_path(linked: tuple[Path, Path]) -> None:
    link, target = linked
    (target / ".git" / "config").write_text("[core\nbroken")
    async with opened() as (_, work):
        report = (await work.start(link)).report
        assert report.git is not None
        assert report.git.error is not None
        assert "configuration" in report.git.error
        assert "server-side" not in report.git.error
        with pytest.raises(GitError) as raised:
            await work.checkpoint((await work.start(link)).session, commit=True)
    assert "server-side" not in str(raised.value)


async def test_a_timeout_names_no_path(linked: tuple[Path, Path]) -> None:
    link, target = linked
    slow = target.parent / "slow-git"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    async with opened(config=WorkConfig(git=str(slow), git_timeout=0.2)) as (_, work):
        session = (await work.start(link)).session
        with pytest.raises(GitTimeoutError) as raised:
            await work.checkpoint(session)
    assert "server-side" not in str(raised.value)
    assert "slow-git" not in str(raised.value)


def test_redact_keeps_paths_inside_and_hides_the_rest() -> None:
    directory = "/srv/projects/alpha"
    text = (
        "fatal: bad config line 1 in file /srv/projects/alpha/.git/config\n"
        "error: could not open '/home/server/.config/git/attributes': denied\n"
        "warning: in the working copy of 'src/a b.txt', see /etc/gitconfig"
    )
    said = redact(text, directory)
    assert said == (
        "fatal: bad config line 1 in file .git/config error: could not open '<path>': "
        "denied warning: in the working copy of 'src/a b.txt', see <path>"
    )
    assert redact("x" * 1000, directory).endswith("...")
    assert len(redact("x" * 1000, directory)) == 500
