"""Working directories and git: every git command runs as a subprocess off the event
loop, with a timeout, inside the session's working directory and nowhere else.

Confinement: git starts in the directory (``cwd``), may not look for a repository
above it (``GIT_CEILING_DIRECTORIES``), and runs with no ``GIT_*`` variable inherited
from this process (``GIT_DIR`` or ``GIT_WORK_TREE`` would point it elsewhere). So the
directory counts as a repository only if it is the top of a work tree; git is not
used where that work tree is configured elsewhere or a git directory lies outside the
allowed roots, and a commit is also refused when one lies outside the directory (a
linked worktree, a submodule). Reads do not take git's optional locks, so a report never writes.

No program the repository names runs (hooks, filters, fsmonitor, pagers, ...: see
``_gitsafe``), and no message of git reaches a client with a path outside the working
directory in it. Checkpoint commits are in ``_gitcommit``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator

import attrs
import trio

from ..sessions import SessionState
from . import _gitcommit as gitcommit
from . import _gitsafe as gitsafe
from ._config import WorkConfig
from ._errors import GitError, GitTimeoutError, WorkDirectoryError, quoted_path
from ._records import GitState

_NOT_A_REPOSITORY = 128  # git's exit status outside a repository


def check_directory(
    path: str | os.PathLike[str], config: WorkConfig, field: str = "working_directory"
) -> str:
    """The resolved form of ``path`` (an absolute path to an existing directory inside
    the allowed roots); WorkDirectoryError otherwise, naming ``field``. A path outside
    the allowed roots is refused before its existence is looked at, so the refusal
    says nothing about it. Touches the disk: run it in a thread."""
    text = os.fspath(path)
    if not isinstance(text, str) or not text or "\x00" in text:
        raise WorkDirectoryError(f"{field} must be a path, got {quoted_path(text)}")
    if not os.path.isabs(text):
        raise WorkDirectoryError(f"{field} must be an absolute path, got {quoted_path(text)}")
    resolved = os.path.realpath(text)
    roots = config.allowed_roots
    if roots is not None and not any(_inside(resolved, root) for root in roots):
        raise WorkDirectoryError(
            f"{field} {quoted_path(text)} is outside the allowed roots of this server "
            "(triact serve --allowed-root); use a directory inside one of them"
        )
    if not os.path.isdir(resolved):
        raise WorkDirectoryError(
            f"{field} {quoted_path(text)} does not exist or is not a directory"
        )
    return resolved


async def resolve(directory: str, config: WorkConfig) -> tuple[str | None, str | None]:
    """A session's directory checked and resolved (the key of its records: a session
    made by ``create_session`` keeps it unresolved), or why it cannot be."""
    try:
        return await trio.to_thread.run_sync(check_directory, directory, config), None
    except WorkDirectoryError as exc:
        return None, str(exc)


async def report(resolved: str | None, problem: str | None, config: WorkConfig) -> GitState:
    """The git state of a resolved directory, failures included in ``error``."""
    if resolved is None:
        return GitState.none(problem)
    return await Git(resolved, config).report()


async def checkpoint_git(
    state: SessionState, note: str | None, number: int, commit: bool, config: WorkConfig
) -> tuple[GitState, str | None]:
    """The git part of checkpoint ``number`` of a session: the state of its directory,
    and with ``commit`` the checkpoint commit (None if there was nothing to commit).
    Raises as :meth:`Git.state` and :meth:`Git.commit` do; WorkDirectoryError if the
    directory went away, or for a commit without one."""
    directory = state.working_directory
    if directory is None:
        if commit:
            raise WorkDirectoryError(
                f"session {state.id!r} has no working directory, so no checkpoint commit "
                "can be made; start it with session_start or set one"
            )
        return GitState.none(), None
    directory = await trio.to_thread.run_sync(check_directory, directory, config)
    git = Git(directory, config)
    before = await git.state()
    made = None
    if commit:
        subject = f"triact checkpoint {number}" + (f": {note}" if note else "")
        message = f"{subject}\n\nSession: {state.id}\n"
        made = await git.commit(message, leave_out=config.handoff_file)
    if made is None:
        return before, None
    return attrs.evolve(before, head=made), made  # HEAD (or its branch) moved to it


def _executable(name: str) -> str:
    """The git to run, as an absolute path: ``name`` if it is a path (with a slash,
    taken from this process's directory), else the first on PATH's absolute entries.
    A relative entry (an empty one is the current directory) would be looked up in the
    working directory, where the repository could have put a git of its own."""
    if os.sep in name:
        return os.path.abspath(name)
    found = shutil.which(name, path=os.pathsep.join(filter(os.path.isabs, os.get_exec_path())))
    if found is None:
        raise GitError(
            "cannot run git (WorkConfig.git): not found on PATH (its absolute directories); "
            "is git installed?"
        )
    return os.path.abspath(found)


def _real_paths(directory: str, lines: list[str]) -> list[str]:
    """The paths git printed, resolved: a relative one is relative to ``directory``,
    where git ran (``--git-common-dir`` prints one there; ``--path-format=absolute``
    would make it absolute, but git before 2.31 does not know it, and takes it for a
    word to print back)."""
    return [os.path.realpath(os.path.join(directory, line)) for line in lines] + ["", "", ""]


#: What git reads a repository's commits and branches from, and writes a commit to, in
#: a git directory (its hooks, info, ... are left alone: hooks do not run).
_STORE = ("HEAD", "index", "packed-refs", "refs", "logs", "objects")


def _links(git_dir: str, common: str) -> list[str]:
    """Where the symbolic links that git would follow to read or write commits and
    branches lead (resolved): :data:`_STORE` in the git directories, what is in
    ``objects``, and everything in ``refs`` and ``logs``."""
    found: list[str] = []

    def scan(directory: str) -> Iterator[os.DirEntry[str]]:
        with contextlib.suppress(OSError):  # missing or no directory: nothing read there
            yield from os.scandir(directory)

    def deep(directory: str) -> None:
        for entry in scan(directory):
            if entry.is_symlink():
                found.append(os.path.realpath(entry.path))
            elif entry.is_dir(follow_symlinks=False):
                deep(entry.path)

    for base in dict.fromkeys((git_dir, common)):
        for name in _STORE:
            if os.path.islink(path := os.path.join(base, name)):
                found.append(os.path.realpath(path))
        deep(os.path.join(base, "logs"))
    deep(os.path.join(common, "refs"))
    found += [
        os.path.realpath(e.path) for e in scan(os.path.join(common, "objects")) if e.is_symlink()
    ]
    return found


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


async def _kill_group(process: trio.Process) -> None:
    # The whole process group: hooks git started too, which would otherwise keep
    # our pipes open.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    await trio.lowlevel.checkpoint()


class Git:
    """Runs git in one directory (resolved, checked) under a WorkConfig, with every
    program the repository names switched off (see ``_gitsafe``)."""

    def __init__(self, directory: str, config: WorkConfig) -> None:
        self.directory = directory
        self.config = config
        self._base = gitsafe.base_environment(directory)
        self._env: dict[str, str] | None = None
        #: The filter drivers and the keys of the repository's configuration.
        self.filters: frozenset[str] = frozenset()
        self.keys: frozenset[str] = frozenset()
        self._where: tuple[str, ...] | None = None
        self._git: str | None = None

    async def _environment(self) -> dict[str, str]:
        """The environment of every call: the configuration git reads, listed once
        under the fixed overrides, decides the per-driver ones."""
        if self._env is None:
            allow_hooks = self.config.allow_git_hooks
            fixed = list(gitsafe.FIXED) if allow_hooks else [*gitsafe.FIXED, gitsafe.HOOKS_OFF]
            env = {**self._base, **gitsafe.config_environment(fixed)}
            status, out, err = await self._spawn(("config", "--null", "--list"), env)
            if status != 0:
                raise GitError(f"git cannot read the repository's configuration: {self._say(err)}")
            try:
                pairs, self.filters, self.keys = gitsafe.overrides(out, allow_hooks=allow_hooks)
            except ValueError as exc:
                raise GitError(f"{exc}; triact does not work in this repository") from None
            self._env = {**self._base, **gitsafe.config_environment(pairs)}
        return self._env

    async def run(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        stdin: bytes = b"",
        paths: bool = False,
    ) -> tuple[int, str, str]:
        """``git args...`` (with ``env`` added to the environment): its exit status,
        stdout and stderr (as text; with ``paths``, stdout as the file system's paths
        are, bytes that are not UTF-8 kept as in :func:`os.fsdecode`). GitError if git
        cannot be started, GitTimeoutError if it takes longer than the timeout."""
        full = await self._environment()
        return await self._spawn(args, {**full, **env} if env else full, stdin, paths)

    async def _spawn(
        self, args: tuple[str, ...], env: dict[str, str], stdin: bytes = b"", paths: bool = False
    ) -> tuple[int, str, str]:
        if self._git is None:
            self._git = await trio.to_thread.run_sync(_executable, self.config.git)
        command = [self._git, "-c", "core.quotepath=off", *args]
        timeout = self.config.git_timeout
        with trio.move_on_after(timeout) as scope:
            try:
                done: subprocess.CompletedProcess[bytes] = await trio.run_process(
                    command,
                    cwd=self.directory,
                    env=env,
                    stdin=stdin,
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                    start_new_session=True,  # its own process group: see _kill_group
                    deliver_cancel=_kill_group,
                )
            except OSError as exc:
                raise GitError(
                    f"cannot run git (WorkConfig.git): {exc.strerror or type(exc).__name__}; "
                    "is git installed?"
                ) from None
        if scope.cancelled_caught:
            raise GitTimeoutError(
                f"git {args[0]} did not finish within {timeout} s in the working directory "
                "and was killed; try again, or raise WorkConfig.git_timeout"
            )
        return (
            done.returncode,
            os.fsdecode(done.stdout) if paths else done.stdout.decode("utf-8", "replace"),
            done.stderr.decode("utf-8", "replace"),
        )

    def _say(self, message: str) -> str:
        """git's message for a client (no paths outside the working directory)."""
        return gitsafe.redact(message, self.directory) or "no message"

    async def locate(self) -> tuple[str, ...] | None:
        """Where git reads and writes the repository: its git directory, its common
        git directory, and where the symbolic links in them (their own entries,
        ``refs``, ``logs``, ``objects``) lead (all resolved); None outside a
        repository. GitError if its work tree is configured elsewhere
        (``core.worktree``), or if any of those is outside the allowed roots (a
        ``.git`` file, a linked worktree's ``commondir``, a ``.git/refs`` linked to
        another repository's): git would read there, and a commit write there."""
        if self._where is None:
            status, out, err = await self.run(
                "rev-parse",
                "--absolute-git-dir",
                "--git-common-dir",
                "--show-toplevel",
                paths=True,
            )
            if status == _NOT_A_REPOSITORY and "not a git repository" in err:
                return None
            if status != 0:
                raise GitError(f"git rev-parse failed (exit {status}): {self._say(err)}")
            # One path a line: only a line feed ends one (a path may hold \f, \x85, ...).
            lines = out.removesuffix("\n").split("\n")
            paths = await trio.to_thread.run_sync(_real_paths, self.directory, lines)
            git_dir, common, top = paths[:3]
            if top != self.directory:
                raise GitError(
                    "the repository's work tree is configured elsewhere (core.worktree); "
                    "triact uses no git repository there"
                )
            where = (git_dir, common, *await trio.to_thread.run_sync(_links, git_dir, common))
            roots = self.config.allowed_roots
            if roots is not None and not all(
                any(_inside(path, root) for root in roots) for path in where
            ):
                raise GitError(
                    "the repository's git directory, or what it links to, is outside the "
                    "allowed roots of this server (a .git file, a linked worktree or a "
                    "symbolic link pointing there); triact uses no git repository there"
                )
            self._where = where
        return self._where

    async def state(self) -> GitState:
        """Branch, HEAD and uncommitted paths; ``repository=False`` outside a work tree.
        GitError / GitTimeoutError if git fails otherwise, or if the repository is
        not the server's to read (:meth:`locate`)."""
        if await self.locate() is None:
            return GitState.none()
        status, out, err = await self.run(
            "status", "--porcelain=v2", "--branch", "-z", "--ignore-submodules=dirty"
        )
        if status == _NOT_A_REPOSITORY and "not a git repository" in err:
            return GitState.none()
        if status != 0:
            raise GitError(f"git status failed (exit {status}): {self._say(err)}")
        return parse_status(out, self.config.max_dirty_files, self.config.max_dirty_bytes)

    async def report(self) -> GitState:
        """:meth:`state`, with a failure reported in ``error`` rather than raised."""
        try:
            return await self.state()
        except GitError as exc:
            return GitState.none(str(exc))

    async def commit(self, message: str, *, leave_out: str | None = None) -> str | None:
        """Commit everything in the work tree (``git add -A``: .gitignore applies) but
        the file ``leave_out``; the new commit's hash, or None if there was nothing to
        commit. See :func:`triact.work._gitcommit.commit` for what it guarantees."""
        return await gitcommit.commit(self, message, leave_out)

    async def check(self, *args: str, env: dict[str, str] | None = None, stdin: bytes = b"") -> str:
        """:meth:`run`, GitError unless git succeeds; its stdout."""
        status, out, err = await self.run(*args, env=env, stdin=stdin)
        if status != 0:
            raise GitError(f"git {args[0]} failed (exit {status}): {self._say(err or out)}")
        return out


def parse_status(out: str, max_dirty: int, max_bytes: int = 4096) -> GitState:
    """Parse ``git status --porcelain=v2 --branch -z``: the first ``max_dirty`` paths
    listed, as long as they take at most ``max_bytes`` of JSON together."""
    branch = head = None
    dirty: list[str] = []
    count = 0
    room = max_bytes
    fields = iter(out.split("\0"))
    for entry in fields:
        if not entry:
            continue
        if entry.startswith("# branch.oid "):
            oid = entry[len("# branch.oid ") :]
            head = None if oid == "(initial)" else oid
        elif entry.startswith("# branch.head "):
            name = entry[len("# branch.head ") :]
            branch = None if name == "(detached)" else name
        elif entry.startswith("#"):
            continue
        else:
            path = _status_path(entry)
            if entry.startswith("2 "):
                next(fields, None)  # a rename's original path
            if path is None:
                continue
            count += 1
            size = len(json.dumps(path)) + 1  # at least its bytes in any JSON, and a comma
            if len(dirty) < max_dirty and size <= room:
                dirty.append(path)
                room -= size
            else:
                room = 0  # the first paths only: none after one left out
    return GitState(True, branch, head, tuple(dirty), count)


def _status_path(entry: str) -> str | None:
    kind = entry[:2]
    if kind == "1 ":
        return entry.split(" ", 8)[8]
    if kind == "2 ":
        return entry.split(" ", 9)[9]
    if kind == "u ":
        return entry.split(" ", 10)[10]
    if kind == "? ":
        return entry[2:]
    return None
