"""The work layer's keys in a :class:`~triact.RedisStore`'s Redis, beside its sessions
and under the same prefix, reached through the store's own connection
(:meth:`RedisStore.run`): what several ``triact serve`` processes on one Redis share,
and what a restart finds again.

Every change is one call of a function of :mod:`._redis_lua`'s library, which Redis
runs atomically. Text search ranks by bm25 as SQLite's FTS5 does: the notes are
split into tokens by SQLite's own FTS5 tokenizer (``porter unicode61
remove_diacritics 2``, run on an in-memory table in a worker thread), kept in an
inverted index per principal and project, and scored by a function on the server
with FTS5's formula and statistics (see :class:`RedisWorkStore`)."""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from ._backend import WorkStore
from ._errors import WorkStoreError
from ._records import Handoff, NoteKind, NoteScope, Reflection, decode_handoff, encode_handoff
from ._redis_lua import SOURCE, function

if TYPE_CHECKING:
    from glide import GlideClient

    from ..sessions import RedisStore

#: The full-text module the tokenizer needs (a name, so that tests can pretend it is
#: missing).
FTS_MODULE = "fts5"
#: The letter of each kind of note in its keys.
_KINDS: dict[NoteKind, str] = {"reflection": "r", "conversation": "c"}
#: Vectors read per call (a call holds Redis for the time it takes).
VECTOR_CHUNK = 1000
#: Query terms whose tokens are remembered (a query's terms are tokenized once).
_QUERY_CACHE = 4096


