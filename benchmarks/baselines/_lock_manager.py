"""Today's session layer, whatever its event loop: a dict of sessions behind one global
lock, one lock per session, a versioned ``atomic_update`` that looks the session up
under the global lock and applies the change under the session's, client tokens hashed
with PBKDF2 on the event loop, and an hourly cleanup loop that scans every session
(started, never exercised by the benchmarks). :mod:`.asyncio_lock_manager` and
:mod:`.trio_lock_manager` run it with each library's lock.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

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


class LockManager:
    """The design, for either library: subclasses name the lock and the sleep."""

    #: Makes the global lock and each session's lock.
    new_lock: Callable[[], Any]
    #: Sleeps between cleanup passes.
    sleep: Callable[[float], Awaitable[Any]]

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
        self._lock = self.new_lock()

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
            session = Session(new_session_id(), self.new_lock(), topic, client_binding=binding)
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
            self._committed(session)
            return result

    def _committed(self, session: Session) -> None:
        """Called under the session's lock after each change (the durable variant saves)."""

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
            await self.sleep(self.cleanup_interval)
            await self.cleanup_expired()
