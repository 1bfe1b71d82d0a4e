"""Today's session layer moved to Trio as is: the design of
:mod:`.asyncio_lock_manager` (a dict behind a global lock, one lock per session, a
versioned ``atomic_update``, PBKDF2 token hashing on the event loop, an hourly
cleanup loop) with ``trio.Lock`` in place of ``asyncio.Lock``.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import trio

from ._model import (
    PBKDF2_ITERATIONS,
    Session,
    SessionConcurrencyError,
    SessionLimitError,
    SessionNotFoundError,
    check_token,
    new_binding,
    new_session_id,
    now,
)


class TrioLockManager:
    def __init__(
        self,
        *,
        max_sessions: int = 10_000,
        ttl: timedelta = timedelta(hours=2),
        cleanup_interval: float = 3600.0,
        pbkdf2_iterations: int = PBKDF2_ITERATIONS,
    ) -> None:
        self.max_sessions = max_sessions
        self.ttl = ttl
        self.cleanup_interval = cleanup_interval
        self.pbkdf2_iterations = pbkdf2_iterations
        self._sessions: dict[str, Session] = {}
        self._lock = trio.Lock()

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    async def create_session(
        self, topic: str | None = None, *, bind_client: bool = False
    ) -> tuple[Session, str | None]:
        """A new session, and its client token if ``bind_client``."""
        async with self._lock:
            if len(self._sessions) >= self.max_sessions:
                raise SessionLimitError(f"max sessions ({self.max_sessions}) reached")
            token = binding = None
            if bind_client:
                token, binding = new_binding(self.pbkdf2_iterations)
            session = Session(new_session_id(), trio.Lock(), topic, client_binding=binding)
            self._sessions[session.session_id] = session
        return session, token

    async def get_session(self, session_id: str) -> Session:
        async with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            raise SessionNotFoundError(f"session {session_id} not found")
        return session

    async def remove_session(self, session_id: str) -> bool:
        async with self._lock:
            return self._sessions.pop(session_id, None) is not None

    async def atomic_update(
        self,
        session_id: str,
        fn: Callable[[Session], Any],
        expected_version: int | None = None,
    ) -> Any:
        """Apply ``fn(session)`` (plain or async) under the session's lock; version + 1."""
        session = await self.get_session(session_id)
        async with session.lock:
            if expected_version is not None and session.version != expected_version:
                raise SessionConcurrencyError(
                    f"session {session_id}: expected version {expected_version}, "
                    f"found {session.version}"
                )
            result = fn(session)
            if inspect.isawaitable(result):
                result = await result
            session.version += 1
            session.last_accessed = now()
            session.metrics.operations += 1
            return result

    async def validate_security(
        self, session_id: str, token: str | None, tool_name: str | None = None
    ) -> None:
        session = await self.get_session(session_id)
        async with session.lock:
            check_token(session, token, self.pbkdf2_iterations)

    async def cleanup_expired(self) -> int:
        async with self._lock:
            cutoff = now() - self.ttl
            expired = [sid for sid, s in self._sessions.items() if s.last_accessed < cutoff]
            for sid in expired:
                del self._sessions[sid]
        return len(expired)

    async def _cleanup_loop(self) -> None:
        while True:
            await trio.sleep(self.cleanup_interval)
            await self.cleanup_expired()


@asynccontextmanager
async def open_trio_lock_manager(**kwargs: Any) -> AsyncIterator[TrioLockManager]:
    """The manager with its cleanup loop running, for the duration of the block."""
    manager = TrioLockManager(**kwargs)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(manager._cleanup_loop)
        yield manager
        nursery.cancel_scope.cancel()
