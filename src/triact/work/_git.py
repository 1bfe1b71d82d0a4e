"""Working directories and git: every git command runs as a subprocess off the event
loop, with a timeout, inside the session's working directory and nowhere else.

Confinement: git starts in the directory (``cwd``), may not look for a repository
above it (``GIT_CEILING_DIRECTORIES``), and runs with no ``GIT_*`` variable inherited
from this process (``GIT_DIR`` or ``GIT_WORK_TREE`` would point it elsewhere). So the
directory counts as a repository only if it is the top of a work tree; a commit is
also refused when the repository's git directory lies outside it (a linked worktree,
a submodule). Reads do not take git's optional locks, so a report never writes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

import attrs
import trio

from ..sessions import SessionState
from ._config import WorkConfig
from ._errors import GitError, GitTimeoutError, NotAGitRepositoryError, WorkDirectoryError
from ._records import GitState

_NOT_A_REPOSITORY = 128  # git's exit status outside a repository


def check_directory(path: str | os.PathLike[str], config: WorkConfig) -> str:
    """The resolved form of ``path`` (an absolute path to an existing directory inside
    the allowed roots); WorkDirectoryError otherwise. Touches the disk: run it in a
    thread."""
    text = os.fspath(path)
    if not isinstance(text, str) or not text or "\x00" in text:
        raise WorkDirectoryError(f"working_directory must be a path, got {text!r}")
    if not os.path.isabs(text):
        raise WorkDirectoryError(f"working_directory must be an absolute path, got {text!r}")
    resolved = os.path.realpath(text)
    if not os.path.isdir(resolved):
        raise WorkDirectoryError(f"working_directory {text!r} does not exist or is not a directory")
    roots = config.allowed_roots
    if roots is not None and not any(_inside(resolved, root) for root in roots):
        raise WorkDirectoryError(
            f"working_directory {text!r} is outside the allowed roots "
            f"({', '.join(roots)}); use a directory inside one of them"
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
    after = await git.state()
    return attrs.evolve(before, head=after.head, branch=after.branch), made


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


#: The GIT_* variables kept from this process's environment: who commits.
_IDENTITY = ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL")


def git_environment(directory: str) -> dict[str, str]:
    """This process's environment without its GIT_* variables (but the identity ones),
    plus ours."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("GIT_") or key in _IDENTITY
    }
    env.update(
        GIT_CEILING_DIRECTORIES=os.path.dirname(directory) or directory,
        GIT_TERMINAL_PROMPT="0",  # never wait for a password
        GIT_OPTIONAL_LOCKS="0",  # status does not refresh (write) the index
        LC_ALL="C",  # messages we can quote
    )
    return env


async def _kill_group(process: trio.Process) -> None:
    # The whole process group: hooks git started too, which would otherwise keep
    # our pipes open.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    await trio.lowlevel.checkpoint()


