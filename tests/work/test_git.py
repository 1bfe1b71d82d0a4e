"""triact/work/_git.py: git confined to the working directory, off the event loop,
with a timeout."""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path

import pytest
import trio

from triact.work import (
    GitError,
    GitState,
    GitTimeoutError,
    NotAGitRepositoryError,
    WorkConfig,
    WorkDirectoryError,
)
from triact.work._git import Git, check_directory, parse_status
from triact.work._gitsafe import base_environment

from .conftest import git, make_repo

CONFIG = WorkConfig()


def _git(directory: Path, config: WorkConfig = CONFIG) -> Git:
    return Git(check_directory(directory, config), config)


async def test_a_plain_directory_is_not_a_repository(tmp_path: Path) -> None:
    state = await _git(tmp_path).state()
    assert (state.repository, state.branch, state.head, state.dirty) == (False, None, None, ())


async def test_state_reports_branch_head_and_uncommitted_paths(repo: Path) -> None:
    state = await _git(repo).state()
    assert (state.repository, state.branch, state.head) == (True, "main", None)
    assert state.dirty == ("README.md",)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    (repo / "README.md").write_text("changed\n")
    (repo / "new file ✓.txt").write_text("x")
    state = await _git(repo).state()
    assert state.head == git(repo, "rev-parse", "HEAD").strip()
    assert sorted(state.dirty) == ["README.md", "new file ✓.txt"]
    assert state.dirty_count == 2


async def test_dirty_paths_are_bounded_but_all_counted(repo: Path) -> None:
    for i in range(5):
        (repo / f"f{i}").write_text("x")
    state = await _git(repo, WorkConfig(max_dirty_files=2)).state()
    assert (len(state.dirty), state.dirty_count) == (2, 6)


def test_dirty_paths_are_bounded_in_bytes_and_listed_whole() -> None:
    out = "".join(f"? {name}\0" for name in ["a" * 10, "b" * 30, "c", "\x01" * 2])
    # Bytes of JSON, quotes and a comma included: 13, 33, 4, 15 (\u0001 takes 6).
    assert parse_status(out, 10, 40) == GitState(True, None, None, ("a" * 10,), 4)  # not c
    assert parse_status(out, 10, 50).dirty == ("a" * 10, "b" * 30, "c")
    assert parse_status(out, 10, 64).dirty == ("a" * 10, "b" * 30, "c")
    assert parse_status(out, 10, 65).dirty == ("a" * 10, "b" * 30, "c", "\x01" * 2)
    assert parse_status(out, 2, 65).dirty == ("a" * 10, "b" * 30)


async def test_a_subdirectory_of_a_repository_is_not_one(repo: Path) -> None:
    # git may not climb out of the working directory to find the repository above.
    inner = repo / "inner"
    inner.mkdir()
    (inner / "file").write_text("x")
    assert not (await _git(inner).state()).repository
    with pytest.raises(NotAGitRepositoryError, match="not a git repository"):
        await _git(inner).commit("checkpoint")
    assert git(repo, "log", "--all", "--oneline") == ""


