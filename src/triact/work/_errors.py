"""The work layer's exceptions: one base, one subclass per cause, each with the stable
code the MCP tools report it under."""

from __future__ import annotations

from typing import ClassVar


class WorkError(Exception):
    """Base class of every error the work layer raises (session errors, such as
    :class:`~triact.SessionNotFoundError`, pass through as they are)."""

    #: The stable error code of the MCP tools.
    code: ClassVar[str] = "work_error"


#: How many characters of a path a client gave an error quotes.
_QUOTED_CHARS = 100


def quoted_path(path: str) -> str:
    """``path`` (a client's), as an error quotes it: its repr, only of its first
    characters and with its length when it is longer (an error never echoes a
    client's megabytes)."""
    if len(path) <= _QUOTED_CHARS:
        return repr(path)
    return f"{path[:_QUOTED_CHARS]!r}... ({len(path)} characters)"


class WorkDirectoryError(WorkError, ValueError):
    """A working directory is refused: not absolute, missing, not a directory, outside
    the allowed roots, or the session has none."""

    code = "invalid_arguments"


class WorkArgumentError(WorkError, ValueError):
    """A value is refused: an empty query, content, tag, project or operation name, a
    non-positive expiry."""

    code = "invalid_arguments"


class WorkLimitError(WorkError, ValueError):
    """A value exceeds a configured bound (a reflection's size, a note's length, the
    number of trusted operations)."""

    code = "invalid_arguments"


class NotAGitRepositoryError(WorkError):
    """A checkpoint commit was asked for in a directory that is not the top of a git
    repository."""

    code = "not_a_git_repository"


class GitError(WorkError):
    """git could not be run, or failed."""

    code = "git_failed"


class GitTimeoutError(GitError):
    """git did not finish within ``WorkConfig.git_timeout``; it was killed."""

    code = "git_timeout"


class WorkDataError(WorkError):
    """The work record kept in a session's data is malformed (it was overwritten), or a
    newer triact wrote it."""

    code = "data_error"


class WorkStoreError(WorkError):
    """The store cannot keep the work layer's data (no FTS5 in this SQLite, a store
    kind it does not know, or tables from a newer triact), or holds a record of it
    that something else wrote. Each is found before anything is written, so nothing
    of the call was saved: ``applied`` is False, as a
    :class:`~triact.sessions.SessionStoreError`'s is when it knows that. (A store's own
    failure under a work tool is that store's ``SessionStoreError``.)"""

    code = "store_error"
    applied: bool | None = False


def commit_kept(exc: Exception, commit: str) -> Exception:
    """``exc``, a failure to record a checkpoint after its git commit was made, told
    truthfully: a copy of it (same type and attributes, so the same code and
    ``applied``) whose message says that the commit stays, with its hash in
    ``commit``."""
    said = str(exc).replace("nothing was committed", "the session was not changed")
    told = type(exc).__new__(type(exc))  # no __init__: its arguments differ per type
    told.__dict__.update(exc.__dict__)
    told.args = (
        f"the checkpoint commit {commit} was made in git and stays, but recording the "
        f"checkpoint in the session failed: {said}",
    )
    told.commit = commit  # type: ignore[attr-defined]
    return told
