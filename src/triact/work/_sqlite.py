"""The work layer's tables in a :class:`~triact.SqliteStore`'s file, reached through
the store's single connection (:meth:`SqliteStore.run`). Reflections and conversation
excerpts are searched with SQLite's FTS5, ranked by bm25, newest first among equal
ranks; their embedding vectors, where search by meaning is on, are kept beside them in
``work_vectors``.

Every row belongs to a principal (column ``principal``; ``''`` for none, a principal's
name never being empty), and is read only for it. Layout 1 had no such column: its
rows, all written without a principal, are moved to ``''`` by :func:`_migrate`."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from functools import partial
from typing import Any

from ..sessions import SqliteStore
from ._backend import WorkStore
from ._errors import WorkStoreError
from ._records import Handoff, NoteKind, NoteScope, Reflection, decode_handoff, encode_handoff

#: Version of the work tables' layout, kept in the store's ``meta`` table.
WORK_TABLES_VERSION = 2
#: The full-text module (a name, so that tests can pretend it is missing).
FTS_MODULE = "fts5"

_DIRECTORIES = (
    "CREATE TABLE IF NOT EXISTS work_directories (principal TEXT NOT NULL, "
    "directory TEXT NOT NULL, session_id TEXT NOT NULL, updated_at REAL NOT NULL, "
    "PRIMARY KEY (principal, directory))"
)
_HANDOFFS = (
    "CREATE TABLE IF NOT EXISTS work_handoffs (principal TEXT NOT NULL, "
    "directory TEXT NOT NULL, session_id TEXT NOT NULL, ended_at REAL NOT NULL, "
    "record TEXT NOT NULL, PRIMARY KEY (principal, directory))"
)
_TABLES = (
    _DIRECTORIES,
    _HANDOFFS,
    "CREATE TABLE IF NOT EXISTS work_reflections (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "project TEXT NOT NULL, content TEXT NOT NULL, tags TEXT NOT NULL, "
    "created_at REAL NOT NULL, principal TEXT NOT NULL DEFAULT '')",
    "CREATE INDEX IF NOT EXISTS work_reflections_by_owner "
    "ON work_reflections (principal, project, id)",
    "CREATE TABLE IF NOT EXISTS work_conversations (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "project TEXT NOT NULL, content TEXT NOT NULL, tags TEXT NOT NULL, "
    "created_at REAL NOT NULL, principal TEXT NOT NULL DEFAULT '')",
    "CREATE INDEX IF NOT EXISTS work_conversations_by_owner "
    "ON work_conversations (principal, project, id)",
    # One vector per note (the model that made it named): float32, unit length.
    # (A rowid table: a vector's 1,536 bytes fit in its page there, not in an index's.)
    "CREATE TABLE IF NOT EXISTS work_vectors (kind TEXT NOT NULL, id INTEGER NOT NULL, "
    "model TEXT NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (kind, id))",
    # Covers the checks of which vectors there are, without reading them.
    "CREATE INDEX IF NOT EXISTS work_vectors_by_model ON work_vectors (kind, id, model)",
)
#: The table of each kind of note; its FTS5 index is the same name + "_fts".
TABLES: dict[NoteKind, str] = {
    "reflection": "work_reflections",
    "conversation": "work_conversations",
}
# Its rowid is the note's id; kept in step by hand in the same transactions.
_FTS_TABLE = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS {table}_fts USING {module}"
    "(content, tags, tokenize = 'porter unicode61 remove_diacritics 2')"
)


def _created(statement: str) -> str:
    """The name of what a ``CREATE ... IF NOT EXISTS <name> ...`` statement makes."""
    return statement.split(" IF NOT EXISTS ", 1)[1].split(" ", 1)[0]


#: Every table and index :func:`_create` makes, by name.
_NAMES = tuple(_created(statement) for statement in _TABLES) + tuple(
    _created(_FTS_TABLE.format(table=table, module=FTS_MODULE)) for table in TABLES.values()
)


class SqliteWorkStore(WorkStore):
    """Tables ``work_directories``, ``work_handoffs``, ``work_reflections`` and
    ``work_conversations`` with their FTS5 indexes (``..._fts``), and ``work_vectors``,
    in the store's file, created on first use (and those of layout 1 brought to
    layout 2, their rows becoming those of no principal).

    WorkStoreError if this Python's SQLite has no FTS5, or if a newer triact laid the
    tables out.
    """

    search_method = "fts5-bm25"
    keeps_vectors = True

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self._prepared = False

    async def prepare(self) -> None:
        if not self._prepared:
            # The tables are usually there already, laid out by an earlier process: a
            # read says so without the write lock, which another process on the file
            # may hold for long (one paused inside its transaction). Only a file
            # without them, or with an older layout, waits for the lock.
            path = self.store.path
            if not await self.store.run(partial(_laid_out, path=path), write=False):
                await self.store.run(partial(_create, path=path), write=True)
            self._prepared = True

    async def session_for(self, directory: str, *, principal: str | None = None) -> str | None:
        await self.prepare()
        step = partial(_session_for, directory=directory, owner=_owner(principal))
        return await self.store.run(step, write=False)

    async def remember(
        self, directory: str, session_id: str, now: float, *, principal: str | None = None
    ) -> None:
        await self.prepare()
        step = partial(
            _remember,
            directory=directory,
            owner=_owner(principal),
            session_id=session_id,
            now=now,
        )
        await self.store.run(step, write=True)

    async def claim(
        self,
        directory: str,
        session_id: str,
        now: float,
        *,
        expected: str | None,
        principal: str | None = None,
    ) -> str | None:
        await self.prepare()
        step = partial(
            _claim,
            directory=directory,
            owner=_owner(principal),
            session_id=session_id,
            expected=expected,
            now=now,
        )
        return await self.store.run(step, write=True)

    async def handoff(self, directory: str, *, principal: str | None = None) -> Handoff | None:
        await self.prepare()
        step = partial(_handoff, directory=directory, owner=_owner(principal))
        text = await self.store.run(step, write=False)
        if text is None:
            return None
        # Said to the client (a WorkDataError): the store's file or URL is not its.
        where = f"the handoff of {directory!r} in the store"
        try:
            raw = json.loads(text)
        except ValueError:
            raw = None
        return decode_handoff(raw, where=where)

    async def finish(
        self, directory: str, session_id: str, handoff: Handoff, *, principal: str | None = None
    ) -> None:
        await self.prepare()
        record = json.dumps(encode_handoff(handoff), ensure_ascii=False, allow_nan=False)
        step = partial(
            _finish,
            directory=directory,
            owner=_owner(principal),
            session_id=session_id,
            ended_at=handoff.ended_at,
            record=record,
        )
        await self.store.run(step, write=True)

    async def add_note(
        self,
        kind: NoteKind,
        content: str,
        tags: tuple[str, ...],
        project: str | None,
        now: float,
        keep: int,
        *,
        principal: str | None = None,
    ) -> tuple[Reflection, int, int]:
        await self.prepare()
        step = partial(
            _add,
            table=TABLES[kind],
            owner=_owner(principal),
            content=content,
            tags=tags,
            project=project,
            now=now,
            keep=keep,
        )
        new_id, kept, dropped = await self.store.run(step, write=True)
        return Reflection(new_id, content, tags, project, now), kept, dropped

    async def search_notes(
        self, scope: NoteScope, terms: Sequence[str], limit: int
    ) -> list[tuple[Reflection, float]]:
        await self.prepare()
        step = partial(
            _search,
            **_scoped(scope),
            match=" OR ".join(f'"{term}"' for term in terms),  # words only: no FTS syntax
            limit=limit,
        )
        rows = await self.store.run(step, write=False)
        return [(_note(row), -row[5]) for row in rows]

    async def vectors(
        self, scope: NoteScope, model: str, *, after: int = 0
    ) -> list[tuple[int, float, bytes]]:
        await self.prepare()
        step = partial(_vectors, **_scoped(scope), kind=scope.kind, model=model, after=after)
        return await self.store.run(step, write=False)

    async def vector_signature(self, scope: NoteScope, model: str) -> tuple[int, int, int]:
        await self.prepare()
        step = partial(_signature, **_scoped(scope), kind=scope.kind, model=model)
        return await self.store.run(step, write=False)

    async def notes(
        self, kind: NoteKind, ids: Sequence[int], *, principal: str | None = None
    ) -> list[Reflection]:
        await self.prepare()
        step = partial(_notes, table=TABLES[kind], ids=ids, owner=_owner(principal))
        rows = await self.store.run(step, write=False)
        return [_note(row) for row in rows]

    async def missing_vectors(
        self, kind: NoteKind, model: str, limit: int
    ) -> list[tuple[int, str]]:
        await self.prepare()
        step = partial(_missing, table=TABLES[kind], kind=kind, model=model, limit=limit)
        return await self.store.run(step, write=False)

    async def put_vectors(
        self, kind: NoteKind, model: str, rows: Sequence[tuple[int, bytes]]
    ) -> None:
        await self.prepare()
        step = partial(_put_vectors, table=TABLES[kind], kind=kind, model=model, rows=rows)
        await self.store.run(step, write=True)


def _note(row: Sequence[Any]) -> Reflection:
    return Reflection(row[0], row[2], tuple(json.loads(row[3])), row[1] or None, row[4])


def _scoped(scope: NoteScope) -> dict[str, Any]:
    """The arguments of the statements below that pick the notes in ``scope``."""
    return {
        "table": TABLES[scope.kind],
        "owner": _owner(scope.principal),
        "project": None if scope.all_projects else _bucket(scope.project),
        "tags": scope.tags,
    }


def _bucket(project: str | None) -> str:
    return project or ""  # no project: the '' bucket (a project name is never empty)


def _owner(principal: str | None) -> str:
    return principal or ""  # no principal: '' (a principal's name is never empty)


# -- in the store's db thread -----------------------------------------------------------


def _layout(conn: sqlite3.Connection, *, path: str) -> int | None:
    """The work tables' layout version (None: never laid out); WorkStoreError if a
    newer triact laid them out."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'work_schema'").fetchone()
    if row is None:
        return None
    if int(row[0]) > WORK_TABLES_VERSION:
        raise WorkStoreError(
            f"the work tables in {path!r} have layout {row[0]}, newer than this triact "
            f"understands ({WORK_TABLES_VERSION}); upgrade triact"
        )
    return int(row[0])


