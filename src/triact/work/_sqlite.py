"""The work layer's tables in a :class:`~triact.SqliteStore`'s file, reached through
the store's single connection (:meth:`SqliteStore.run`). Reflections are searched with
SQLite's FTS5, ranked by bm25, newest first among equal ranks."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from functools import partial
from typing import Any

from ..sessions import SqliteStore
from ._backend import WorkStore
from ._errors import WorkStoreError
from ._records import Handoff, Reflection, decode_handoff, encode_handoff

#: Version of the work tables' layout, kept in the store's ``meta`` table.
WORK_TABLES_VERSION = 1
#: The full-text module (a name, so that tests can pretend it is missing).
FTS_MODULE = "fts5"

_TABLES = (
    "CREATE TABLE IF NOT EXISTS work_directories (directory TEXT PRIMARY KEY, "
    "session_id TEXT NOT NULL, updated_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS work_handoffs (directory TEXT PRIMARY KEY, "
    "session_id TEXT NOT NULL, ended_at REAL NOT NULL, record TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS work_reflections (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "project TEXT NOT NULL, content TEXT NOT NULL, tags TEXT NOT NULL, created_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS work_reflections_by_project ON work_reflections (project, id)",
)
# Its rowid is the reflection's id; kept in step by hand in the same transactions.
_FTS_TABLE = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS work_reflections_fts USING {module}"
    "(content, tags, tokenize = 'porter unicode61 remove_diacritics 2')"
)


class SqliteWorkStore(WorkStore):
    """Tables ``work_directories``, ``work_handoffs``, ``work_reflections`` and the FTS5
    index ``work_reflections_fts`` in the store's file, created on first use.

    WorkStoreError if this Python's SQLite has no FTS5, or if a newer triact laid the
    tables out.
    """

    search_method = "fts5-bm25"

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self._prepared = False

    async def prepare(self) -> None:
        if not self._prepared:
            await self.store.run(partial(_create, path=self.store.path), write=True)
            self._prepared = True

    async def session_for(self, directory: str) -> str | None:
        await self.prepare()
        return await self.store.run(partial(_session_for, directory=directory), write=False)

    async def remember(self, directory: str, session_id: str, now: float) -> None:
        await self.prepare()
        step = partial(_remember, directory=directory, session_id=session_id, now=now)
        await self.store.run(step, write=True)

    async def handoff(self, directory: str) -> Handoff | None:
        await self.prepare()
        text = await self.store.run(partial(_handoff, directory=directory), write=False)
        if text is None:
            return None
        where = f"the handoff of {directory!r} in {self.store.path}"
        try:
            raw = json.loads(text)
        except ValueError:
            raw = None
        return decode_handoff(raw, where=where)

    async def finish(self, directory: str, session_id: str, handoff: Handoff) -> None:
        await self.prepare()
        record = json.dumps(encode_handoff(handoff), ensure_ascii=False, allow_nan=False)
        step = partial(
            _finish,
            directory=directory,
            session_id=session_id,
            ended_at=handoff.ended_at,
            record=record,
        )
        await self.store.run(step, write=True)

    async def add_reflection(
        self,
        content: str,
        tags: tuple[str, ...],
        project: str | None,
        now: float,
        keep: int,
    ) -> tuple[Reflection, int, int]:
        await self.prepare()
        step = partial(_add, content=content, tags=tags, project=project, now=now, keep=keep)
        new_id, kept, dropped = await self.store.run(step, write=True)
        return Reflection(new_id, content, tags, project, now), kept, dropped

    async def search(
        self,
        terms: Sequence[str],
        project: str | None,
        tags: tuple[str, ...],
        limit: int,
        *,
        all_projects: bool,
    ) -> list[tuple[Reflection, float]]:
        await self.prepare()
        step = partial(
            _search,
            match=" OR ".join(f'"{term}"' for term in terms),  # words only: no FTS syntax
            project=None if all_projects else _bucket(project),
            tags=tags,
            limit=limit,
        )
        rows = await self.store.run(step, write=False)
        return [
            (Reflection(row[0], row[2], tuple(json.loads(row[3])), row[1] or None, row[4]), -row[5])
            for row in rows
        ]


def _bucket(project: str | None) -> str:
    return project or ""  # no project: the '' bucket (a project name is never empty)


# -- in the store's db thread -----------------------------------------------------------


def _create(conn: sqlite3.Connection, *, path: str) -> None:
    row = conn.execute("SELECT value FROM meta WHERE key = 'work_schema'").fetchone()
    if row is not None and int(row[0]) > WORK_TABLES_VERSION:
        raise WorkStoreError(
            f"the work tables in {path!r} have layout {row[0]}, newer than this triact "
            f"understands ({WORK_TABLES_VERSION}); upgrade triact"
        )
    for statement in _TABLES:
        conn.execute(statement)
    try:
        conn.execute(_FTS_TABLE.format(module=FTS_MODULE))
    except sqlite3.OperationalError as exc:
        if "no such module" not in str(exc):
            raise
        raise WorkStoreError(
            f"reflection search on a SqliteStore needs SQLite's FTS5, which this Python's "
            f"sqlite3 (SQLite {sqlite3.sqlite_version}) lacks ({exc}); use a Python whose "
            "SQLite has FTS5, or a MemoryStore"
        ) from None
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('work_schema', ?) ON CONFLICT (key) DO NOTHING",
        (str(WORK_TABLES_VERSION),),
    )


def _session_for(conn: sqlite3.Connection, *, directory: str) -> str | None:
    query = "SELECT session_id FROM work_directories WHERE directory = ?"
    row = conn.execute(query, (directory,)).fetchone()
    return None if row is None else str(row[0])


def _remember(conn: sqlite3.Connection, *, directory: str, session_id: str, now: float) -> None:
    conn.execute(
        "INSERT INTO work_directories (directory, session_id, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (directory) DO UPDATE SET session_id = excluded.session_id, "
        "updated_at = excluded.updated_at",
        (directory, session_id, now),
    )


def _handoff(conn: sqlite3.Connection, *, directory: str) -> Any:
    row = conn.execute("SELECT record FROM work_handoffs WHERE directory = ?", (directory,))
    found = row.fetchone()
    return None if found is None else found[0]


def _finish(
    conn: sqlite3.Connection, *, directory: str, session_id: str, ended_at: float, record: str
) -> None:
    conn.execute(
        "INSERT INTO work_handoffs (directory, session_id, ended_at, record) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (directory) DO UPDATE SET session_id = excluded.session_id, "
        "ended_at = excluded.ended_at, record = excluded.record",
        (directory, session_id, ended_at, record),
    )
    conn.execute(
        "DELETE FROM work_directories WHERE directory = ? AND session_id = ?",
        (directory, session_id),
    )


def _add(
    conn: sqlite3.Connection,
    *,
    content: str,
    tags: tuple[str, ...],
    project: str | None,
    now: float,
    keep: int,
) -> tuple[int, int, int]:
    bucket = _bucket(project)
    cursor = conn.execute(
        "INSERT INTO work_reflections (project, content, tags, created_at) VALUES (?, ?, ?, ?)",
        (bucket, content, json.dumps(list(tags), ensure_ascii=False), now),
    )
    new_id = cursor.lastrowid
    assert new_id is not None
    conn.execute(
        "INSERT INTO work_reflections_fts (rowid, content, tags) VALUES (?, ?, ?)",
        (new_id, content, " ".join(tags)),
    )
    old = [
        row[0]
        for row in conn.execute(
            "SELECT id FROM work_reflections WHERE project = ? ORDER BY id DESC LIMIT -1 OFFSET ?",
            (bucket, keep),
        )
    ]
    for chunk in range(0, len(old), 500):
        ids = old[chunk : chunk + 500]
        marks = ",".join("?" * len(ids))
        conn.execute(f"DELETE FROM work_reflections WHERE id IN ({marks})", ids)
        conn.execute(f"DELETE FROM work_reflections_fts WHERE rowid IN ({marks})", ids)
    (kept,) = conn.execute(
        "SELECT COUNT(*) FROM work_reflections WHERE project = ?", (bucket,)
    ).fetchone()
    return new_id, kept, len(old)


def _search(
    conn: sqlite3.Connection,
    *,
    match: str,
    project: str | None,
    tags: tuple[str, ...],
    limit: int,
) -> list[tuple[Any, ...]]:
    where = ["work_reflections_fts MATCH ?"]
    params: list[Any] = [match]
    if project is not None:
        where.append("r.project = ?")
        params.append(project)
    for tag in tags:
        where.append("EXISTS (SELECT 1 FROM json_each(r.tags) WHERE json_each.value = ?)")
        params.append(tag)
    params.append(limit)
    query = (
        "SELECT r.id, r.project, r.content, r.tags, r.created_at, "
        "bm25(work_reflections_fts) AS rank "
        "FROM work_reflections_fts JOIN work_reflections AS r "
        "ON r.id = work_reflections_fts.rowid "
        f"WHERE {' AND '.join(where)} "
        "ORDER BY rank, r.created_at DESC, r.id DESC LIMIT ?"
    )
    return conn.execute(query, params).fetchall()