class Git:
    """Runs git in one directory (resolved, checked) under a WorkConfig."""

    def __init__(self, directory: str, config: WorkConfig) -> None:
        self.directory = directory
        self.config = config
        self._env = git_environment(directory)

    async def run(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        """``git args...``: its exit status, stdout and stderr (as text). GitError if git
        cannot be started, GitTimeoutError if it takes longer than the timeout."""
        command = [self.config.git, "-c", "core.quotepath=off", *args]
        timeout = self.config.git_timeout
        with trio.move_on_after(timeout) as scope:
            try:
                done: subprocess.CompletedProcess[bytes] = await trio.run_process(
                    command,
                    cwd=self.directory,
                    env=env or self._env,
                    stdin=subprocess.DEVNULL,
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                    start_new_session=True,  # its own process group: see _kill_group
                    deliver_cancel=_kill_group,
                )
            except OSError as exc:
                raise GitError(
                    f"cannot run {self.config.git!r} in {self.directory!r}: {exc}; "
                    "is git installed (WorkConfig.git)?"
                ) from exc
        if scope.cancelled_caught:
            raise GitTimeoutError(
                f"git {args[0]} did not finish within {timeout} s in {self.directory!r} and "
                "was killed; try again, or raise WorkConfig.git_timeout"
            )
        return (
            done.returncode,
            done.stdout.decode("utf-8", "replace"),
            done.stderr.decode("utf-8", "replace"),
        )

    async def state(self) -> GitState:
        """Branch, HEAD and uncommitted paths; ``repository=False`` outside a work tree.
        GitError / GitTimeoutError if git fails otherwise."""
        status, out, err = await self.run(
            "status", "--porcelain=v2", "--branch", "-z", "--ignore-submodules=dirty"
        )
        if status == _NOT_A_REPOSITORY and "not a git repository" in err:
            return GitState.none()
        if status != 0:
            raise GitError(f"git status failed in {self.directory!r}: {err.strip() or status}")
        return parse_status(out, self.config.max_dirty_files)

    async def report(self) -> GitState:
        """:meth:`state`, with a failure reported in ``error`` rather than raised."""
        try:
            return await self.state()
        except GitError as exc:
            return GitState.none(str(exc))

    async def commit(self, message: str, *, leave_out: str | None = None) -> str | None:
        """Stage everything in the work tree (``git add -A``: .gitignore applies) but
        the file ``leave_out``, and commit it; the new commit's hash, or None if there
        was nothing to commit.

        NotAGitRepositoryError unless the directory is the top of a work tree whose git
        directory is inside it; GitError if git refuses.
        """
        status, out, err = await self.run("rev-parse", "--absolute-git-dir")
        if status != 0:
            raise NotAGitRepositoryError(
                f"{self.directory!r} is not a git repository (or only a subdirectory of "
                "one: git is confined to the working directory), so no checkpoint commit "
                "can be made; run git init there, or leave commit false"
            )
        git_dir = await trio.to_thread.run_sync(os.path.realpath, out.strip())
        if not _inside(git_dir, self.directory):
            raise GitError(
                f"the git directory of {self.directory!r} is {git_dir!r}, outside the working "
                "directory (a linked worktree or submodule); checkpoint commits are refused there"
            )
        env = {**self._env}
        del env["GIT_OPTIONAL_LOCKS"]  # this one writes
        env.update(await self._author())
        pathspec = ["--", "."] + ([f":(exclude,literal){leave_out}"] if leave_out else [])
        await self._check("add", "-A", *pathspec, env=env)
        status, out, err = await self.run("diff", "--cached", "--quiet", env=env)
        if status == 0:
            return None  # nothing staged
        if status != 1:
            raise GitError(f"git diff --cached failed in {self.directory!r}: {err.strip()}")
        await self._check(
            "-c", "commit.gpgsign=false", "commit", "--quiet", "--no-edit", "-m", message, env=env
        )
        return (await self._check("rev-parse", "HEAD", env=env)).strip()

    async def _check(self, *args: str, env: dict[str, str]) -> str:
        status, out, err = await self.run(*args, env=env)
        if status != 0:
            verb = next(arg for arg in args if not arg.startswith("-") and "=" not in arg)
            raise GitError(
                f"git {verb} failed in {self.directory!r} (exit {status}): "
                f"{(err or out).strip()[:2000]}"
            )
        return out

    async def _author(self) -> dict[str, str]:
        """The fixed checkpoint author, for the parts git's configuration leaves out."""
        _, out, _ = await self.run("config", "--get-regexp", r"^user\.(name|email)$")
        configured = {line.split(" ", 1)[0] for line in out.splitlines()}
        name, email = self.config.checkpoint_author
        env = {}
        for variable in _IDENTITY:
            key = "user.name" if variable.endswith("_NAME") else "user.email"
            if key not in configured and variable not in self._env:
                env[variable] = name if key == "user.name" else email
        return env


def parse_status(out: str, max_dirty: int) -> GitState:
    """Parse ``git status --porcelain=v2 --branch -z``."""
    branch = head = None
    dirty: list[str] = []
    count = 0
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
            if len(dirty) < max_dirty:
                dirty.append(path)
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
