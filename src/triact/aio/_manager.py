"""The asyncio faces of a session manager, its sessions and its subscriptions.

Each method forwards one call to the Trio object it wraps, through the guest run
(see ``_guest``), so it has the same behaviour, return values and exceptions as
the Trio method of the same name.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from types import TracebackType
from typing import Any

from .. import sessions
from ..sessions import (
    IndexEntry,
    ManagerStats,
    RequestRecord,
    SessionConfig,
    SessionEvent,
    SessionState,
    SessionStats,
)
from ._guest import GuestRun

Update = Callable[[SessionState], Any]


@asynccontextmanager
async def open_session_manager(
    config: SessionConfig | None = None,
) -> AsyncIterator[SessionManager]:
    """Open a triact session manager from asyncio, for the duration of an
    ``async with`` block.

    The manager runs in a Trio run hosted by the running asyncio loop (Trio's guest
    mode): its code runs on the loop's thread, between the loop's own callbacks,
    and there is no second event loop. Its methods are asyncio awaitables with the
    behaviour and exceptions of :class:`triact.SessionManager`.

    Leaving the block shuts the manager down as :func:`triact.open_session_manager`
    does (intake stops, calls in flight get ``shutdown_grace`` seconds, the store is
    flushed) and then ends the Trio run: no Trio task is left. Cancelling the task
    that leaves the block does not cut this short; it is raised once the run has
    ended. One manager per thread: Trio allows one run per thread.
    """
    run: GuestRun[sessions.SessionManager] = GuestRun(asyncio.get_running_loop())
    manager = await run.enter(partial(sessions.open_session_manager, config))
    try:
        yield SessionManager(run, manager)
    finally:
        await run.close()


class SessionManager:
    """A :class:`triact.SessionManager` seen from asyncio.

    Open one with :func:`triact.aio.open_session_manager`.
    """

    __slots__ = ("_manager", "_run")

    def __init__(self, run: GuestRun[Any], manager: sessions.SessionManager) -> None:
        self._run = run
        self._manager = manager

    def __repr__(self) -> str:
        return f"<triact.aio.SessionManager {self.session_count} sessions>"

    @property
    def config(self) -> SessionConfig:
        return self._manager.config

    @property
    def wall_clock(self) -> Callable[[], float]:
        """The wall clock of the timestamps stored in states (``config.wall_clock``)."""
        return self._manager.wall_clock

    @property
    def session_count(self) -> int:
        """Live sessions, in memory or passivated."""
        return self._manager.session_count

    @property
    def closing(self) -> bool:
        """True once the manager's block has begun to close (see
        :attr:`triact.SessionManager.closing`)."""
        return self._manager.closing

    def session_ids(self) -> list[str]:
        """The ids of the live sessions, oldest first."""
        return self._manager.session_ids()

    async def count_sessions(self) -> int:
        """Live sessions; a shared store's, every process's (see
        :meth:`triact.SessionManager.count_sessions`)."""
        return await self._run.call(self._manager.count_sessions)

    async def list_sessions(
        self, after: tuple[float, str] | None = None, limit: int = 100
    ) -> list[IndexEntry]:
        """A page of live sessions (see :meth:`triact.SessionManager.list_sessions`)."""
        return await self._run.call(self._manager.list_sessions, after, limit)

    async def usable_sessions(
        self, tokens: Iterable[str] = (), *, principal: str | None = None
    ) -> list[SessionState]:
        """The states of the live sessions a caller holding ``tokens`` (as
        ``principal``) may use: see :meth:`triact.SessionManager.usable_sessions`."""
        usable = partial(self._manager.usable_sessions, tokens, principal=principal)
        return await self._run.call(usable)

    async def usable_index(
        self, tokens: Iterable[str] = (), *, principal: str | None = None
    ) -> list[IndexEntry]:
        """Those sessions as index entries, what a listing shows: see
        :meth:`triact.SessionManager.usable_index`."""
        usable = partial(self._manager.usable_index, tokens, principal=principal)
        return await self._run.call(usable)

    async def create_session(
        self,
        topic: str | None = None,
        working_directory: str | os.PathLike[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        bind_client: bool = False,
        *,
        client_id: str | None = None,
        config_path: str | None = None,
        project_id: str | None = None,
        principal: str | None = None,
    ) -> Session:
        """Create a session: see :meth:`triact.SessionManager.create_session`."""
        create = partial(
            self._manager.create_session,
            topic,
            working_directory,
            metadata,
            bind_client,
            client_id=client_id,
            config_path=config_path,
            project_id=project_id,
            principal=principal,
        )
        return Session(self._run, await self._run.call(create))

    async def get_session(self, session_id: str) -> Session:
        """The handle of a live session; :class:`triact.SessionNotFoundError` if
        there is none."""
        return Session(self._run, await self._run.call(self._manager.get_session, session_id))

    async def remove_session(self, session_id: str) -> bool:
        """Remove a session at once; True if it existed."""
        return await self._run.call(self._manager.remove_session, session_id)

    @asynccontextmanager
    async def session(self, topic: str | None = None, **kwargs: Any) -> AsyncIterator[Session]:
        """A temporary session, removed on exit whatever happens inside (the removal
        is not interrupted by cancellation)."""
        session = await self.create_session(topic, **kwargs)
        try:
            yield session
        finally:
            await self._run.call(self._manager.remove_session, session.id, shield=True)

    def subscribe(self, buffer: int | None = None) -> Subscription:
        """A stream of lifecycle events: see :meth:`triact.SessionManager.subscribe`."""
        return Subscription(self._run, self._manager.subscribe(buffer))

    async def stats(self) -> ManagerStats:
        """Manager-wide figures."""
        return await self._run.call(self._manager.stats)


class Session:
    """A :class:`triact.Session` seen from asyncio: calls are handled one at a time,
    in arrival order, inside the session's actor.

    ``update(fn)`` applies a plain function ``SessionState -> SessionState`` inside
    the actor. An ``async def`` update function runs as a *Trio* coroutine: it may
    await Trio code, and asyncio code only through :func:`triact.aio.run_asyncio`.
    """

    __slots__ = ("_run", "_session", "id", "token")

    def __init__(self, run: GuestRun[Any], session: sessions.Session) -> None:
        self._run = run
        self._session = session
        self.id = session.id
        #: The client token of a bound session, on the handle create_session returned.
        self.token = session.token

    def __repr__(self) -> str:
        return f"<triact.aio.Session {self.id!r}>"

    def authorized(
        self, token: str | None, tool_name: str | None = None, *, principal: str | None = None
    ) -> Session:
        """A handle to the same session whose every call first checks ``principal`` and
        ``token`` inside the same actor call: see :meth:`triact.Session.authorized`."""
        return Session(self._run, self._session.authorized(token, tool_name, principal=principal))

    async def snapshot(self) -> SessionState:
        """The current state, with live metrics. Never changes the version."""
        return await self._run.call(self._session.snapshot)

    async def update(self, fn: Update, expected_version: int | None = None) -> SessionState:
        """Apply ``fn(state) -> state`` inside the session's actor and commit the
        result whole, with version + 1; return the committed state.

        If ``fn`` raises, nothing changes and the exception is raised here. With
        ``expected_version``, :class:`triact.SessionConcurrencyError` unless the
        session is at that version.
        """
        return await self._run.call(self._session.update, fn, expected_version)

    async def set_working_directory(self, path: str | os.PathLike[str]) -> SessionState:
        """Set the working directory: an absolute path to an existing directory."""
        return await self._run.call(self._session.set_working_directory, path)

    async def add_thread(self, name: str, system_prompt: str | None = None) -> SessionState:
        """Add a named thread (a perspective with its own history)."""
        return await self._run.call(self._session.add_thread, name, system_prompt)

    async def add_thread_message(self, thread: str, role: str, content: str) -> SessionState:
        """Append a message to a thread's history."""
        return await self._run.call(self._session.add_thread_message, thread, role, content)

    async def record_analysis(
        self,
        prompt: str,
        responses: Mapping[str, str] | Sequence[str],
        response_time: float | None = None,
    ) -> SessionState:
        """Record an analysis: its prompt, its responses and how long it took."""
        return await self._run.call(self._session.record_analysis, prompt, responses, response_time)

    async def begin_request(
        self, conversation_id: str = "default", tool_name: str | None = None
    ) -> RequestRecord:
        """Start tracking a request."""
        return await self._run.call(self._session.begin_request, conversation_id, tool_name)

    async def complete_request(self, request_id: str) -> SessionState:
        """Mark an active request completed."""
        return await self._run.call(self._session.complete_request, request_id)

    async def fail_request(self, request_id: str, error: str) -> SessionState:
        """Mark an active request failed, with what went wrong."""
        return await self._run.call(self._session.fail_request, request_id, error)

    async def validate_security(
        self, token: str | None, tool_name: str | None = None, *, principal: str | None = None
    ) -> None:
        """Check that the session is ``principal``'s
        (:class:`triact.SessionNotFoundError` if not), then ``token`` against its client
        binding (:class:`triact.SessionSecurityError` if it is refused)."""
        check = partial(self._session.validate_security, token, tool_name, principal=principal)
        await self._run.call(check)

    async def end(self) -> SessionState:
        """End the session after the calls queued before this one; return its final
        state."""
        return await self._run.call(self._session.end)

    async def stats(self) -> SessionStats:
        """This session's counters and latency percentiles."""
        return await self._run.call(self._session.stats)


class Subscription:
    """A :class:`triact.Subscription` seen from asyncio: iterate it with
    ``async for``; close it (or use it as a context manager) when done. Iteration
    ends when the subscription closes or the manager starts closing."""

    __slots__ = ("_run", "_subscription")

    def __init__(self, run: GuestRun[Any], subscription: sessions.Subscription) -> None:
        self._run = run
        self._subscription = subscription

    @property
    def dropped(self) -> int:
        """How many events were dropped because this subscriber fell behind."""
        return self._subscription.dropped

    def close(self) -> None:
        """Stop the subscription; iteration ends once the events buffered are read."""
        self._run.run_sync_soon(self._subscription.close)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> SessionEvent:
        if self._run.closing:
            raise StopAsyncIteration
        return await self._run.call(self._subscription.__anext__)
