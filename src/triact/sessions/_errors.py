"""The session layer's exceptions: one base, one subclass per cause, each with the
stable ``code`` that the MCP tools report it under."""

from __future__ import annotations

from typing import ClassVar


class SessionError(Exception):
    """Base class of every error the session layer raises."""

    #: The stable error code of the MCP tools (docs/mcp.md).
    code: ClassVar[str] = "session_error"


class SessionNotFoundError(SessionError):
    """No session has that id: it never existed, expired, ended or was removed; or it
    belongs to another principal, which a caller cannot tell apart."""

    code = "not_found"


#: How many characters of a value a caller gave an error quotes.
_QUOTED_CHARS = 40


def quoted(value: object) -> str:
    """``value`` (a caller's), as an error quotes it: its repr, only of its first
    characters and with its length when it is a longer string, by its type when it
    is another long value (an error never echoes a client's megabytes)."""
    if isinstance(value, str) and len(value) > _QUOTED_CHARS:
        return f"{value[:_QUOTED_CHARS]!r}... ({len(value)} characters)"
    shown = repr(value)
    return shown if len(shown) <= _QUOTED_CHARS + 2 else f"a {type(value).__name__}"


def no_session(session_id: str) -> SessionNotFoundError:
    """The error for a session id that names no session this caller may use: the same
    words whether there is none or it is another principal's."""
    return SessionNotFoundError(
        f"no session {quoted(session_id)}: it never existed, or it expired, ended or was "
        "removed; create a new one"
    )


class SessionSecurityError(SessionError):
    """A bound session refused a missing or wrong token. Nothing ran and nothing
    changed; the refusal is recorded as a security event."""

    code = "unauthorized"


class SessionThrottledError(SessionSecurityError):
    """A bound session refused a missing or wrong token from a caller that presented
    too many of them: ``retry_after`` seconds from now wrong tokens are checked (and
    counted) again. The session's own token is never throttled."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SessionConcurrencyError(SessionError):
    """An update named an ``expected_version`` that is not the current version.

    Nothing changed. Read the session again and retry against its current version.
    """

    code = "conflict"

    def __init__(self, message: str, *, expected: int, actual: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class SessionFencedError(SessionConcurrencyError):
    """A shared store refused a write of a session's owner: another process has taken
    the session over since (its fencing epoch moved on). Nothing of the write was
    saved; retry the call (it then runs where the session now lives).

    ``expected`` and ``actual`` are the epochs, not versions.
    """


class SessionLimitError(SessionError):
    """A configured limit (``max_sessions``, sessions per client) refused a creation."""

    code = "limit_exceeded"


class SessionBusyError(SessionError):
    """The session's mailbox is full: it has ``mailbox_size`` calls queued already.

    Nothing was queued. Retry later.
    """

    code = "busy"


class SessionRateLimitError(SessionBusyError):
    """The session's rate limit refused the call; ``retry_after`` seconds from now one
    call will be allowed again."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SessionContendedError(SessionBusyError):
    """With a shared store, other processes changed the session every time this call
    tried to commit, for as many tries as it gets; nothing of it was saved. Retry in
    about ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SessionClosedError(SessionError):
    """The session ended, or the manager is shutting down, before the call ran."""

    code = "closed"


class SessionReentrancyError(SessionError):
    """Code running inside a session's handler called the same session again.

    The session handles one call at a time, so that call would wait for itself
    forever. Work on the state passed to your function instead.
    """


class SessionStoreError(SessionError):
    """The store failed to save or load a session. A change it failed to save was not
    committed, unless the store lost its connection after sending the write (a
    :class:`RedisStore` timing out): then it may have been, and reading the session
    (or a change with ``expected_version``) tells.

    ``applied`` says which. ``False``: the store knows that nothing of the call was
    saved (it failed before anything was sent, its transaction was rolled back, the
    server refused the write before running it, or the call only read): it may be
    retried as it is. ``None``: it may have been saved (the write was sent and its
    answer lost: a Redis connection lost or timed out mid-call; a SQLite ``COMMIT``
    that failed after the database ended the transaction itself): read the session
    (its version) before retrying. Never ``True`` (that is no failure). A failure a
    store does not classify, and any error made without saying, is ``None``: the
    safe answer.
    """

    code = "store_error"

    def __init__(self, message: str, *, applied: bool | None = None) -> None:
        super().__init__(message)
        if applied is True:
            raise ValueError("a store error's change is not applied (False) or unknown (None)")
        self.applied: bool | None = applied


class SessionDataError(SessionStoreError):
    """A stored session record is malformed, or was written by a newer triact; or a
    state cannot be written as JSON."""


class SessionValueError(SessionDataError, ValueError):
    """A change would commit a value that a state may not hold (not JSON, a number that
    is not finite, an integer past 64 bits, a lone surrogate, nesting past the limit):
    it was refused and nothing was committed."""

    code = "invalid_arguments"


class SessionFailedError(SessionError):
    """The session's actor crashed more often than its restart policy allows and was
    stopped for good; ``__cause__`` is the last crash. The session is gone: create a
    new one."""


class SessionArgumentError(SessionError, ValueError):
    """A call's argument is refused (a relative or missing working directory, an empty
    or duplicate thread name, a negative response time, ...). Nothing changed."""

    code = "invalid_arguments"


class RequestNotFoundError(SessionError):
    """The session has no active request with that id (never begun, or finished)."""