def _laid_out(conn: sqlite3.Connection, *, path: str) -> bool:
    """Whether every work table and index is there in this triact's layout (a read)."""
    if _layout(conn, path=path) != WORK_TABLES_VERSION:
        return False
    query = f"SELECT count(*) FROM sqlite_master WHERE name IN ({', '.join('?' * len(_NAMES))})"
    (found,) = conn.execute(query, _NAMES).fetchone()
    return bool(found == len(_NAMES))


def _create(conn: sqlite3.Connection, *, path: str) -> None:
    layout = _layout(conn, path=path)
    if layout is not None and layout < WORK_TABLES_VERSION:
        _migrate(conn)
    for statement in _TABLES:
        conn.execute(statement)
    try:
        for table in TABLES.values():
            conn.execute(_FTS_TABLE.format(table=table, module=FTS_MODULE))
    except sqlite3.OperationalError as exc:
        if "no such module" not in str(exc):
            raise
        raise WorkStoreError(
            f"reflection search on a SqliteStore needs SQLite's FTS5, which this Python's "
            f"sqlite3 (SQLite {sqlite3.sqlite_version}) lacks ({exc}); use a Python whose "
            "SQLite has FTS5, or a MemoryStore"
        ) from None
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('work_schema', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(WORK_TABLES_VERSION),),
    )


