"""Checkpoint commits: everything in the work tree, committed so that a failure or a
cancellation leaves the repository as it was.

The commit is built in a temporary index (a copy of the repository's, in its git
directory) while the repository's index is locked the way git locks it
(``index.lock``): ``git add -A`` into it, ``git write-tree``, ``git commit-tree``; then,
in one shielded step, ``git update-ref HEAD <new> <old>`` (refused if HEAD moved
meanwhile) and the temporary index renamed over the repository's. Until that step
nothing the user sees has changed, and the step is seen through once begun: a
cancellation leaves either no commit and the index untouched, or the commit with an
index that matches it. No hook runs (these are plumbing commands, and hooks are off),
unless the server allows hooks (``WorkConfig.allow_git_hooks``): then ``git commit``
makes the commit from the temporary index, hooks included, and the same shielded step
afterwards takes its index if HEAD moved.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from typing import TYPE_CHECKING

import trio

from ._errors import GitError, NotAGitRepositoryError
from ._gitsafe import IDENTITY

if TYPE_CHECKING:
    from ._git import Git


async def commit(git: Git, message: str, leave_out: str | None) -> str | None:
    """Stage everything in ``git``'s work tree (``git add -A``: .gitignore applies)
    but the file ``leave_out``, and commit it on HEAD; the new commit's hash, or None
    if there was nothing to commit.

    NotAGitRepositoryError unless the directory is the top of a work tree whose git
    directory is inside it; GitError if git refuses, if the repository's index is
    locked by another git, if HEAD moved meanwhile, or if a changed file goes through
    a filter driver (triact runs none, so it could not commit it as the user's git
    would). On any failure or cancellation before the commit, nothing has changed.
    """
    git_dir = await _confined_git_dir(git)
    old = await _head(git)
    env = {"GIT_INDEX_FILE": os.path.join(git_dir, f"triact-index-{secrets.token_hex(8)}")}
    env.update(_identity(git))
    index = os.path.join(git_dir, "index")
    await trio.to_thread.run_sync(_lock_and_copy, index, env["GIT_INDEX_FILE"])
    try:
        pathspec = ["--", "."] + ([f":(exclude,literal){leave_out}"] if leave_out else [])
        await git.check("add", "-A", *pathspec, env=env)
        changed = await _changed(git, old, env)
        if changed is None:
            return None
        await _refuse_filtered(git, changed, env)
        if git.config.allow_git_hooks:
            return await _commit_with_hooks(git, message, old, env)
        tree = (await git.check("write-tree", env=env)).strip()
        parents = ["-p", old] if old is not None else []
        made = await git.check(
            "commit-tree",
            "--no-gpg-sign",
            *parents,
            "-F",
            "-",
            tree,
            env=env,
            stdin=message.encode(),
        )
        new = made.strip()
        with trio.CancelScope(shield=True):
            await _move_head(git, new, old, env)
        return new
    finally:
        _unlock(index, env["GIT_INDEX_FILE"])


async def _confined_git_dir(git: Git) -> str:
    where = await git.locate()
    if where is None:
        raise NotAGitRepositoryError(
            "the working directory is not a git repository (or only a subdirectory of "
            "one: git is confined to the working directory), so no checkpoint commit "
            "can be made; run git init there, or leave commit false"
        )
    if not all(path == git.directory or path.startswith(git.directory + os.sep) for path in where):
        raise GitError(
            "the repository's git directory, or what it links to, is outside the working "
            "directory (a linked worktree, a submodule, a symbolic link); checkpoint "
            "commits are refused there"
        )
    return where[0]


async def _head(git: Git) -> str | None:
    status, out, _ = await git.run("rev-parse", "-q", "--verify", "HEAD^{commit}")
    return out.strip() if status == 0 else None  # None: no commit yet


def _identity(git: Git) -> dict[str, str]:
    """The fixed checkpoint author, for the parts git's configuration and the
    environment leave out."""
    name, email = git.config.checkpoint_author
    env = {}
    for variable in IDENTITY:
        role, part = variable[4:].lower().split("_")  # author / committer, name / email
        keys = (f"user.{part}", f"{role}.{part}")
        if not any(key in git.keys for key in keys) and variable not in os.environ:
            env[variable] = name if part == "name" else email
    return env


def _lock_and_copy(index: str, temporary: str) -> None:
    """Take the repository's index lock as git does, and copy the index (if any)."""
    try:
        os.close(os.open(index + ".lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        raise GitError(
            "another git process is using the repository's index (.git/index.lock "
            "exists); try again when it is done, or remove that file if no git is running"
        ) from None
    try:
        if os.path.exists(index):
            shutil.copyfile(index, temporary)
    except BaseException:
        _unlock(index, temporary)
        raise


def _unlock(index: str, temporary: str) -> None:
    # Not awaited: this runs in a finally, under cancellation too.
    for path in (temporary, temporary + ".lock", index + ".lock"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


async def _changed(git: Git, old: str | None, env: dict[str, str]) -> list[str] | None:
    """The paths the temporary index adds or changes against HEAD (all its paths if
    there is no commit yet); None if it is HEAD's tree (nothing to commit)."""
    if old is None:
        out = await git.check("ls-files", "-z", env=env)
        paths = [path for path in out.split("\0") if path]
        return paths or None
    out = await git.check("diff-index", "--cached", "--name-status", "-z", old, env=env)
    fields = out.split("\0")
    changes = list(zip(fields[0:-1:2], fields[1::2], strict=False))
    if not changes:
        return None
    return [path for status, path in changes if status != "D"]  # a deletion runs no filter


async def _refuse_filtered(git: Git, paths: list[str], env: dict[str, str]) -> None:
    if not git.filters:
        return
    stdin = "".join(f"{path}\0" for path in paths).encode()
    out = await git.check("check-attr", "-z", "--cached", "--stdin", "filter", env=env, stdin=stdin)
    fields = out.split("\0")
    filtered = [
        (fields[i], fields[i + 2])
        for i in range(0, len(fields) - 2, 3)
        if fields[i + 2] in git.filters
    ]
    if filtered:
        path, driver = filtered[0]
        raise GitError(
            f"{len(filtered)} changed file(s) go through the repository's filter driver "
            f"{driver!r} (such as {path!r}); triact runs no filter, so it cannot commit "
            "them as your git would: commit them with git yourself, or leave commit false"
        )


async def _move_head(git: Git, new: str, old: str | None, env: dict[str, str]) -> None:
    """HEAD to ``new`` if it is still at ``old``, and the temporary index in place."""
    status, _, _ = await git.run(
        "update-ref", "-m", "triact checkpoint", "HEAD", new, old or "", env=env
    )
    if status != 0:
        raise GitError(
            "HEAD moved while the checkpoint commit was made (another commit?); "
            "nothing was committed: try again"
        )
    index = os.path.join(os.path.dirname(env["GIT_INDEX_FILE"]), "index")
    await trio.to_thread.run_sync(os.replace, env["GIT_INDEX_FILE"], index)


async def _commit_with_hooks(git: Git, message: str, old: str | None, env: dict[str, str]) -> str:
    """``git commit`` of the temporary index, hooks included; its index becomes the
    repository's if HEAD moved, whatever happened (shielded)."""
    new = old
    try:
        await git.check(
            "commit", "--quiet", "--no-edit", "-F", "-", env=env, stdin=message.encode()
        )
    finally:
        with trio.CancelScope(shield=True):
            with contextlib.suppress(GitError):  # then HEAD is taken not to have moved
                new = await _head(git)
            if new != old:
                index = os.path.join(os.path.dirname(env["GIT_INDEX_FILE"]), "index")
                await trio.to_thread.run_sync(os.replace, env["GIT_INDEX_FILE"], index)
    if new is None or new == old:
        raise GitError("git commit made no commit (did a hook stop it?); nothing was committed")
    return new
