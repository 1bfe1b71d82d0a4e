"""Session states in a SQLite file: one row per session, group-committed off the event
loop by a single task that owns the connection."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Generic, Literal, TypeVar, cast

import trio

from . import _sqlite_file as sqlite_file
from . import _sqlite_shared as sql
from ._codec import decode_state, encode_state
from ._errors import SessionDataError, SessionError, SessionStoreError
from ._state import SessionState
from ._store import Activation, IndexEntry, SharedSessionStore, check_expected, check_record

#: Version of the file's layout (tables and columns), kept in its ``meta`` table.
#: Files from a newer layout are refused; files of layout 1 are migrated when
#: opened. Not the record schema of ``_codec``.
STORE_SCHEMA_VERSION = 2

_T = TypeVar("_T")
_Kind = Literal["read", "write", "delete", "discard", "query", "apply", "change", "note"]
_Row = tuple[str, int, float, float, str | None, str]

#: The most scheduler rounds a batch waits for more jobs (see SqliteStore._gather).
_GATHER_ROUNDS = 4

_NOT_DONE = {
    "write": "was not stored",
    "apply": "was not applied",
    "change": "was not changed",
    "note": "was not changed",
}


class _Job(Generic[_T]):
    """One request to the db task; ``run`` executes in its thread (changes inside the
    batch's transaction), and the outcome is left in ``value`` or ``error``."""

    __slots__ = (
        "error",
        "kind",
        "run",
        "session_id",
        "taken",
        "update",
        "value",
        "waiter",
        "withdrawn",
    )

    def __init__(
        self,
        kind: _Kind,
        session_id: str | None,
        run: Callable[[sqlite3.Connection], _T],
        update: tuple[Any, ...] | None = None,
    ) -> None:
        self.kind = kind
        self.session_id = session_id
        self.run = run
        self.update = update  # a write of a stored session: the parameters of _UPDATE
        self.waiter: trio.lowlevel.Task | None = None  # the caller, parked until done
        self.taken = False  # handed to the db task: it will run, whatever the caller does
        self.withdrawn = False  # its caller was cancelled before it was taken
        self.value: _T | None = None
        self.error: BaseException | None = None

    def finish(self) -> None:
        """Wake the caller (if one waits: nobody waits on a discard)."""
        if self.waiter is not None:
            trio.lowlevel.reschedule(self.waiter)
            self.waiter = None


class SqliteStore(SharedSessionStore):
    """Keeps each session as a row of a SQLite file (WAL mode), so states survive the
    process, and several processes on one machine can share them (a
    :class:`SharedSessionStore`: every commit is a compare-and-set in one SQLite
    transaction, which SQLite's write lock serialises across processes).

    SQLite has no clock of its own: leases and deadlines are wall-clock times given by
    the managers, and all processes on one machine share that clock. Correctness
    never depends on it. Records (:meth:`put_record`) use ``clock``.

    Every operation is carried out by one task that owns the connection: the jobs that
    callers queue while it is busy, or while other tasks are still queueing theirs,
    are run together in one worker-thread call, and the writes and deletes among them
    in one transaction (group commit across sessions).
    Each write is a compare-and-set on the stored version; a conflict fails only that
    write. A caller is answered once the transaction has committed; if it fails, every
    write and delete of that batch fails with :class:`SessionStoreError` and none of
    them is stored (its ``applied`` is False; None only if the ``COMMIT`` itself
    failed after SQLite had ended the transaction, an I/O error whose outcome a
    later reader may see either way).

    Cancellation: a call cancelled while its job is still queued is withdrawn and has
    no effect. Once the db task has taken the job it cannot be withdrawn, so the call
    waits for it and returns its result (the cancellation is delivered at the caller's
    next checkpoint), as :func:`trio.to_thread.run_sync` does. :meth:`write` is never
    withdrawn (:attr:`~SessionStore.writes_see_through`): it is always carried out.

    :attr:`transactions` counts committed transactions and :attr:`writes` the session
    writes they held; ``transactions < writes`` shows group commit at work.
    """

    immediate = False
    writes_see_through = True
    kind = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 5.0,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        clock: Callable[[], float] = time.time,
    ) -> None:
        fspath = os.fspath(path) if isinstance(path, str | os.PathLike) else None
        if not isinstance(fspath, str):
            raise TypeError(f"SqliteStore path must be a str or os.PathLike[str], not {path!r}")
        if not fspath:
            raise ValueError("SqliteStore path must not be empty")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError(f"SqliteStore timeout must be a number of seconds, not {timeout!r}")
        if not math.isfinite(timeout) or timeout < 0:
            raise ValueError(f"SqliteStore timeout must be finite and >= 0, not {timeout!r}")
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(
                f"SqliteStore synchronous must be 'FULL' or 'NORMAL', not {synchronous!r}"
            )
        self._path = fspath
        self._timeout = float(timeout)
        self._synchronous = synchronous
        self._clock = clock
        #: Transactions committed since this store was created.
        self.transactions = 0
        #: Session writes committed since this store was created.
        self.writes = 0
        self._phase: Literal["closed", "opening", "open", "closing"] = "closed"
        self._pending: list[_Job[Any]] = []
        self._wakeup = trio.Event()
        # Discards whose transaction failed; retried with the next batch and at close.
        self._unflushed: list[_Job[Any]] = []
        # The device and inode of the file while open: changes are refused once the
        # path names another file, or none (deleted or replaced while open).
        self._opened: sqlite_file.Identity | None = None

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    @property
    def timeout(self) -> float:
        """Seconds a transaction waits for another connection's lock (busy timeout)."""
        return self._timeout

    @property
    def synchronous(self) -> Literal["FULL", "NORMAL"]:
        """SQLite's ``synchronous`` setting: FULL survives power loss, NORMAL a crash."""
        return self._synchronous

    def __repr__(self) -> str:
        return f"SqliteStore({self._path!r})"

    # -- the interface ------------------------------------------------------------

    @asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        """Open the file (creating it if needed) for the block; on exit, carry out
        every queued job, discards included, then close it.

        A store opens once at a time. SessionStoreError if the file cannot be opened or
        is not a triact store; SessionDataError if a newer triact wrote it.
        """
        if self._phase != "closed":
            raise SessionStoreError(f"{self!r} is already open; a store opens once at a time")
        self._phase = "opening"
        try:
            conn = await trio.to_thread.run_sync(self._connect)
        except BaseException:
            self._phase = "closed"
            raise
        body_error: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._serve, conn)
                self._phase = "open"
                try:
                    yield
                except BaseException as exc:
                    # Re-raised below, after the nursery, so that it keeps its type.
                    body_error = exc
                finally:
                    self._phase = "closing"
                    self._wakeup.set()
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._close, conn)
            self._phase = "closed"
            self._wakeup = trio.Event()
        self._raise_unflushed(body_error)
        if body_error is not None:
            raise body_error

    async def load(self, session_id: str) -> SessionState | None:
        """The stored state, or None. SessionDataError if its row is not a valid record
        (the store keeps serving others)."""
        row = await self._call(_Job("read", session_id, partial(_select, session_id=session_id)))
        if row is None:
            return None
        return self._decode(session_id, *row)

    def _decode(self, session_id: str, text: Any, version: Any) -> SessionState:
        where = f"session {session_id!r} in {self._path}"
        if not isinstance(text, str | bytes):
            raise SessionDataError(f"{where} holds a {type(text).__name__}, not a JSON record")
        state = decode_state(text, where=where)
        if state.id != session_id or state.version != version:
            raise SessionDataError(
                f"{where} holds session {state.id!r} at version {state.version}, "
                f"but its row says version {version!r}"
            )
        return state

    async def write(
        self,
        state: SessionState,
        *,
        previous_version: int | None,
        epoch: int | None = None,
        expires_at: float | None = None,
    ) -> None:
        """Store ``state`` if the stored version is still ``previous_version`` (None:
        not stored yet) and, with ``epoch``, its epoch is that; else
        SessionConcurrencyError (SessionFencedError for the epoch). Returns once
        committed."""
        row = await self._row(state)
        update = None
        if previous_version is not None:
            update = (
                state.version,
                state.last_used,
                row[5],
                expires_at,
                state.id,
                previous_version,
                epoch,
            )
        put = partial(_put, row=row, previous_version=previous_version, update=update)
        await self._call(_Job("write", state.id, put, update), withdrawable=False)

    async def _row(self, state: SessionState) -> _Row:
        try:
            text = encode_state(state)
        except (TypeError, ValueError) as exc:
            await trio.lowlevel.checkpoint()
            raise SessionStoreError(
                f"session {state.id!r} cannot be stored: {exc}", applied=False
            ) from exc
        binding = state.client_binding
        return (
            state.id,
            state.version,
            state.created_at,
            state.last_used,
            binding.client_id if binding is not None else None,
            text,
        )

    async def delete(self, session_id: str) -> bool:
        """Remove the session; True if it was stored. Returns once committed."""
        job = _Job("delete", session_id, partial(_delete, session_id=session_id))
        return await self._call(job)

    def discard(self, session_id: str) -> None:
        """Queue the removal of the session and return at once. It commits with the
        next batch, and at the latest before :meth:`open` exits (which raises
        SessionStoreError if it could not)."""
        self._check_open()
        self._enqueue(_Job("discard", session_id, partial(_delete, session_id=session_id)))

    async def index(self) -> list[IndexEntry]:
        """Every stored session, without decoding the states."""
        return await self._call(_Job("read", None, _index))

    # -- the shared store (see SharedSessionStore) ----------------------------------

    async def activate(
        self, session_id: str, *, node: str, lease: float, now: float, force: bool = False
    ) -> Activation | None:
        run = partial(
            sql.activate, session_id=session_id, node=node, lease=lease, now=now, force=force
        )
        found = await self._call(_Job("change", session_id, run))
        if found is None:
            return None
        text, version, epoch, holder, lease_until = found
        state = self._decode(session_id, text, version)
        return Activation(state, epoch, holder, max(0.0, lease_until - now))

    async def create(
        self,
        state: SessionState,
        *,
        client_id: str | None,
        expires_at: float,
        now: float,
        node: str,
        lease: float,
        max_sessions: int,
        max_per_client: int | None,
        max_per_principal: int | None = None,
    ) -> list[tuple[str, int]]:
        row = await self._row(state)
        run = partial(
            sql.create,
            row=row,
            client_id=client_id,
            expires_at=expires_at,
            now=now,
            node=node,
            lease=lease,
            max_sessions=max_sessions,
            max_per_client=max_per_client,
            principal=state.principal,
            max_per_principal=max_per_principal,
        )
        return await self._call(_Job("write", state.id, run), withdrawable=False)

    async def version(self, session_id: str, *, now: float | None = None) -> int | None:
        run = partial(sql.version, session_id=session_id, now=now)
        return await self._call(_Job("read", session_id, run))

    async def renew(
        self, node: str, leases: dict[str, int], *, until: float, busy_until: float | None
    ) -> set[str]:
        run = partial(sql.renew, node=node, leases=leases, until=until, busy_until=busy_until)
        return await self._call(_Job("change", None, run))

    def release(self, session_id: str, *, node: str, epoch: int, expires_at: float) -> None:
        self._check_open()
        run = partial(
            sql.release, session_id=session_id, node=node, epoch=epoch, expires_at=expires_at
        )
        self._enqueue(_Job("note", session_id, run))

    def touch(self, session_id: str, *, expires_at: float) -> None:
        self._check_open()
        run = partial(sql.touch, session_id=session_id, expires_at=expires_at)
        self._enqueue(_Job("note", session_id, run))

    async def remove(self, session_id: str, *, version: int | None) -> bool:
        run = partial(sql.remove, session_id=session_id, expected=version)
        return await self._call(_Job("delete", session_id, run))

    async def expire_due(
        self, now: float, *, idle_before: float, limit: int, spare: Collection[str] = ()
    ) -> list[tuple[str, int]]:
        spared = json.dumps(list(spare))
        # Look first (a read takes no write lock): usually nothing is due.
        look = partial(sql.any_due, now=now, idle_before=idle_before, spare=spared)
        if not await self._call(_Job("read", None, look)):
            return []
        run = partial(sql.trim_due, now=now, idle_before=idle_before, limit=limit, spare=spared)
        rows = await self._call(_Job("delete", None, run))
        return [(str(session_id), int(version)) for session_id, version in rows]

    async def count(self) -> int:
        return await self._call(_Job("read", None, sql.count))

    async def page(self, after: tuple[float, str] | None, limit: int) -> list[IndexEntry]:
        return await self._call(_Job("read", None, partial(sql.page, after=after, limit=limit)))

    # -- records --------------------------------------------------------------------

    async def put_record(self, namespace: str, key: str, value: str, *, ttl: float) -> None:
        check_record(namespace, key, value, ttl)
        run = partial(
            sql.put_record, name=(namespace, key), value=value, ttl=ttl, now=self._clock()
        )
        await self._call(_Job("change", None, run))

    async def swap_record(
        self, namespace: str, key: str, value: str, *, expected: str | None, ttl: float
    ) -> bool:
        check_record(namespace, key, value, ttl)
        check_expected(expected)
        run = partial(
            sql.swap_record,
            name=(namespace, key),
            value=value,
            expected=expected,
            ttl=ttl,
            now=self._clock(),
        )
        return await self._call(_Job("change", None, run))

    async def get_record(self, namespace: str, key: str) -> str | None:
        run = partial(sql.get_record, name=(namespace, key), now=self._clock())
        return await self._call(_Job("change", None, run))

    async def delete_record(self, namespace: str, key: str) -> bool:
        run = partial(sql.delete_record, name=(namespace, key), now=self._clock())
        return await self._call(_Job("change", None, run))

    # -- for the layers built on the store ----------------------------------------

    async def run(self, fn: Callable[[sqlite3.Connection], _T], *, write: bool) -> _T:
        """Run ``fn(connection)`` in the db task's worker thread, with the session jobs
        of its batch, and return what it returns: the way a layer built on the store
        (:mod:`triact.work`) keeps tables of its own in the same file, through the
        same single connection. Create such tables with ``CREATE ... IF NOT EXISTS``
        on first use; the store's own tables are not yours to change.

        With ``write=False``, ``fn`` runs before the batch's transaction, outside any
        transaction: it sees what is committed and must change nothing. With
        ``write=True`` it runs inside the batch's transaction, in a savepoint of its
        own: if it raises, its changes are rolled back and the call raises, and the
        other jobs of the batch are not affected; otherwise the call returns once the
        transaction has committed (if that fails, nothing of ``fn`` is stored and the
        call raises SessionStoreError). ``fn`` must not begin, commit or roll back,
        nor keep the connection; it should be quick (the batch waits for it).

        An ``sqlite3.Error`` from ``fn`` is raised as SessionStoreError; any other
        exception as it is. Cancellation is as for every call: withdrawn while queued,
        seen through once taken.
        """
        return await self._call(_Job("apply" if write else "query", None, fn))

    # -- callers' side ------------------------------------------------------------

    def _check_open(self) -> None:
        if self._phase == "closing":
            raise SessionStoreError(
                f"{self!r} is closing; use it only inside its `open()` block", applied=False
            )
        if self._phase != "open":
            raise SessionStoreError(
                f"{self!r} is not open; use `async with store.open():`", applied=False
            )

    def _enqueue(self, job: _Job[Any]) -> None:
        self._pending.append(job)
        self._wakeup.set()

    async def _call(self, job: _Job[_T], *, withdrawable: bool = True) -> _T:
        try:
            self._check_open()
        except SessionStoreError:
            await trio.lowlevel.checkpoint()
            raise
        if withdrawable:
            await trio.lowlevel.checkpoint_if_cancelled()  # already cancelled: never queued
        self._enqueue(job)
        job.waiter = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            if withdrawable and not job.taken:
                job.withdrawn = True
                job.waiter = None
                return trio.lowlevel.Abort.SUCCEEDED
            # Taken (or never withdrawn): the job will run anyway, so the call reports
            # what it did, and the cancellation arrives at the caller's next checkpoint.
            return trio.lowlevel.Abort.FAILED

        await trio.lowlevel.wait_task_rescheduled(abort)
        if job.error is not None:
            raise job.error
        return cast(_T, job.value)

    # -- the db task, which owns the connection -----------------------------------

    async def _serve(self, conn: sqlite3.Connection) -> None:
        # Shielded: accepted jobs are carried out even when the open() block is
        # cancelled; the block's exit waits for them (bounded by the busy timeout).
        with trio.CancelScope(shield=True):
            try:
                while self._pending or self._phase != "closing":
                    if not self._pending:
                        await self._wakeup.wait()
                        self._wakeup = trio.Event()
                        continue
                    await self._gather()
                    await self._run_batch(conn)
                if self._unflushed:
                    await self._run_batch(conn)
            finally:
                for job in self._pending:
                    job.error = SessionStoreError(
                        f"{self!r} closed before it ran this call", applied=False
                    )
                    job.finish()
                self._pending = []

    async def _gather(self) -> None:
        """Let the batch grow while the event loop is still queueing jobs.

        While other tasks are runnable, a transaction begun now would mostly wait for
        them anyway (its thread needs the GIL between statements), and their jobs
        would need a transaction, and an fsync, of their own. So pass a few rounds of
        the scheduler, as long as each one added jobs: under load that lets the tasks
        the last commit woke queue their next changes, at the cost of a task switch.
        """
        for _ in range(_GATHER_ROUNDS):
            queued = len(self._pending)
            await trio.lowlevel.cancel_shielded_checkpoint()
            if len(self._pending) == queued:
                return

    async def _run_batch(self, conn: sqlite3.Connection) -> None:
        batch = [*self._unflushed, *(job for job in self._pending if not job.withdrawn)]
        self._pending = []
        self._unflushed = []
        if not batch:
            return
        for job in batch:
            job.taken = True
        try:
            committed, writes = await trio.to_thread.run_sync(self._execute, conn, batch)
        except BaseException as exc:
            for job in batch:
                job.error = SessionStoreError(f"{self!r}: its worker thread failed: {exc!r}")
            raise
        finally:
            for job in batch:
                job.finish()
        self.transactions += committed
        self.writes += writes
        self._unflushed = [job for job in batch if job.kind == "discard" and job.error is not None]

    def _raise_unflushed(self, body_error: BaseException | None) -> None:
        if not self._unflushed:
            return
        ids = ", ".join(repr(job.session_id) for job in self._unflushed)
        error = SessionStoreError(
            f"{self!r} closed without removing sessions {ids}: {self._unflushed[0].error}"
        )
        self._unflushed = []
        if body_error is None:
            raise error
        body_error.add_note(str(error))

    # -- in the worker thread -----------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        """Open the file, creating it (mode 0600) if needed; if opening fails, a file
        this call created is removed again."""
        created = sqlite_file.create_private(self._path)
        try:
            conn = self._connect_to_file()
        except BaseException:
            if created:
                sqlite_file.remove_created(self._path)
            raise
        if sqlite_file.on_disk(self._path):
            self._opened = sqlite_file.identity(self._path)
        return conn

    def _connect_to_file(self) -> sqlite3.Connection:
        # Processes that open a new file at the same moment each set it up (WAL mode,
        # the tables), and SQLite may answer one "database is locked" at once, without
        # waiting out the busy timeout (it does not wait for the lock that switching
        # the journal mode takes): that one opens again, within the store's timeout.
        deadline = time.monotonic() + self._timeout
        pause = 0.005
        while True:
            try:
                conn = sqlite3.connect(
                    self._path, timeout=self._timeout, isolation_level=None, check_same_thread=False
                )
            except sqlite3.Error as exc:
                raise sqlite_file.open_error(self._path, exc) from exc
            try:
                self._prepare(conn)
            except sqlite3.OperationalError as exc:
                conn.close()
                if not _busy(exc) or time.monotonic() + pause > deadline:
                    raise sqlite_file.open_error(self._path, exc) from exc
            except sqlite3.Error as exc:
                conn.close()
                raise sqlite_file.open_error(self._path, exc) from exc
            except BaseException:
                conn.close()
                raise
            else:
                return conn
            time.sleep(pause)  # (the store's worker thread)
            pause = min(2 * pause, 0.1)

    async def check(self) -> str | None:
        """None while the store can commit; else what is wrong (its file was deleted or
        replaced while open: changes are then refused)."""
        if self._phase != "open":
            await trio.lowlevel.checkpoint()
            return None
        return await trio.to_thread.run_sync(sqlite_file.lost, self._path, self._opened)

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {round(self._timeout * 1000)}")
        # Before anything changes the file (WAL mode, tables): refuse other files.
        kind = sqlite_file.identify(conn, self._path)
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode).lower() != "wal" and self._path != ":memory:":
            raise SessionStoreError(
                f"session store {self._path!r} cannot use WAL journal mode (got {mode!r})"
            )
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        # Checking an existing file only reads, so it opens while another connection
        # writes; creating or migrating the tables takes the write lock.
        if _transact(conn, "BEGIN", self._layout) != STORE_SCHEMA_VERSION:
            _transact(conn, "BEGIN IMMEDIATE", self._create_layout)
        if kind != "triact":
            sqlite_file.mark(conn)

    def _create_layout(self, conn: sqlite3.Connection) -> None:
        layout = self._layout(conn)  # again: another connection may have been first
        if layout == STORE_SCHEMA_VERSION:
            return
        statements = sql.MIGRATE_V1 if layout == 1 else sql.LAYOUT_V2
        for statement in statements:
            conn.execute(statement)
        query = "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)"
        conn.execute(query, (str(STORE_SCHEMA_VERSION),))

    def _layout(self, conn: sqlite3.Connection) -> int:
        """The file's layout version (0: it holds neither of the store's tables);
        SessionDataError if it is not a store this triact can use."""
        query = "SELECT name FROM sqlite_master WHERE type = 'table'"
        tables = {name for (name,) in conn.execute(query)}
        if "meta" not in tables and "sessions" not in tables:
            return 0
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            schema = int(row[0])
        except (TypeError, ValueError):  # a corrupt file's sqlite3.Error says so itself
            schema = 0
        if schema < 1 or "sessions" not in tables:
            sqlite_file.check_integrity(conn, self._path)  # a corrupt store, rather?
            raise SessionDataError(
                f"{self._path!r} is not a triact session store (no valid store schema "
                "record, or no sessions table)"
            )
        if schema > STORE_SCHEMA_VERSION:
            raise SessionDataError(
                f"session store {self._path!r} has store schema version {schema}, newer than "
                f"this triact understands ({STORE_SCHEMA_VERSION}); upgrade triact to open it"
            )
        return schema

    def _execute(self, conn: sqlite3.Connection, batch: list[_Job[Any]]) -> tuple[int, int]:
        """Run a batch: reads first, then every change in one transaction. Returns the
        number of transactions committed (0 or 1) and of writes among them."""
        changes = []
        for job in batch:
            if job.kind == "query":
                try:
                    job.value = job.run(conn)
                except Exception as exc:
                    job.error = self._extension_error(job, exc)
                continue
            if job.kind != "read":
                changes.append(job)
                continue
            try:
                job.value = job.run(conn)
            except SessionDataError as exc:  # a malformed row: said as it is
                job.error = exc
            except Exception as exc:
                job.error = self._failure(job, "could not be read", exc, applied=False)
        if not changes:
            return 0, 0
        lost = sqlite_file.lost(self._path, self._opened)
        if lost is not None:  # committing into a file nobody will open again
            for job in changes:
                job.error = SessionStoreError(lost, applied=False)
            return 0, 0
        committing = False
        try:
            conn.execute("BEGIN IMMEDIATE")
            start = 0
            while start < len(changes):
                end = start + 1
                if changes[start].update is not None:  # a run of updates, in one call
                    while end < len(changes) and changes[end].update is not None:
                        end += 1
                    if end - start > 1 and _update_all(conn, changes[start:end]):
                        start = end
                        continue
                for job in changes[start:end]:
                    self._change(conn, job)
                start = end
            committing = True
            conn.execute("COMMIT")
        except Exception as exc:
            # Rolled back, unless the COMMIT itself failed and SQLite ended the
            # transaction on its own (an I/O error while writing or syncing the
            # commit): a later reader may then find it committed or not.
            applied = None if committing and not conn.in_transaction else False
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error as rollback_exc:
                    exc.add_note(f"rolling back failed too: {rollback_exc!r}")
            for job in changes:
                job.value = None
                what = (
                    _NOT_DONE.get(job.kind, "was not removed")
                    if applied is False
                    else "may or may not have been saved"
                )
                job.error = self._failure(
                    job, f"{what}: the transaction failed", exc, applied=applied
                )
            return 0, 0
        return 1, sum(job.kind == "write" and job.error is None for job in changes)

    def _change(self, conn: sqlite3.Connection, job: _Job[Any]) -> None:
        job.error = None  # a retried discard carries its last failure
        if job.kind == "apply":
            self._apply(conn, job)
            return
        try:
            job.value = job.run(conn)
        except SessionError as exc:  # a refusal of this job alone (conflict, limit)
            job.error = exc

    def _apply(self, conn: sqlite3.Connection, job: _Job[Any]) -> None:
        """Run an extension's write in a savepoint, so that its failure undoes its own
        changes only. (A failure to roll back propagates: the transaction fails.)"""
        conn.execute("SAVEPOINT triact_apply")
        try:
            job.value = job.run(conn)
        except Exception as exc:
            conn.execute("ROLLBACK TO triact_apply")
            conn.execute("RELEASE triact_apply")
            job.error = self._extension_error(job, exc)
            return
        conn.execute("RELEASE triact_apply")

    def _extension_error(self, job: _Job[Any], exc: Exception) -> Exception:
        if isinstance(exc, sqlite3.Error):  # a read, or a write rolled back to its savepoint
            return self._failure(job, "failed", exc, applied=False)
        return exc

    def _failure(
        self, job: _Job[Any], what: str, exc: Exception, *, applied: bool | None
    ) -> SessionStoreError:
        if job.kind in ("query", "apply"):
            subject = "an extension's call"
        elif job.session_id is None:
            subject = "the session index"
        else:
            subject = f"session {job.session_id!r}"
        error = SessionStoreError(
            f"{subject} {what} in {self._path}: {exc!r}{sqlite_file.corruption_hint(exc)}",
            applied=applied,
        )
        error.__cause__ = exc
        return error

    def _close(self, conn: sqlite3.Connection) -> None:
        try:
            conn.close()
        except sqlite3.Error as exc:
            raise SessionStoreError(f"closing session store {self._path!r} failed: {exc}") from exc


def _transact(conn: sqlite3.Connection, begin: str, step: Callable[[sqlite3.Connection], _T]) -> _T:
    conn.execute(begin)
    try:
        result = step(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _select(conn: sqlite3.Connection, *, session_id: str) -> tuple[Any, Any] | None:
    query = "SELECT state, version FROM sessions WHERE id = ?"
    row = conn.execute(query, (session_id,)).fetchone()
    return None if row is None else (row[0], row[1])


def _index(conn: sqlite3.Connection) -> list[IndexEntry]:
    query = "SELECT id, created_at, last_used, client_id, version FROM sessions"
    return [IndexEntry(*row) for row in conn.execute(query)]


def _update_all(conn: sqlite3.Connection, jobs: list[_Job[Any]]) -> bool:
    """Run updates in one ``executemany`` (a third less time in the thread than one
    call each). False, with nothing changed, if any of them finds another version
    stored: the caller then runs them one by one to tell which."""
    conn.execute("SAVEPOINT triact_updates")
    cursor = conn.executemany(sql.UPDATE, [job.update for job in jobs if job.update is not None])
    if cursor.rowcount == len(jobs):
        conn.execute("RELEASE triact_updates")
        for job in jobs:
            job.error = None
            job.value = None
        return True
    conn.execute("ROLLBACK TO triact_updates")
    conn.execute("RELEASE triact_updates")
    return False


def _put(
    conn: sqlite3.Connection,
    *,
    row: _Row,
    previous_version: int | None,
    update: tuple[Any, ...] | None,
) -> None:
    """Compare-and-set within the caller's transaction."""
    if update is None:
        cursor = conn.execute(
            "INSERT INTO sessions (id, version, created_at, last_used, client_id, state) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            row,
        )
    else:
        cursor = conn.execute(sql.UPDATE, update)
    if cursor.rowcount == 1:
        return
    epoch = None if update is None else update[-1]
    raise sql.write_failure(conn, row[0], previous_version, epoch)


def _delete(conn: sqlite3.Connection, *, session_id: str) -> bool:
    return conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount > 0


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite refused for a lock another connection held."""
    name = getattr(exc, "sqlite_errorname", "")
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "database is locked" in str(exc)