class Tokenizer:
    """SQLite FTS5's tokenizer, as the SQLite work store's index uses it, on an
    in-memory database of its own: what a note's text and a query's terms become.
    Thread-safe (one call at a time); meant for a worker thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._queries: dict[str, tuple[str, ...]] = {}

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            try:
                conn.execute(
                    f"CREATE VIRTUAL TABLE t USING {FTS_MODULE}(content, tags, "
                    "tokenize = 'porter unicode61 remove_diacritics 2')"
                )
            except sqlite3.OperationalError as exc:
                conn.close()
                if "no such module" not in str(exc):
                    raise
                raise WorkStoreError(
                    "reflection search on a RedisStore tokenizes as SQLite's FTS5 does, "
                    f"which this Python's sqlite3 (SQLite {sqlite3.sqlite_version}) lacks "
                    f"({exc}); use a Python whose SQLite has FTS5"
                ) from None
            conn.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'row')")
            conn.execute("CREATE VIRTUAL TABLE i USING fts5vocab(t, 'instance')")
            self._conn = conn
        return self._conn

    def check(self) -> None:
        """WorkStoreError if this Python's SQLite has no FTS5."""
        with self._lock:
            self._connection()

    def note(self, content: str, tags: Sequence[str]) -> tuple[dict[str, int], int]:
        """The tokens of a note (its content and tags, as FTS5 indexes them) with their
        counts, and how many there are in all."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                conn.execute(
                    "INSERT INTO t (rowid, content, tags) VALUES (1, ?, ?)",
                    (content, " ".join(tags)),
                )
                counts = {str(term): int(n) for term, n in conn.execute("SELECT term, cnt FROM v")}
            finally:
                conn.execute("ROLLBACK")
        return counts, sum(counts.values())

    def query(self, terms: Sequence[str]) -> list[str]:
        """The tokens of a query's terms, in order: a term FTS5 splits in several
        tokens gives each (where FTS5 would match them as a phrase)."""
        with self._lock:
            todo = [term for term in dict.fromkeys(terms) if term not in self._queries]
            if todo:
                conn = self._connection()
                conn.execute("BEGIN")
                try:
                    conn.executemany(
                        "INSERT INTO t (rowid, content, tags) VALUES (?, ?, '')",
                        [(n, term) for n, term in enumerate(todo, 1)],
                    )
                    found: dict[int, list[str]] = {}
                    for doc, term in conn.execute("SELECT doc, term FROM i ORDER BY doc, offset"):
                        found.setdefault(int(doc), []).append(str(term))
                finally:
                    conn.execute("ROLLBACK")
                if len(self._queries) + len(todo) > _QUERY_CACHE:
                    self._queries.clear()
                for n, term in enumerate(todo, 1):
                    self._queries[term] = tuple(found.get(n, ()))
            return [token for term in terms for token in self._queries[term]]


class RedisWorkStore(WorkStore):
    """The work layer's records in Redis, beside a :class:`~triact.RedisStore`'s
    sessions, under its key prefix (``<prefix>work:``): shared by every process that
    opens the same Redis with the same prefix, and kept across restarts as long as
    Redis keeps its data (persistence is Redis's own configuration).

    Same semantics as the SQLite work store: everything per principal; notes per
    project, bounded (a note and the eviction of its project's oldest beyond the bound
    are one atomic function call, as is a handoff and the forgetting of its
    directory's session); ids given per kind, only growing. Search by words is bm25
    with FTS5's formula (k1 1.2, b 0.75), tokens (SQLite's own FTS5 tokenizer) and
    statistics (the notes of the kind, whoever's, as FTS5 keeps them over its table),
    computed by a function on the server over the inverted index of the principal's
    project (or projects), best first, newest first among equal scores: the same
    scores as the SQLite store for the same notes, to rounding. One difference: a
    query word that FTS5 splits in several tokens matches as those tokens anywhere
    in the note, not as a phrase. Vectors are kept in the notes' hashes (float32
    bytes), so that another process or a restart finds them without embedding again.

    WorkStoreError if this Python's SQLite has no FTS5 (for the tokenizer);
    SessionStoreError for Redis's failures.
    """

    search_method = "redis-bm25"
    keeps_vectors = True

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self._prefix = store.prefix
        self._tokenizer = Tokenizer()
        self._prepared = False

    def __repr__(self) -> str:
        return f"RedisWorkStore({self.store!r})"

    async def prepare(self) -> None:
        if not self._prepared:
            await trio.to_thread.run_sync(self._tokenizer.check)
            await self.store.run(
                "load the work layer's functions",
                lambda client: client.function_load(SOURCE, replace=True),
            )
            self._prepared = True

    async def _fcall(
        self, name: str, what: str, args: Sequence[str | bytes], *, read_only: bool = False
    ) -> Any:
        await self.prepare()
        called = function(name)
        arguments = list(args)

        async def call(client: GlideClient) -> Any:
            if read_only:
                return await client.fcall_ro(called, keys=[], arguments=arguments)
            return await client.fcall(called, keys=[], arguments=arguments)

        return await self.store.run(what, call, library=SOURCE)

    def _owner_key(self, table: str, principal: str | None) -> str:
        owner = _owner(principal)
        return f"{self._prefix}work:{table}:{len(owner.encode())}:{owner}"

    # -- directories and handoffs --------------------------------------------------

    async def session_for(self, directory: str, *, principal: str | None = None) -> str | None:
        await self.prepare()
        key = self._owner_key("d", principal)
        field = _path(directory)
        found = await self.store.run(
            "read a directory's session", lambda client: client.hget(key, field)
        )
        if found is None:
            return None
        try:
            return _text(found, "a directory's session id")
        except ValueError as exc:
            raise WorkStoreError(
                f"the session of {directory!r} in the Redis store at {self.store.url} is "
                f"malformed ({exc}); its key {key} was written by something else"
            ) from None

    async def remember(
        self, directory: str, session_id: str, now: float, *, principal: str | None = None
    ) -> None:
        await self.prepare()
        key = self._owner_key("d", principal)
        field = _path(directory)
        await self.store.run(
            "record a directory's session", lambda client: client.hset(key, {field: session_id})
        )

    async def claim(
        self,
        directory: str,
        session_id: str,
        now: float,
        *,
        expected: str | None,
        principal: str | None = None,
    ) -> str | None:
        args: list[str | bytes] = [
            self._prefix,
            _owner(principal),
            _path(directory),
            session_id,
            expected or "",
        ]
        held = await self._fcall("claim", "record a directory's session", args)
        if held is None:
            return None
        try:
            return _text(held, "a directory's session id")
        except ValueError as exc:
            raise WorkStoreError(
                f"the session of {directory!r} in the Redis store at {self.store.url} is "
                f"malformed ({exc}); its key {self._owner_key('d', principal)} was written "
                "by something else"
            ) from None

    async def handoff(self, directory: str, *, principal: str | None = None) -> Handoff | None:
        await self.prepare()
        key = self._owner_key("h", principal)
        field = _path(directory)
        found = await self.store.run("read a handoff", lambda client: client.hget(key, field))
        if found is None:
            return None
        # Said to the client (a WorkDataError): the store's file or URL is not its.
        where = f"the handoff of {directory!r} in the store"
        try:
            raw = json.loads(found)
        except ValueError:
            raw = None
        return decode_handoff(raw, where=where)

    async def finish(
        self, directory: str, session_id: str, handoff: Handoff, *, principal: str | None = None
    ) -> None:
        # ASCII JSON: whatever the directory's name holds, it reads back.
        record = json.dumps(encode_handoff(handoff), allow_nan=False)
        args: list[str | bytes] = [
            self._prefix,
            _owner(principal),
            _path(directory),
            session_id,
            record,
        ]
        await self._fcall("finish", "keep a handoff", args)

    # -- notes ---------------------------------------------------------------------

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
        counts, length = await trio.to_thread.run_sync(self._tokenizer.note, content, tags)
        args: list[str] = [
            self._prefix,
            _KINDS[kind],
            _owner(principal),
            _bucket(project),
            content,
            json.dumps(list(tags), ensure_ascii=False),
            repr(float(now)),
            str(keep),
            str(length),
            json.dumps(list(counts), ensure_ascii=False),
            str(len(counts)),
        ]
        for token, count in counts.items():
            args += [token, str(count)]
        args += [str(len(tags)), *tags]
        reply = await self._fcall("add", f"keep a {kind}", args)
        new_id, kept, dropped = (int(part) for part in reply)
        return Reflection(new_id, content, tags, project, float(now)), kept, dropped

    def _scope(self, scope: NoteScope) -> list[str]:
        """The functions' arguments that pick the notes in ``scope`` (its tags last, after
        what each function puts between)."""
        return [
            self._prefix,
            _KINDS[scope.kind],
            _owner(scope.principal),
            "1" if scope.all_projects else "0",
            _bucket(scope.project),
        ]

    async def search_notes(
        self, scope: NoteScope, terms: Sequence[str], limit: int
    ) -> list[tuple[Reflection, float]]:
        await self.prepare()
        tokens = await trio.to_thread.run_sync(self._tokenizer.query, terms)
        if not tokens:
            return []
        args = [*self._scope(scope), str(limit), *_tags(scope), *tokens]
        rows = await self._fcall("search", f"search the {scope.kind}s", args, read_only=True)
        return [(self._note(scope.kind, row), float(_text(row[5], "a score"))) for row in rows]

    def _note(self, kind: NoteKind, row: Sequence[Any]) -> Reflection:
        """A note read back, checked: WorkStoreError if its hash holds something this
        store did not write."""
        note_id = int(row[0])
        try:
            project = _text(row[1], "project")
            content = _text(row[2], "content")
            tags = json.loads(_text(row[3], "tags"))
            created_at = float(_text(row[4], "created_at"))
            if not (isinstance(tags, list) and all(isinstance(tag, str) for tag in tags)):
                raise ValueError("tags are not a list of strings")
            if not math.isfinite(created_at):
                raise ValueError("created_at is not finite")
        except ValueError as exc:
            raise WorkStoreError(
                f"{kind} {note_id} in the Redis store at {self.store.url} is malformed "
                f"({exc}); its key {self._prefix}work:{_KINDS[kind]}:n:{note_id} was "
                "written by something else"
            ) from None
        return Reflection(note_id, content, tuple(tags), project or None, created_at)

    async def vectors(
        self, scope: NoteScope, model: str, *, after: int = 0
    ) -> list[tuple[int, float, bytes]]:
        found: list[tuple[int, float, bytes]] = []
        cursor = after
        while True:
            args = [*self._scope(scope), model, str(cursor), str(VECTOR_CHUNK), *_tags(scope)]
            more, cursor, rows = await self._fcall("vectors", "read vectors", args, read_only=True)
            for note_id, created_at, vector in rows:
                found.append((int(note_id), float(_text(created_at, "created_at")), vector))
            if not int(more):
                return found
            cursor = int(cursor)

    async def vector_signature(self, scope: NoteScope, model: str) -> tuple[int, int, int]:
        args = [*self._scope(scope), model, *_tags(scope)]
        count, low, high = await self._fcall("signature", "count vectors", args, read_only=True)
        return int(count), int(low), int(high)

    async def notes(
        self, kind: NoteKind, ids: Sequence[int], *, principal: str | None = None
    ) -> list[Reflection]:
        if not ids:
            await trio.lowlevel.checkpoint()
            return []
        args = [self._prefix, _KINDS[kind], _owner(principal), *(str(i) for i in ids)]
        rows = await self._fcall("notes", f"read {kind}s", args, read_only=True)
        return [self._note(kind, row) for row in rows]

    async def missing_vectors(
        self, kind: NoteKind, model: str, limit: int
    ) -> list[tuple[int, str]]:
        args = [self._prefix, _KINDS[kind], model, str(limit)]
        rows = await self._fcall("missing", "find notes without vectors", args, read_only=True)
        return [(int(note_id), _text(content, "content")) for note_id, content in rows]

    async def put_vectors(
        self, kind: NoteKind, model: str, rows: Sequence[tuple[int, bytes]]
    ) -> None:
        if not rows:
            await trio.lowlevel.checkpoint()
            return
        args: list[str | bytes] = [self._prefix, _KINDS[kind], model]
        for note_id, vector in rows:
            if not isinstance(vector, bytes) or not vector or len(vector) % 4:
                raise WorkStoreError(
                    f"the vector of {kind} {note_id} is not float32 bytes "
                    f"({type(vector).__name__} of {len(vector)} bytes)"
                )
            args += [str(int(note_id)), vector]
        await self._fcall("put_vectors", "keep vectors", args)


def _owner(principal: str | None) -> str:
    return principal or ""  # no principal: '' (a principal's name is never empty)


def _tags(scope: NoteScope) -> list[str]:
    """A scope's tags as the functions take them: their count, then each."""
    return [str(len(scope.tags)), *scope.tags]


def _bucket(project: str | None) -> str:
    return project or ""  # no project: the '' bucket (a project name is never empty)


def _path(directory: str) -> bytes:
    """A directory as a hash field (never read back as text): its UTF-8, surrogates
    (the file system's undecodable bytes) included."""
    return directory.encode("utf-8", "surrogatepass")


def _text(raw: Any, what: str) -> str:
    if isinstance(raw, bytes):
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise ValueError(f"{what} is not UTF-8") from None
    if raw is None:
        raise ValueError(f"{what} is missing")
    return str(raw)