def _migrate(conn: sqlite3.Connection) -> None:
    """Layout 1 to 2, in the savepoint of :func:`_create`: every row gets the principal
    ``''`` (none: layout 1 kept no principal, and only callers without one wrote), and
    the directory index and the handoffs are keyed by principal and directory."""
    for table in TABLES.values():
        conn.execute(f"ALTER TABLE {table} ADD COLUMN principal TEXT NOT NULL DEFAULT ''")
        conn.execute(f"DROP INDEX IF EXISTS {table}_by_project")
    for table, create, columns in (
        ("work_directories", _DIRECTORIES, "directory, session_id, updated_at"),
        ("work_handoffs", _HANDOFFS, "directory, session_id, ended_at, record"),
    ):
        conn.execute(f"ALTER TABLE {table} RENAME TO {table}_v1")
        conn.execute(create)
        conn.execute(
            f"INSERT INTO {table} (principal, {columns}) SELECT '', {columns} FROM {table}_v1"
        )
        conn.execute(f"DROP TABLE {table}_v1")


def _session_for(conn: sqlite3.Connection, *, directory: str, owner: str) -> str | None:
    query = "SELECT session_id FROM work_directories WHERE principal = ? AND directory = ?"
    row = conn.execute(query, (owner, directory)).fetchone()
    return None if row is None else str(row[0])


