"""The Session handle: the way callers reach one session's actor."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..actors import (
    ActorFailedError,
    ActorStoppedError,
    MailboxFullError,
    ReentrantCallError,
)
from . import _ops as ops
from ._cycles import current_hold, done_waiting, wait_on
from ._errors import (
    SessionBusyError,
    SessionFailedError,
    SessionNotFoundError,
    SessionReentrancyError,
    SessionSecurityError,
)
from ._leases import Entry
from ._state import RequestRecord, SessionState, check_principal
from ._stats import LatencySummary, SessionStats

if TYPE_CHECKING:
    from ._host import SessionHost

_Change = ops.Change

#: What :meth:`Session.update` takes: a plain or async function of the current state
#: that returns the next one.
Update = Callable[[SessionState], Any]


class Session:
    """A handle to one session. Every call goes through the session's actor, so calls
    are handled one at a time in arrival order (I1, docs/architecture.md).

    Handles are cheap; :meth:`SessionManager.get_session` makes a new one each time.
    """

    __slots__ = ("_auth", "_entry", "_host", "id", "token")

    def __init__(self, host: SessionHost, entry: Entry, token: str | None = None) -> None:
        self._host = host
        self._entry = entry
        self.id = entry.id
        #: The client token of a bound session: only on the handle create_session
        #: returned; the state keeps only its HMAC.
        self.token = token
        self._auth: tuple[str | None, str | None, str | None] | None = None

    def authorized(
        self, token: str | None, tool_name: str | None = None, *, principal: str | None = None
    ) -> Session:
        """A handle to the same session whose every call first makes the checks of
        :meth:`validate_security` (the session is ``principal``'s, ``token`` opens
        it), inside the same actor call: one call to the actor instead of two, and the
        checks and the operation are atomic. A refusal raises and the operation does
        not run: :class:`SessionNotFoundError` for another principal's session,
        :class:`SessionSecurityError` for a refused token (recorded, see
        :meth:`validate_security`)."""
        handle = Session(self._host, self._entry, self.token)
        handle._auth = (token, tool_name, check_principal(principal))
        return handle

    def __repr__(self) -> str:
        return f"<Session {self.id!r}{' ' + self._entry.gone if self._entry.gone else ''}>"

    async def _call(self, op: ops.Op) -> Any:
        if self._auth is not None and type(op) is not ops.Validate:
            op = ops.Authorized(op, *self._auth)  # type: ignore[arg-type]
        host = self._host
        entry = self._entry
        holds = current_hold()
        # Called from inside an async update: SessionReentrancyError on a cycle.
        waiter = wait_on(entry, holds) if holds else None
        waits_on = entry
        try:
            while True:
                if entry.forgotten and entry.gone is None:  # dropped here; the store may hold it
                    entry = self._entry = host.adopt(entry.id)
                ref = entry.ref
                if ref is None or not ref.accepting:
                    ref = await host.activate(entry)
                try:
                    return await ref.ask(op)
                except BaseException as exc:
                    self._failed(entry, exc)  # raises, or returns to go round
        finally:
            if waiter is not None:
                done_waiting(waiter, waits_on)

    def _failed(self, entry: Entry, exc: BaseException) -> None:
        """Raise what a call whose ask raised ``exc`` raises, or return if the call
        is to go round (its actor stopped between our look and the ask). Called
        from the ``except`` block, so a bare ``raise`` raises ``exc`` as it was."""
        if isinstance(exc, SessionSecurityError | SessionNotFoundError):
            # A refused token (or principal) is not activity: it keeps no session
            # alive (and a session not found has none to keep).
            raise
        host = self._host
        # Idleness counts from a call's end: the actor stamps the calls it handled,
        # and a busy session never expires; this stamps the others (refused,
        # cancelled).
        host.stamp(entry)
        if isinstance(exc, MailboxFullError):
            host.tally.busy_rejected()
            raise SessionBusyError(
                f"session {self.id!r} has {host.config.mailbox_size} calls "
                "queued (mailbox_size); retry later"
            ) from None
        if isinstance(exc, ReentrantCallError):
            raise SessionReentrancyError(
                f"session {self.id!r} was called from inside its own handler; that "
                "call would wait for itself forever. Work on the state passed to "
                "your update function instead"
            ) from None
        if isinstance(exc, ActorFailedError):
            host.session_failed(entry, exc)
            raise SessionFailedError(
                f"session {self.id!r} failed and was stopped: {exc.__cause__!r}"
            ) from exc
        if not isinstance(exc, ActorStoppedError):
            raise
        # Passivated (or shut down) between our look and the ask: go round.
        if host.closing() or entry.gone is not None:
            raise host.refusal(entry) from None

    async def snapshot(self) -> SessionState:
        """The current state, with live metrics. Never changes the version."""
        return await self._call(ops.READ)  # type: ignore[no-any-return]

    async def update(self, fn: Update, expected_version: int | None = None) -> SessionState:
        """Apply ``fn(state) -> state`` inside the session's actor and commit the
        result whole, with version + 1 (I2, I3, docs/architecture.md); return the committed state.

        ``fn`` may be a plain or an async function. If it raises or is cancelled,
        nothing changes. With ``expected_version``, the update is refused with
        :class:`SessionConcurrencyError` unless the session is at that version.
        """
        op = _Change()  # (see Change)
        op.transform = fn
        op.expected_version = expected_version
        entry = self._entry
        ref = entry.ref
        # The common call, the first round of _call spelled out: to an unguarded
        # handle's session whose actor is in memory, not from inside an async update
        # (a coroutine less for every update).
        if (
            ref is not None
            and self._auth is None
            and not entry.forgotten
            and ref.accepting
            and not current_hold()
        ):
            try:
                return await ref.ask(op)  # type: ignore[no-any-return]
            except BaseException as exc:
                self._failed(entry, exc)  # raises, or returns to go round
        return await self._call(op)  # type: ignore[no-any-return]

    async def set_working_directory(self, path: str | os.PathLike[str]) -> SessionState:
        """Set the working directory: an absolute path to an existing directory."""
        return await self.update(ops.set_working_directory(path))

    async def add_thread(self, name: str, system_prompt: str | None = None) -> SessionState:
        """Add a named thread (a perspective with its own history)."""
        config, now = self._host.config, self._host.wall_clock()
        return await self.update(ops.add_thread(config, now, name, system_prompt))

    async def add_thread_message(self, thread: str, role: str, content: str) -> SessionState:
        """Append a message to a thread's history (oldest dropped past the bound)."""
        config, now = self._host.config, self._host.wall_clock()
        return await self.update(ops.add_thread_message(config, now, thread, role, content))

    async def record_analysis(
        self,
        prompt: str,
        responses: Mapping[str, str] | Sequence[str],
        response_time: float | None = None,
    ) -> SessionState:
        """Record an analysis: its prompt, its responses and how long it took."""
        config, now = self._host.config, self._host.wall_clock()
        return await self.update(ops.record_analysis(config, now, prompt, responses, response_time))

    async def begin_request(
        self, conversation_id: str = "default", tool_name: str | None = None
    ) -> RequestRecord:
        """Start tracking a request; its id is
        ``session:conversation:counter:timestamp:random``. Raises
        :class:`SessionLimitError` if ``max_active_requests`` are active already."""
        config, now = self._host.config, self._host.wall_clock()
        state = await self.update(ops.begin_request(config, now, conversation_id, tool_name))
        return state.active_requests[-1]

    async def complete_request(self, request_id: str) -> SessionState:
        """Mark an active request completed."""
        config, now = self._host.config, self._host.wall_clock()
        return await self.update(ops.finish_request(config, now, request_id, None))

    async def fail_request(self, request_id: str, error: str) -> SessionState:
        """Mark an active request failed, with what went wrong."""
        config, now = self._host.config, self._host.wall_clock()
        return await self.update(ops.finish_request(config, now, request_id, str(error)))

    async def validate_security(
        self, token: str | None, tool_name: str | None = None, *, principal: str | None = None
    ) -> None:
        """Check that the session belongs to ``principal`` (None: that it has no
        principal), then ``token`` against the session's client binding (no token is
        needed for an unbound session). The right token always passes.

        Another principal's session raises :class:`SessionNotFoundError`, in the same
        words as a session that does not exist, and leaves no trace in the session. A
        refused token raises :class:`SessionSecurityError`, is recorded as a security
        event and changes nothing: not the version, not the idle time. After
        ``security_max_failures`` refusals within ``security_window`` seconds, wrong
        tokens are refused with :class:`SessionThrottledError` (with ``retry_after``)
        until the window has passed."""
        await self._call(ops.Validate(token, tool_name, check_principal(principal)))

    async def end(self) -> SessionState:
        """End the session after the calls queued before this one: return its final
        state and remove it from memory and the store."""
        return await self._call(ops.End("ended"))  # type: ignore[no-any-return]

    async def stats(self) -> SessionStats:
        """This session's counters and latency percentiles."""
        ref = self._entry.ref
        queued = ref.queued if ref is not None else 0  # ahead of this call
        state = await self.snapshot()
        entry = self._entry
        actor = entry.actor if entry.ref is not None else None
        latencies = actor.latencies() if actor is not None else []
        metrics = state.metrics
        failed = sum(r.status == "failed" for r in state.completed_requests)
        return SessionStats(
            session_id=state.id,
            version=state.version,
            operations=metrics.operations,
            errors=metrics.errors,
            error_rate=metrics.errors / metrics.operations if metrics.operations else 0.0,
            latency=LatencySummary.of(latencies),
            threads=len(state.threads),
            analyses=len(state.analyses),
            active_requests=len(state.active_requests),
            completed_requests=len(state.completed_requests) - failed,
            failed_requests=failed,
            queued=queued,
        )
