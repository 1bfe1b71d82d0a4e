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


@pytest.mark.parametrize(
    "name", ["secret home", "o'secret home", "new\nsecret home", "a'b\nsecret"]
)
async def test_a_server_path_with_spaces_quotes_or_line_breaks_is_hidden_whole(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    home = tmp_path / name / "deep dir"
    home.mkdir(parents=True)
    (home / ".gitconfig").write_text("[core\nbroken")
    monkeypatch.setenv("HOME", str(home))
    async with opened() as (_, work):
        report = (await work.start(repo)).report
    assert report.git is not None
    assert report.git.error == (
        "git cannot read the repository's configuration: fatal: bad config line 1 in file <path>"
    )


@pytest.mark.parametrize(
    "path",
    [
        "/srv/secret home/x",
        "/srv/o'secret/x",
        "/srv/o' secret/x",
        '/srv/"secret"/x',
        "/srv/new\nsecret/x",
        "/srv/new' \nsecret/x",
        "/srv/new':\n\nsecret",
        "/srv/projects/alpha secret/x",
        "/srv/projects/alphasecret",
        "/srv/projects/alpha/../secret",
    ],
)
def test_redact_hides_every_part_of_a_path_outside(path: str) -> None:
    directory = "/srv/projects/alpha"
    for text in (
        f"fatal: bad config line 1 in file {path}\n",
        f"error: could not open '{path}': Permission denied\nhint: see the manual\n",
        f"warning: unable to access '{path}': denied\nfatal: 'src/a b' is outside\n",
        f'error: "{path}" and `{path}` (and {path}), {path}\n',
        f"fatal: detected dubious ownership in repository at '{path}'\n"
        f"To add an exception for this directory, call:\n\n\tgit config --add {path}\n",
    ):
        said = redact(text, directory)
        assert "secret" not in said, (text, said)
        assert "<path>" in said
    assert redact(f"error: could not open '{path}': denied\n", directory).startswith(
        "error: could not open '<path>"
    )


def test_redact_keeps_what_follows_a_quoted_path_and_git_s_next_lines() -> None:
    said = redact(
        "error: could not open '/home/o'brien/.config/git/attributes': Permission denied\n"
        "fatal: 'src/a b.txt' is in /srv/projects/alpha/sub dir\n",
        "/srv/projects/alpha",
    )
    assert said == (
        "error: could not open '<path>': Permission denied fatal: 'src/a b.txt' is in sub dir"
    )


@pytest.mark.parametrize("around", ["[{}]", "<{}>", "{{{}}}", "|{}", "@{}", "*{}", "!{}"])
def test_redact_hides_a_path_after_any_mark_but_a_word_s(around: str) -> None:
    # Hidden before as after a space or a quote; a path in brackets came back whole.
    text = "fatal: in " + around.format("/srv/secret/x") + "\n"
    said = redact(text, "/srv/projects/alpha")
    assert "secret" not in said
    assert "<path>" in said
    assert (
        redact("error: src/x and a/../b and ~/.x", "/srv/p") == "error: src/x and a/../b and ~/.x"
    )