def _remember(
    conn: sqlite3.Connection, *, directory: str, owner: str, session_id: str, now: float
) -> None:
    conn.execute(
        "INSERT INTO work_directories (principal, directory, session_id, updated_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (principal, directory) DO UPDATE SET "
        "session_id = excluded.session_id, updated_at = excluded.updated_at",
        (owner, directory, session_id, now),
    )


def _claim(
    conn: sqlite3.Connection,
    *,
    directory: str,
    owner: str,
    session_id: str,
    expected: str | None,
    now: float,
) -> str | None:
    """In the write transaction (BEGIN IMMEDIATE: no other process writes between the
    read and the write)."""
    held = _session_for(conn, directory=directory, owner=owner)
    if held is not None and held != expected:
        return held
    _remember(conn, directory=directory, owner=owner, session_id=session_id, now=now)
    return None


def _handoff(conn: sqlite3.Connection, *, directory: str, owner: str) -> Any:
    query = "SELECT record FROM work_handoffs WHERE principal = ? AND directory = ?"
    row = conn.execute(query, (owner, directory))
    found = row.fetchone()
    return None if found is None else found[0]


def _finish(
    conn: sqlite3.Connection,
    *,
    directory: str,
    owner: str,
    session_id: str,
    ended_at: float,
    record: str,
) -> None:
    conn.execute(
        "INSERT INTO work_handoffs (principal, directory, session_id, ended_at, record) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (principal, directory) DO UPDATE SET "
        "session_id = excluded.session_id, ended_at = excluded.ended_at, "
        "record = excluded.record",
        (owner, directory, session_id, ended_at, record),
    )
    conn.execute(
        "DELETE FROM work_directories WHERE principal = ? AND directory = ? AND session_id = ?",
        (owner, directory, session_id),
    )


def _add(
    conn: sqlite3.Connection,
    *,
    table: str,
    owner: str,
    content: str,
    tags: tuple[str, ...],
    project: str | None,
    now: float,
    keep: int,
) -> tuple[int, int, int]:
    bucket = _bucket(project)
    cursor = conn.execute(
        f"INSERT INTO {table} (principal, project, content, tags, created_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (owner, bucket, content, json.dumps(list(tags), ensure_ascii=False), now),
    )
    new_id = cursor.lastrowid
    assert new_id is not None
    conn.execute(
        f"INSERT INTO {table}_fts (rowid, content, tags) VALUES (?, ?, ?)",
        (new_id, content, " ".join(tags)),
    )
    old = [
        row[0]
        for row in conn.execute(
            f"SELECT id FROM {table} WHERE principal = ? AND project = ? "
            "ORDER BY id DESC LIMIT -1 OFFSET ?",
            (owner, bucket, keep),
        )
    ]
    kind = _kind_of(table)
    for chunk in range(0, len(old), 500):
        ids = old[chunk : chunk + 500]
        marks = ",".join("?" * len(ids))
        conn.execute(f"DELETE FROM {table} WHERE id IN ({marks})", ids)
        conn.execute(f"DELETE FROM {table}_fts WHERE rowid IN ({marks})", ids)
        conn.execute(f"DELETE FROM work_vectors WHERE kind = ? AND id IN ({marks})", [kind, *ids])
    (kept,) = conn.execute(
        f"SELECT COUNT(*) FROM {table} WHERE principal = ? AND project = ?", (owner, bucket)
    ).fetchone()
    return new_id, kept, len(old)


def _kind_of(table: str) -> NoteKind:
    return next(kind for kind, name in TABLES.items() if name == table)