async def test_inherited_git_dir_is_ignored(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = make_repo(tmp_path / "other")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    env = base_environment(str(repo))
    assert "GIT_DIR" not in env
    assert "GIT_WORK_TREE" not in env
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["GIT_CEILING_DIRECTORIES"] == str(repo.parent)
    made = await _git(repo).commit("checkpoint")
    monkeypatch.delenv("GIT_DIR")
    monkeypatch.delenv("GIT_WORK_TREE")
    assert git(repo, "rev-parse", "HEAD").strip() == made
    assert git(other, "log", "--all", "--oneline") == ""


async def test_commit_stages_everything_but_the_handoff_file(repo: Path) -> None:
    (repo / ".triact-handoff.md").write_text("# notes\n")
    (repo / ".gitignore").write_text("ignored.txt\n")
    (repo / "ignored.txt").write_text("x")
    made = await _git(repo).commit("checkpoint 1", leave_out=".triact-handoff.md")
    assert made is not None
    files = git(repo, "show", "--name-only", "--format=", made).split()
    assert sorted(files) == [".gitignore", "README.md"]
    assert (
        git(repo, "log", "-1", "--format=%an <%ae>|%s")
        == "Test User <test@example.com>|checkpoint 1\n"
    )
    assert await _git(repo).commit("again", leave_out=".triact-handoff.md") is None


async def test_commit_uses_the_fixed_author_when_none_is_configured(tmp_path: Path) -> None:
    bare = make_repo(tmp_path / "nouser", user=False)
    (bare / "a").write_text("x")
    config = WorkConfig(checkpoint_author=("Checkpointer", "cp@example.org"))
    made = await _git(bare, config).commit("checkpoint")
    assert made is not None
    who = git(bare, "log", "-1", "--format=%an <%ae>|%cn <%ce>").strip()
    assert who == "Checkpointer <cp@example.org>|Checkpointer <cp@example.org>"


async def test_a_hanging_git_is_killed_at_the_timeout(repo: Path) -> None:
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\nsleep 30\n")
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    config = WorkConfig(git_timeout=0.5, allow_git_hooks=True)
    started = trio.current_time()
    with pytest.raises(GitTimeoutError, match=r"did not finish within 0.5 s.*git_timeout"):
        await _git(repo, config).commit("checkpoint")
    assert trio.current_time() - started < 5  # the hook's sleep was killed with git
    assert git(repo, "log", "--all", "--oneline") == ""


async def test_a_missing_git_is_a_clear_error(repo: Path) -> None:
    config = WorkConfig(git=str(repo / "no-such-git"))
    with pytest.raises(GitError, match=r"cannot run git \(WorkConfig.git\)") as raised:
        await _git(repo, config).state()
    assert str(repo) not in str(raised.value)  # the server's paths stay with the server
    report = await _git(repo, config).report()  # reports carry the error instead
    assert not report.repository
    assert report.error is not None
    assert "No such file" in report.error


def test_check_directory_refuses_relative_missing_and_outside_paths(tmp_path: Path) -> None:
    with pytest.raises(WorkDirectoryError, match="absolute"):
        check_directory("relative/path", CONFIG)
    with pytest.raises(WorkDirectoryError, match="does not exist"):
        check_directory(tmp_path / "missing", CONFIG)
    (tmp_path / "file").write_text("x")
    with pytest.raises(WorkDirectoryError, match="not a directory"):
        check_directory(tmp_path / "file", CONFIG)
    inside, outside = tmp_path / "root" / "project", tmp_path / "elsewhere"
    inside.mkdir(parents=True)
    outside.mkdir()
    rooted = WorkConfig(allowed_roots=(tmp_path / "root",))
    assert check_directory(inside, rooted) == os.path.realpath(inside)
    with pytest.raises(WorkDirectoryError, match="outside the allowed roots"):
        check_directory(outside, rooted)
    (tmp_path / "root" / "link").symlink_to(outside)  # a symlink does not get out either
    with pytest.raises(WorkDirectoryError, match="outside the allowed roots"):
        check_directory(tmp_path / "root" / "link", rooted)


def test_parse_status_reads_every_kind_of_entry() -> None:
    out = "\0".join(
        [
            "# branch.oid 0123abcd",
            "# branch.head (detached)",
            "1 .M N... 100644 100644 100644 aaa bbb changed file.txt",
            "2 R. N... 100644 100644 100644 aaa bbb R100 new name.txt",
            "old name.txt",
            "u UU N... 100644 100644 100644 100644 a b c conflict.txt",
            "? untracked dir/",
            "",
        ]
    )
    state = parse_status(out, 10)
    assert (state.branch, state.head) == (None, "0123abcd")
    assert state.dirty == ("changed file.txt", "new name.txt", "conflict.txt", "untracked dir/")


@pytest.mark.parametrize(
    "name", ["form\x0cfeed", "line\u2028separator", "next\x85line", b"caf\xe9"]
)
async def test_a_repository_whose_path_is_odd_but_valid_is_used(
    tmp_path: Path, name: str | bytes
) -> None:
    # git prints its directories one a line, as the file system has them: a path with
    # a character Python also breaks lines at, or bytes that are not UTF-8, is still
    # this repository (it was taken for one whose work tree is configured elsewhere).
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    config = WorkConfig(allowed_roots=(str(tmp_path),))
    repo = make_repo(tmp_path / name)
    git(repo, "commit", "-q", "--allow-empty", "-m", "first")
    state = await _git(repo, config).state()
    assert (state.repository, state.branch, state.error) == (True, "main", None)
    (repo / "file").write_text("x")
    made = await _git(repo, config).commit("checkpoint")
    assert made == git(repo, "rev-parse", "HEAD").strip()


_OLD_GIT = """#!{python}
# git before 2.31: rev-parse takes --path-format=absolute for a word, and prints it back.
import os, subprocess, sys
real, args = {real!r}, sys.argv[1:]
if "rev-parse" in args:
    at = args.index("rev-parse") + 1
    for word in args[at:]:
        if word == "--path-format=absolute":
            print(word, flush=True)
        elif subprocess.run([real, *args[:at], word]).returncode:
            sys.exit(128)
    sys.exit(0)
os.execv(real, [real, *args])
"""


async def test_a_git_before_2_31_reads_the_repository(repo: Path, tmp_path: Path) -> None:
    # Where its git directory is comes as git gives it, relative to the working
    # directory, not through --path-format=absolute, which such a git prints back.
    old = tmp_path / "old-git"
    real = shutil.which("git")
    assert real is not None
    old.write_text(_OLD_GIT.format(python=sys.executable, real=real))
    old.chmod(0o755)
    config = WorkConfig(git=str(old))
    state = await _git(repo, config).state()
    assert (state.repository, state.branch, state.dirty) == (True, "main", ("README.md",))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    git(repo, "worktree", "add", "-q", str(tmp_path / "linked"), "-b", "side")
    linked = await _git(tmp_path / "linked", config).state()
    assert (linked.repository, linked.branch) == (True, "side")
