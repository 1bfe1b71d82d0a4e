"""A session layer on asyncio with triact's guarantees for an update, written the way a
competent engineer would write it, lean: the fair baseline of the in-memory update.

* **Atomic on exception and on cancellation.** The update function gets a private
  shallow copy of the session's data (``dict(data)``) and returns the new data; only
  once it has returned (and, if it is async, its awaits are through) is the result
  stored. If it raises or is cancelled, the stored data and version are untouched.
* **No live object handed out.** A committed dict is never written again (the next
  update copies it), and callers get it behind a read-only ``MappingProxyType``. (The
  update function itself could keep the dict it returns and write into it later: a
  frozen state, as triact's, rules that out too; here it costs nothing.)
* **Versioned.** Each commit adds 1 to the version; ``expected_version`` refuses a
  change made against another version.
* **Serial per session.** One ``asyncio.Lock`` per session, held across the update.
  No global lock: on one event loop a dict lookup needs none.
* **Counted.** Each commit counts an operation and stamps ``last_used`` (wall clock).
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from ._model import SessionConcurrencyError, SessionNotFoundError


class Snapshot(NamedTuple):
    """What an update returns: the committed version and a read-only view of its data."""

    version: int
    data: Mapping[str, Any]


class CopySession:
    """One session's record; ``data`` is replaced on each commit, never written to."""

    __slots__ = ("data", "last_used", "lock", "operations", "session_id", "version")

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.lock = asyncio.Lock()
        self.data: dict[str, Any] = {}
        self.version = 1
        self.last_used = time.time()
        self.operations = 0


#: An update: a (plain or async) function of a private copy of the data to the new data.
CopyUpdate = Callable[[dict[str, Any]], Any]


class AsyncioCopyManager:
    """Sessions in a dict; each update runs under the session's lock on a copy."""

    def __init__(self, *, max_sessions: int = 10_000) -> None:
        self.max_sessions = max_sessions
        self._sessions: dict[str, CopySession] = {}

    def create_session(self) -> CopySession:
        if len(self._sessions) >= self.max_sessions:
            raise ValueError(f"max sessions ({self.max_sessions}) reached")
        session = CopySession(uuid.uuid4().hex)
        self._sessions[session.session_id] = session
        return session

    def snapshot(self, session_id: str) -> Snapshot:
        session = self._get(session_id)
        return Snapshot(session.version, MappingProxyType(session.data))

    def _get(self, session_id: str) -> CopySession:
        session = self._sessions.get(session_id)
        if session is None:
            raise SessionNotFoundError(f"session {session_id} not found")
        return session

    async def update(
        self, session_id: str, fn: CopyUpdate, expected_version: int | None = None
    ) -> Snapshot:
        """Apply ``fn`` to a copy of the session's data and commit what it returns,
        with version + 1; nothing changes if it raises or is cancelled."""
        session = self._get(session_id)
        async with session.lock:
            if expected_version is not None and session.version != expected_version:
                raise SessionConcurrencyError(
                    f"session {session_id}: expected version {expected_version}, "
                    f"found {session.version}"
                )
            data = fn(dict(session.data))
            if inspect.isawaitable(data):
                data = await data  # cancelled or raising here: nothing stored
            if type(data) is not dict:
                raise TypeError(f"an update returned {type(data).__name__}, not a dict")
            version = session.version + 1
            session.data = data
            session.version = version
            session.last_used = time.time()
            session.operations += 1
            return Snapshot(version, MappingProxyType(data))