def _filters(
    owner: str, project: str | None, tags: tuple[str, ...], params: list[Any], where: list[str]
) -> None:
    where.append("r.principal = ?")
    params.append(owner)
    if project is not None:
        where.append("r.project = ?")
        params.append(project)
    for tag in tags:
        where.append("EXISTS (SELECT 1 FROM json_each(r.tags) WHERE json_each.value = ?)")
        params.append(tag)


def _search(
    conn: sqlite3.Connection,
    *,
    table: str,
    owner: str,
    match: str,
    project: str | None,
    tags: tuple[str, ...],
    limit: int,
) -> list[tuple[Any, ...]]:
    where = [f"{table}_fts MATCH ?"]
    params: list[Any] = [match]
    _filters(owner, project, tags, params, where)
    params.append(limit)
    query = (
        "SELECT r.id, r.project, r.content, r.tags, r.created_at, "
        f"bm25({table}_fts) AS rank "
        f"FROM {table}_fts JOIN {table} AS r "
        f"ON r.id = {table}_fts.rowid "
        f"WHERE {' AND '.join(where)} "
        "ORDER BY rank, r.created_at DESC, r.id DESC LIMIT ?"
    )
    return conn.execute(query, params).fetchall()


def _vectors(
    conn: sqlite3.Connection,
    *,
    table: str,
    owner: str,
    kind: NoteKind,
    model: str,
    project: str | None,
    tags: tuple[str, ...],
    after: int,
) -> list[tuple[int, float, bytes]]:
    where = ["r.id > ?"]
    params: list[Any] = [kind, model, after]
    _filters(owner, project, tags, params, where)
    query = (
        f"SELECT r.id, r.created_at, v.vector FROM {table} AS r JOIN work_vectors AS v "
        "ON v.kind = ? AND v.id = r.id AND v.model = ? "
        f"WHERE {' AND '.join(where)} ORDER BY r.id"
    )
    return conn.execute(query, params).fetchall()


def _signature(
    conn: sqlite3.Connection,
    *,
    table: str,
    owner: str,
    kind: NoteKind,
    model: str,
    project: str | None,
    tags: tuple[str, ...],
) -> tuple[int, int, int]:
    where = ["1"]
    params: list[Any] = [kind, model]
    _filters(owner, project, tags, params, where)
    query = (
        f"SELECT COUNT(*), MIN(r.id), MAX(r.id) FROM {table} AS r "
        "JOIN work_vectors AS v INDEXED BY work_vectors_by_model "
        "ON v.kind = ? AND v.id = r.id AND v.model = ? "
        f"WHERE {' AND '.join(where)}"
    )
    count, low, high = conn.execute(query, params).fetchone()
    return count, low or 0, high or 0


def _notes(
    conn: sqlite3.Connection, *, table: str, ids: Sequence[int], owner: str
) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for chunk in range(0, len(ids), 500):
        part = list(ids[chunk : chunk + 500])
        marks = ",".join("?" * len(part))
        rows += conn.execute(
            f"SELECT id, project, content, tags, created_at FROM {table} "
            f"WHERE principal = ? AND id IN ({marks})",
            [owner, *part],
        ).fetchall()
    return rows


def _missing(
    conn: sqlite3.Connection, *, table: str, kind: NoteKind, model: str, limit: int
) -> list[tuple[int, str]]:
    query = (
        f"SELECT r.id, r.content FROM {table} AS r WHERE NOT EXISTS (SELECT 1 FROM "
        "work_vectors AS v WHERE v.kind = ? AND v.id = r.id AND v.model = ?) "
        "ORDER BY r.id DESC LIMIT ?"
    )
    return conn.execute(query, (kind, model, limit)).fetchall()


def _put_vectors(
    conn: sqlite3.Connection,
    *,
    table: str,
    kind: NoteKind,
    model: str,
    rows: Sequence[tuple[int, bytes]],
) -> None:
    # Only for notes still there (one may have been dropped while it was embedded).
    conn.executemany(
        "INSERT INTO work_vectors (kind, id, model, vector) "
        f"SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM {table} WHERE id = ?) "
        "ON CONFLICT (kind, id) DO UPDATE SET model = excluded.model, vector = excluded.vector",
        [(kind, note_id, model, vector, note_id) for note_id, vector in rows],
    )
