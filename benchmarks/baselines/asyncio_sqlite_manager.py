"""Today's durable session layer: the asyncio design of :mod:`.asyncio_lock_manager`,
plus one SQLite write of the session's JSON per change, made synchronously on the
event loop while the session's lock is held, in WAL mode with SQLite's default
``synchronous = FULL`` (the same durability as ``triact.SqliteStore``'s default;
``NORMAL`` can be chosen to compare with a store opened that way).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from ._model import Session
from .asyncio_lock_manager import AsyncioLockManager, running_cleanup

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS sessions "
    "(session_id TEXT PRIMARY KEY, version INTEGER, updated_at TEXT, state TEXT)"
)
_SAVE = "INSERT OR REPLACE INTO sessions (session_id, version, updated_at, state) VALUES (?,?,?,?)"


class AsyncioSqliteManager(AsyncioLockManager):
    def __init__(self, db: sqlite3.Connection, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._db = db

    def _save(self, session: Session) -> None:
        self._db.execute(
            _SAVE,
            (
                session.session_id,
                session.version,
                session.last_accessed.isoformat(),
                json.dumps(session.to_dict()),
            ),
        )
        self._db.commit()

    async def create_session(
        self, topic: str | None = None, *, bind_client: bool = False
    ) -> tuple[Session, str | None]:
        session, token = await super().create_session(topic, bind_client=bind_client)
        async with session.lock:
            self._save(session)
        return session, token

    def _committed(self, session: Session) -> None:
        self._save(session)

    def stored(self, session_id: str) -> dict[str, Any] | None:
        """The session as the file holds it (for checking the benchmark's counts)."""
        row = self._db.execute(
            "SELECT state FROM sessions WHERE session_id = ?", (session_id,)
        ).fetchone()
        return None if row is None else json.loads(row[0])


@asynccontextmanager
async def open_asyncio_sqlite_manager(
    path: str, *, synchronous: Literal["FULL", "NORMAL"] = "FULL", **kwargs: Any
) -> AsyncIterator[AsyncioSqliteManager]:
    """The manager on the SQLite file ``path``, with its cleanup loop running."""
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {synchronous}")
        db.execute(_SCHEMA)
        db.commit()
        manager = AsyncioSqliteManager(db, **kwargs)
        async with running_cleanup(manager):
            yield manager
    finally:
        db.close()
