"""The SessionManager: the supervisor of session actors, their TTLs and their store.

A session is an :class:`Entry` in the manager's index from creation to expiry. Its
actor exists only while the session is in use: it is spawned on the first call
(after passivation with a durable store, it loads the state inside that call) and
leaves memory after ``passivate_after`` idle seconds. TTLs live in one deadline queue
(:class:`~triact.actors.IdDeadlineQueue`), so the reaper's work grows with the sessions
that expire, not with those that exist.

A session that is not in use (no actor, no state in memory) has no :class:`Entry`: its
record is filed as one ``bytes`` in a dict, and its deadline is a record in a
``bytearray`` of the queue's, which the garbage collector neither tracks nor walks (see
:meth:`SessionManager._file`).
"""

from __future__ import annotations

import logging
import marshal
import math
import os
import secrets
import sys
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, cast

import attrs
import trio

from ..actors import ActorRef, DeadlineQueue, IdDeadlineQueue, Supervisor, open_supervisor
from . import _ops as ops
from ._actor import SessionActor
from ._config import SessionConfig
from ._errors import (
    SessionClosedError,
    SessionDataError,
    SessionError,
    SessionLimitError,
    SessionNotFoundError,
    SessionStoreError,
    no_session,
)
from ._events import EventKind, SessionEvent, Subscription, deliver
from ._host import SessionHost, Tally
from ._leases import Entry, GoneReason, Leases
from ._limits import check_state
from ._security import opens, token_digest
from ._session import Session
from ._state import ClientBinding, SessionState, check_principal
from ._stats import LatencySummary, ManagerStats
from ._store import IndexEntry, MemoryStore, SessionStore, SharedSessionStore

logger = logging.getLogger("triact.sessions")


# A busy session is looked at again this often by the reaper (it never expires busy).
_BUSY_RECHECK = 1.0
#: With a memory store and no ``passivate_after``: seconds a session's actor stays in
#: memory after its last call (its state stays on the session's record either way).
#: Well above the gaps between the calls of a session in use: an actor made again and
#: again, each kept that long, is what the collector promotes and walks (see
#: docs/performance.md).
MEMORY_ACTOR_IDLE = 30.0
#: How many kept actors one look of the idle sweep lets go before a schedule point.
_LET_GO_BATCH = 128
_LATENCIES_KEPT = 4096


class SessionManager:
    """Creates sessions, routes calls to their actors, reaps them by TTL.

    Open one with :func:`open_session_manager`.
    """

    def __init__(self, config: SessionConfig, store: SessionStore, sup: Supervisor) -> None:
        self.config = config
        self.store = store
        self.wall_clock = config.wall_clock
        #: ``trio.current_time``, without its two indirections (actors read it on
        #: every call).
        self.now = trio.lowlevel.current_clock().current_time
        self._sup = sup
        self._key = config.secret_key or secrets.token_bytes(32)
        #: Every live session's id, in the order they came (creation or adoption), with
        #: its filed record (see _file), or b"" while its record is in _sessions: a
        #: dict of strings and bytes, which the collector never tracks. (A session
        #: filed and taken back keeps its key: a dict that keeps losing and gaining
        #: keys is rebuilt whole every so often, a million keys at once.)
        self._index: dict[str, bytes] = {}
        #: The records (Entry) of the sessions in use: with an actor, a state in memory,
        #: a guard or a hold; with a shared store, every session this process knows.
        self._sessions: dict[str, Entry] = {}
        #: The filed records that a handle still holds, so that a session has one
        #: record at a time (filed sessions only; they leave with their last handle).
        self._handed: weakref.WeakValueDictionary[str, Entry] = weakref.WeakValueDictionary()
        #: Shared store: the records of sessions dropped from memory that a handle
        #: still holds; an expiry the store reports is theirs (counted once).
        self._forgotten: weakref.WeakValueDictionary[str, Entry] = weakref.WeakValueDictionary()
        self._reserved = 0  # creations admitted and not yet in _sessions
        self._per_client: dict[str, int] = {}
        self._per_principal: dict[str, int] = {}
        #: Deadlines by session id, kept where the collector does not walk them (a
        #: list of a million pairs was half of a full collection's time).
        self._ttl = IdDeadlineQueue()
        self._subscriptions: list[Subscription] = []
        self._closing = False
        self._counts = dict.fromkeys(
            ("created", "expired", "ended", "removed", "failed", "passivated", "activations"), 0
        )
        self._tally = Tally(_LATENCIES_KEPT)
        #: Seconds an idle actor stays in memory (None: until its session goes), and
        #: whether a call to a session idle for longer runs on an actor that leaves as
        #: soon as it is done (see _spawn).
        self._actor_idle, self._release_cold = _actor_idle(config, store)
        #: With a MemoryStore (not a subclass, whose writes and loads are its own): the
        #: states of sessions without an actor are compact there.
        self._memory = store if type(store) is MemoryStore else None
        #: With a memory store (and no passivate_after nor rate limit): the sessions
        #: whose actor stays after its calls, in the order they were put here, each
        #: with the Trio time it was (see _keep); their actors have no idle timer of
        #: their own (an armed timer would keep a stopped actor alive until it rings).
        self._kept: OrderedDict[Entry, float] | None = OrderedDict() if self._release_cold else None
        #: When _kept is looked at next for actors idle too long (one item, if any).
        self._kept_due: DeadlineQueue[None] = DeadlineQueue()
        self._kept_armed = False
        #: With a shared store: its leases, deadlines and sweeps (None otherwise).
        self.leases: Leases | None = None
        if store.shared:
            assert isinstance(store, SharedSessionStore), f"{store!r} is not a SharedSessionStore"
            self.leases = Leases(
                store, config, self._sessions, self._expired_in_store, self._changed_elsewhere
            )
        # All that the sessions' actors and handles may use of this manager.
        self._host = SessionHost(
            config=config,
            store=store,
            leases=self.leases,
            tally=self._tally,
            now=self.now,
            wall_clock=self.wall_clock,
            closing=lambda: self._closing,
            token_digest=self._token_digest,
            publish=self._publish,
            subscriptions=self._subscriptions,
            session_gone=self._session_gone,
            actor_stopped=self._actor_stopped,
            stamp=self._stamp,
            session_failed=self._session_failed,
            adopt=self._adopt,
            activate=self._activate,
            refusal=self._refusal,
        )

    # -- creating and finding sessions ---------------------------------------------

    @property
    def session_count(self) -> int:
        """Live sessions, in memory or passivated; with a shared store, those this
        process has used lately (:meth:`count_sessions` counts the store's)."""
        return len(self._index)

    async def count_sessions(self) -> int:
        """Live sessions: in the store, with a shared store (every process's)."""
        if self.leases is None:
            await trio.lowlevel.checkpoint()
            return len(self._index)
        return await self.leases.store.count()

    async def list_sessions(
        self, after: tuple[float, str] | None = None, limit: int = 100
    ) -> list[IndexEntry]:
        """Up to ``limit`` live sessions ordered by creation (wall clock, then id),
        after the position ``after`` (the ``(created_at, id)`` of the last one seen);
        with a shared store, every process's, read from the store."""
        if type(limit) is not int or limit < 0:
            # (A negative one was a slice from the end in memory, no limit in SQLite.)
            raise ValueError(f"list_sessions(limit=) must be an int >= 0, got {limit!r:.40}")
        if after is not None and not (
            type(after) is tuple
            and len(after) == 2
            and type(after[0]) in (int, float)
            and isinstance(after[1], str)
        ):
            raise ValueError(
                "list_sessions(after=) must be None or the (created_at, id) of an "
                f"IndexEntry, got {after!r:.60}"
            )
        if self.leases is not None:
            return await self.leases.store.page(after, limit)
        await trio.lowlevel.checkpoint()
        entries = []
        for session_id, filed in self._index.items():
            entry = self._sessions[session_id] if not filed else _unfiling(session_id, filed)
            created = entry.created_wall
            if after is None or (created, session_id) > after:
                # An actor's commits move entry.state on; entry.version follows only
                # when the state leaves memory.
                state = entry.state
                version = entry.version if state is None else state.version
                entries.append(IndexEntry(session_id, created, 0.0, entry.client_id, version))
        entries.sort(key=lambda item: (item.created_at, item.id))
        return entries[:limit]

    @property
    def closing(self) -> bool:
        """True once the manager's block has begun to close: it takes no new calls,
        and those in flight have ``shutdown_grace`` seconds to finish (a long update
        may check this to finish early)."""
        return self._closing

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
        """Create a session and return its handle.

        With ``bind_client=True`` the handle's :attr:`Session.token` is the client's
        token, returned only here; calls are then checked with
        :meth:`Session.validate_security`. ``client_id`` names the client for the
        ``max_sessions_per_client`` cap. ``principal`` (an authenticated caller's
        name) owns the session, for good: handles checked with
        :meth:`Session.authorized` reach it only as that principal, and
        :meth:`usable_sessions` lists it only to it. Raises :class:`SessionLimitError`
        past ``max_sessions``, the per-client cap or the per-principal cap.
        """
        check_principal(principal)
        self._check_open()
        leases = self.leases
        # Limits count this process's sessions, before any await (so that concurrent
        # creations see each other); a shared store counts them itself.
        reserved = None if leases is not None else client_id
        if leases is None:
            self._reserve(client_id, principal)
        try:
            if working_directory is not None:
                working_directory = await trio.to_thread.run_sync(
                    ops.check_working_directory, working_directory
                )
            else:
                await trio.lowlevel.checkpoint()
            self._check_open()  # it may have closed while we checked the directory
            now = self.wall_clock()
            token = binding = None
            if bind_client:
                token = secrets.token_urlsafe(32)
                binding = ClientBinding(self._token_digest(token), now, client_id)
            state = SessionState(
                id=secrets.token_urlsafe(16),  # 128 bits of randomness (I7, docs/architecture.md)
                version=1,
                created_at=now,
                last_used=now,
                topic=topic,
                working_directory=working_directory,
                config_path=config_path,
                project_id=project_id,
                client_binding=binding,
                metadata=metadata or {},
                principal=principal,
            )
            check_state(state, None, self.config.max_state_bytes)
            if leases is not None:
                with trio.CancelScope(shield=True):  # once begun, seen through
                    await self._create_shared(leases, state, client_id)
            elif self._memory is not None:  # kept compact until its first call
                self._memory.keep_idle(state, previous_version=None)
            elif self.store.immediate:
                self.store.write_now(state, previous_version=None)
            else:
                with trio.CancelScope(shield=True):  # once begun, seen through
                    await self.store.write(state, previous_version=None)
        finally:
            if leases is None:
                self._release(client_id, principal)
        entry = Entry(state.id, state, trio.current_time(), reserved)
        if self._memory is not None:
            entry.state = None  # (its actor, once spawned, loads it)
        if leases is None:
            entry.principal = principal
        entry = self._admit(entry)
        if leases is not None:
            leases.leased(entry, 1)  # created leased to this process
        else:
            self._file(entry)
        self._counts["created"] += 1
        self._publish("created", state)
        return Session(self._host, entry, token)

    async def _create_shared(
        self, leases: Leases, state: SessionState, client_id: str | None
    ) -> None:
        config = self.config
        trimmed = await leases.store.create(
            state,
            client_id=client_id,
            expires_at=leases.expires_at(state.created_at, state.created_at),
            now=state.created_at,
            node=leases.node,
            lease=config.lease,
            max_sessions=config.max_sessions,
            max_per_client=config.max_sessions_per_client,
            max_per_principal=config.max_sessions_per_principal,
        )
        for session_id, version in trimmed:
            self._expired_in_store(session_id, version)

    def _reserve(self, client_id: str | None, principal: str | None) -> None:
        config = self.config
        if len(self._index) + self._reserved >= config.max_sessions:
            raise SessionLimitError(
                f"the manager holds its limit of {config.max_sessions} sessions "
                "(max_sessions); end or remove some first"
            )
        cap = config.max_sessions_per_client
        if client_id is not None and cap is not None and self._per_client.get(client_id, 0) >= cap:
            raise SessionLimitError(
                f"client {client_id!r} holds its limit of {cap} sessions "
                "(max_sessions_per_client); end one first"
            )
        most = config.max_sessions_per_principal
        if (
            principal is not None
            and most is not None
            and self._per_principal.get(principal, 0) >= most
        ):
            raise SessionLimitError(
                f"principal {principal!r} holds its limit of {most} sessions "
                "(max_sessions_per_principal); end one first"
            )
        self._reserved += 1
        if client_id is not None:
            self._per_client[client_id] = self._per_client.get(client_id, 0) + 1
        if principal is not None:
            self._per_principal[principal] = self._per_principal.get(principal, 0) + 1

    def _release(self, client_id: str | None, principal: str | None) -> None:
        """Undo :meth:`_reserve` (a created session is counted by :meth:`_admit`)."""
        self._reserved -= 1
        if client_id is not None:
            self._drop_client(client_id)
        if principal is not None:
            self._drop_principal(principal)

    def _drop_principal(self, principal: str) -> None:
        left = self._per_principal[principal] - 1
        if left:
            self._per_principal[principal] = left
        else:
            del self._per_principal[principal]

    def _drop_client(self, client_id: str) -> None:
        left = self._per_client[client_id] - 1
        if left:
            self._per_client[client_id] = left
        else:
            del self._per_client[client_id]

    def _admit(self, entry: Entry) -> Entry:
        lifetime = self.config.max_lifetime
        if lifetime is not None and entry.ends == math.inf:  # created (or adopted) now
            entry.ends = entry.last_active + lifetime
        self._sessions[entry.id] = entry
        self._index[entry.id] = b""
        if entry.client_id is not None:
            self._per_client[entry.client_id] = self._per_client.get(entry.client_id, 0) + 1
        if entry.principal is not None:
            self._per_principal[entry.principal] = self._per_principal.get(entry.principal, 0) + 1
        self._ttl.push(self._deadline(entry), entry.id)
        return entry

    # -- filed records ----------------------------------------------------------------

    def _file(self, entry: Entry) -> None:
        """File the record of a session no longer in use (a store that is not
        shared, no actor, no state in memory, no guard or hold): an Entry is an
        instance, which the collector tracks, and a million of them are what a full
        collection walks. A filed session is one ``bytes`` in ``_index`` (the fields
        of its Entry that outlive an actor, see _filing), which no collection looks
        at, and its deadline a pair of a float and its id, which the collector stops
        tracking. The Entry goes with its last handle (``_handed`` finds it until
        then); a handle or the reaper that needs one later gets one made from the
        record (:meth:`_record`), and the session's next actor takes it back
        (:meth:`_unfile`)."""
        if (
            self.leases is not None
            or entry.gone is not None
            or entry.state is not None
            or entry.ref is not None
            or entry.guard is not None
            or entry.hold is not None
            or self._sessions.get(entry.id) is not entry
        ):
            return
        self._index[entry.id] = _filing(entry)
        del self._sessions[entry.id]
        self._handed[entry.id] = entry

    def _unfile(self, entry: Entry) -> None:
        """Take ``entry`` (filed, or held already) back into ``_sessions``."""
        if self._index.get(entry.id):
            self._index[entry.id] = b""
            self._handed.pop(entry.id, None)
            self._sessions[entry.id] = entry

    def _record(self, session_id: str) -> Entry:
        """The record of a filed session: the one a handle holds, or else a new one
        (which a handle may then hold)."""
        entry = self._handed.get(session_id)
        if entry is None:
            entry = self._handed[session_id] = _unfiling(session_id, self._index[session_id])
        return entry

    def _stamp(self, entry: Entry) -> None:
        """A call its actor did not stamp ended (refused, cancelled): idleness counts
        from now, on the record, filed or not."""
        entry.last_active = self.now()
        if self._index.get(entry.id) and self._handed.get(entry.id) is entry:
            self._index[entry.id] = _filing(entry)

    async def get_session(self, session_id: str) -> Session:
        """The handle of a live session; :class:`SessionNotFoundError` if there is none."""
        self._check_open()
        entry = self._sessions.get(session_id)
        if entry is None and self._index.get(session_id):
            entry = self._record(session_id)
        if entry is None and self.leases is not None and isinstance(session_id, str):
            # Created elsewhere? (Past its deadline counts as gone.)
            version = await self.leases.store.version(session_id, now=self.wall_clock())
            self._check_open()
            if version is not None:
                entry = self._adopt(session_id)
                entry.version = version
        else:
            await trio.lowlevel.checkpoint()
        if entry is None:
            raise no_session(session_id)
        return Session(self._host, entry)

    def _adopt(self, session_id: str) -> Entry:
        """This process's record of a session of a shared store (made if needed; its
        actor loads the state, or finds it gone, on its first call)."""
        entry = self._sessions.get(session_id)
        if entry is None:
            entry = self._admit(Entry(session_id, None, trio.current_time(), None))
        return entry

    def _expired_in_store(self, session_id: str, version: int) -> None:
        """A shared store expired a session (this process's sweep or creation)."""
        entry = self._sessions.get(session_id) or self._forgotten.get(session_id)
        if entry is not None:
            entry.version = version
            self._session_gone(entry, "expired", None)
        else:
            self._counts["expired"] += 1
            if self._subscriptions:
                event = SessionEvent("expired", session_id, version, self.wall_clock())
                deliver(self._subscriptions, event)

    def _changed_elsewhere(self, kind: str, session_id: str, version: int) -> None:
        """A shared store reports a change another process committed (an event for
        the subscribers; a session ended elsewhere arrives as "removed")."""
        if self._subscriptions and kind in ("created", "updated", "expired", "removed"):
            event = SessionEvent(cast(EventKind, kind), session_id, version, self.wall_clock())
            deliver(self._subscriptions, event)

    def session_ids(self) -> list[str]:
        """The ids of the live sessions, oldest first."""
        return list(self._index)

    async def usable_sessions(
        self, tokens: Iterable[str] = (), *, principal: str | None = None
    ) -> list[SessionState]:
        """The last committed states of the live sessions that a caller holding
        ``tokens`` may use, oldest first: of the sessions of ``principal`` (None: those
        without one), every unbound one, and each bound one whose token is among
        ``tokens``. Of the others, not even their number shows.

        Looking is not a call to the sessions: it records no refusal and is not
        activity for their idle time. A session whose state is not in memory
        (passivated with a durable store) is read from the store; SessionStoreError if
        that fails.
        """
        if isinstance(tokens, str):
            raise TypeError("usable_sessions() takes a collection of tokens, not one str")
        check_principal(principal)
        digests = frozenset(self._token_digest(token) for token in tokens)
        if self.leases is not None:  # every process's sessions: the store's
            return await self._usable_in_store(self.leases.store, digests, principal)
        usable = []
        for i, session_id in enumerate(list(self._index)):
            entry = self._sessions.get(session_id)
            state = None if entry is None else entry.state
            if state is None and self._memory is not None:
                state = self._memory.load_now(session_id)
            if state is None:
                try:
                    state = await self.store.load(session_id)
                except SessionError:
                    raise
                except Exception as exc:
                    raise SessionStoreError(
                        "listing sessions: the store failed to load session "
                        f"{session_id!r}: {exc!r}",
                        applied=False,  # a read: nothing to save
                    ) from exc
            elif i % 1024 == 1023:
                await trio.lowlevel.checkpoint()
            if (
                state is not None
                and session_id in self._index  # (still live)
                and state.principal == principal
                and opens(digests, state.client_binding)
            ):
                usable.append(state)
        await trio.lowlevel.checkpoint()
        return usable

    async def _usable_in_store(
        self, store: SharedSessionStore, digests: frozenset[str], principal: str | None
    ) -> list[SessionState]:
        usable = []
        after: tuple[float, str] | None = None
        while page := await store.page(after, 256):
            after = (page[-1].created_at, page[-1].id)
            for item in page:
                entry = self._sessions.get(item.id)
                state = entry.state if entry is not None and entry.gone is None else None
                if state is None or state.version != item.version:
                    state = await _load_to_list(store, item.id)
                if (
                    state is not None
                    and state.principal == principal
                    and opens(digests, state.client_binding)
                ):
                    usable.append(state)
        return usable

    async def usable_index(
        self, tokens: Iterable[str] = (), *, principal: str | None = None
    ) -> list[IndexEntry]:
        """The sessions of :meth:`usable_sessions` as index entries (id, times,
        version, topic, token HMAC, principal), oldest first: what a listing shows.
        With a shared store they come from the store's pages, and no session's state
        is loaded."""
        if isinstance(tokens, str):
            raise TypeError("usable_index() takes a collection of tokens, not one str")
        check_principal(principal)
        if self.leases is None:
            states = await self.usable_sessions(tokens, principal=principal)
            return [_index_entry(state) for state in states]
        store = self.leases.store
        digests = frozenset(self._token_digest(token) for token in tokens)
        usable: list[IndexEntry] = []
        after: tuple[float, str] | None = None
        while page := await store.page(after, 256):
            after = (page[-1].created_at, page[-1].id)
            for item in page:
                if item.token_hmac is None:  # the store does not say: look
                    try:
                        state = await _load_to_list(store, item.id)
                    except SessionDataError as exc:
                        # One malformed record leaves the listing, not the listing
                        # the store: a call to it says what is wrong.
                        logger.warning("listing sessions: %s left out: %s", item.id, exc)
                        continue
                    if state is None:
                        continue
                    item = _index_entry(state)
                if item.principal == principal and (
                    not item.token_hmac or item.token_hmac in digests
                ):
                    usable.append(item)
        return usable

    async def remove_session(self, session_id: str) -> bool:
        """Remove a session at once; True if it existed.

        Calls already queued for it get :class:`SessionClosedError`; a call in
        progress finishes, but its change is not committed.
        """
        self._check_open()
        entry = self._sessions.get(session_id)
        if self.leases is not None:
            store = self.leases.store
            with trio.CancelScope(shield=True):
                if entry is None:  # the event names the version removed
                    # (Past its deadline it is gone, as for get_session: a sweep
                    # counts it expired.)
                    version = await store.version(session_id, now=self.wall_clock())
                    if version is None:
                        return False
                    entry = self._adopt(session_id)
                    entry.version = version
                # Gone here first, so that a change in progress here fails.
                self._session_gone(entry, "removed", entry.state)
                return await store.remove(session_id, version=None)
        if entry is None and self._index.get(session_id):
            entry = self._record(session_id)
        if entry is None:
            await trio.lowlevel.checkpoint()
            return False
        self._session_gone(entry, "removed", entry.state)
        if self.store.immediate:
            self.store.discard(session_id)
            await trio.lowlevel.checkpoint()
        else:
            with trio.CancelScope(shield=True):
                try:
                    await self.store.delete(session_id)
                except Exception as exc:
                    self.store.discard(session_id)  # the store retries it, at close at last
                    raise SessionStoreError(
                        f"session {session_id!r} was removed from memory, but the store "
                        f"failed to delete it ({exc!r}); the deletion will be retried"
                    ) from exc
        return True

    @asynccontextmanager
    async def session(self, topic: str | None = None, **kwargs: Any) -> AsyncIterator[Session]:
        """A temporary session, removed on exit whatever happens inside.

        An exception from the block propagates as it is; if the removal fails too,
        that failure is logged. Without one, the removal's failure is raised: a
        :class:`SessionClosedError` if the manager is shutting down by then (the
        block ran in a task the manager's block did not wait for), and the session
        is then not removed but closed with the others (in a durable store it stays
        until its ``idle_ttl`` expires it); a :class:`SessionStoreError` if the store
        failed to delete it (see :meth:`remove_session`)."""
        session = await self.create_session(topic, **kwargs)
        try:
            yield session
        except BaseException:
            with trio.CancelScope(shield=True):
                try:
                    await self.remove_session(session.id)
                except SessionError as cleanup:
                    logger.warning(
                        "temporary session %r was not removed after its block raised: %s",
                        session.id,
                        cleanup,
                    )
            raise
        with trio.CancelScope(shield=True):
            await self.remove_session(session.id)

    def subscribe(self, buffer: int | None = None) -> Subscription:
        """A stream of lifecycle events (created, updated, expired, ended, removed).

        Publishing never waits: a subscriber more than ``buffer`` events behind
        (default ``SessionConfig.event_buffer``) loses the oldest, counted in
        :attr:`Subscription.dropped`. Close it when done; closing the manager ends it.
        """
        if buffer is None:
            buffer = self.config.event_buffer
        elif type(buffer) is not int or not 1 <= buffer <= sys.maxsize:
            raise ValueError(
                f"subscribe(buffer=) must be an int from 1 to {sys.maxsize}, got {buffer!r}"
            )
        subscription = Subscription(buffer, self._unsubscribe)
        self._subscriptions.append(subscription)
        return subscription

    async def stats(self) -> ManagerStats:
        """Manager-wide figures."""
        await trio.lowlevel.checkpoint()
        counts, tally = self._counts, self._tally
        sessions = len(self._index)
        if self.leases is not None:
            sessions = await self.leases.store.count()
        return ManagerStats(
            sessions=sessions,
            active_actors=len(self._sup),
            created=counts["created"],
            expired=counts["expired"],
            ended=counts["ended"],
            removed=counts["removed"],
            passivated=counts["passivated"],
            activations=counts["activations"],
            operations=tally.operations,
            errors=tally.errors,
            error_rate=tally.errors / tally.operations if tally.operations else 0.0,
            busy_rejections=tally.busy_rejections,
            security_failures=tally.security_failures,
            latency=LatencySummary.of(tally.latencies),
            store=self.store.kind,
        )

    # -- actors ---------------------------------------------------------------------

    async def _activate(self, entry: Entry) -> ActorRef[ops.Op, Any]:
        """The session's running actor, spawned if needed (a passivated session's
        actor loads its state as it handles its first call).

        Returns without a schedule point once the actor is there, so that calls
        reach the mailbox in the order they were made.
        """
        while True:
            if entry.gone is not None or self._closing:
                await trio.lowlevel.checkpoint()
                raise self._refusal(entry)
            ref = entry.ref
            if ref is not None and ref.accepting:
                return ref
            if ref is not None and ref.failure is not None:
                self._session_failed(entry, ref.failure)  # past its restart policy
                continue
            if ref is not None and not ref.stopped:
                await ref.stop()  # let the old actor finish going
                continue
            other = self._sup.get(entry.id)
            if other is not None:
                # Another record's actor of this session is still going: the session
                # ended or was removed here while a get_session that had found it in
                # a shared store made this record. Let it go first (spawning beside
                # it raised ValueError), then this record's actor finds it gone.
                await other.stop()
                continue
            return self._spawn(entry)

    def _spawn(self, entry: Entry) -> ActorRef[ops.Op, Any]:
        idle = self._actor_idle
        now = self.now()
        self._unfile(entry)
        if entry.state is None and self._memory is not None:
            entry.state = self._memory.take_up(entry.id)  # from its compact form
        # A call to a session idle for longer than an actor stays (a cold call) gets an
        # actor that leaves as soon as it has handled what it took: it is then garbage
        # before any collection sees it, instead of an actor, its ref and its idle
        # deadline kept for `idle` seconds (see docs/performance.md, "No GC cliff").
        cold = self._release_cold and idle is not None and now - entry.last_active >= idle
        kept = self._kept
        ref: ActorRef[ops.Op, Any] = self._sup.spawn(
            partial(SessionActor, self._host, entry),  # (smaller than a closure)
            name=entry.id,
            mailbox_size=self.config.mailbox_size,
            idle_timeout=None if cold or kept is not None else idle,
        )
        entry.ref = ref
        if cold:
            assert entry.actor is not None
            entry.actor.transient = True
        elif kept is not None:
            self._keep(kept, entry, now)
        self._counts["activations"] += 1
        return ref

    def _keep(self, kept: OrderedDict[Entry, float], entry: Entry, now: float) -> None:
        """Keep ``entry``'s new actor after its calls: until it has been idle for
        MEMORY_ACTOR_IDLE seconds, and while it is among the ``config.actors_kept``
        sessions used last (past that, the one put here longest ago that was not
        used since is let go: a second chance, as the clock algorithm gives pages).

        A kept actor's session keeps its state as a ``SessionState`` (three objects
        the collector tracks, and a new one each commit); a session without one is
        compact in the store. Bounding the kept actors bounds what a collection walks
        whatever the number of sessions (see docs/performance.md)."""
        kept[entry] = now
        if not self._kept_armed:
            self._kept_armed = True
            self._kept_due.push(now + self._actor_idle, None)  # type: ignore[operator]
        bound = self.config.actors_kept
        if len(kept) > bound:
            self._let_go(kept, now, len(kept) - bound)

    def _let_go(self, kept: OrderedDict[Entry, float], now: float, over: int) -> float | None:
        """Let go of the actors of the first sessions of ``kept``: ``over`` of them
        (the bound), or else those idle for MEMORY_ACTOR_IDLE seconds (at most
        _LET_GO_BATCH). A session used since it was put here is put at the end
        instead (busy: now; else: its last use). Returns when to look again."""
        idle = self._actor_idle
        assert idle is not None
        budget = _LET_GO_BATCH
        while kept:
            entry, since = next(iter(kept.items()))
            if over <= 0 and now - since < idle:
                return since + idle
            if not budget:
                return now + 0.001  # the rest after a schedule point
            budget -= 1
            del kept[entry]
            ref = entry.ref
            if ref is None or not ref.accepting:
                continue  # gone already
            used = entry.last_active
            if ref.busy or (used > since and now - used < idle):
                kept[entry] = now if ref.busy else used
                continue
            ref.stop_when_idle()  # its on_stop keeps the state compact
            over -= 1
        return None

    def _kept_idle(self, _: None, now: float) -> float | None:
        """The idle sweep of the kept actors (see _keep)."""
        assert self._kept is not None
        again = self._let_go(self._kept, now, 0)
        self._kept_armed = again is not None
        return again

    def _actor_stopped(self, entry: Entry, actor: SessionActor) -> None:
        """Called by a session actor's on_stop: passivated, expired, ended or shut down."""
        if entry.ref is None or entry.actor is not actor:
            return
        entry.ref = None
        entry.actor = None
        if self._kept is not None:
            self._kept.pop(entry, None)
        if self.leases is not None:
            # The next actor activates anew: others may have written meanwhile.
            self.leases.release(entry, self.now())
            if entry.state is not None:
                entry.version = entry.state.version
                entry.state = None
            if entry.gone is None and not self._closing:
                self._counts["passivated"] += 1
            return
        if entry.gone is None and not self._closing:
            self._counts["passivated"] += 1
            if not self.store.immediate and entry.state is not None:
                entry.version = entry.state.version
                entry.state = None  # it lives on in the store
            elif entry.state is not None:  # keep the counts of reads since the last commit
                state = entry.state
                metrics = actor.metrics()
                if metrics != state.metrics:
                    state = attrs.evolve(state, metrics=metrics)
                if self._memory is not None:  # compact, and only there
                    self._memory.keep_idle(state, previous_version=state.version)
                    entry.version = state.version
                    entry.state = None
                else:  # the store's copy too, so that the two do not each keep a state
                    self.store.write_now(state, previous_version=state.version)
                    entry.state = state
            guard = entry.guard
            if guard is not None and guard.empty(self.now()):
                entry.guard = None  # nothing to keep: the next actor makes a fresh one
            self._file(entry)

    def _session_failed(self, entry: Entry, error: BaseException) -> None:
        if entry.gone is None:
            logger.error("session %r failed for good: %r", entry.id, error)
            self._session_gone(entry, "failed", entry.state)

    def _refusal(self, entry: Entry) -> SessionError:
        if entry.gone is not None:
            return SessionNotFoundError(f"session {entry.id!r} {entry.gone}; create a new session")
        return SessionClosedError(
            f"the session manager is shutting down; session {entry.id!r} takes no more calls"
        )

    def _check_open(self) -> None:
        if self._closing:
            raise SessionClosedError("the session manager is shutting down; call refused")

    # -- bookkeeping ----------------------------------------------------------------

    def _token_digest(self, token: str) -> str:
        return token_digest(self._key, token)

    def _publish(self, kind: EventKind, state: SessionState) -> None:
        if self._subscriptions:
            event = SessionEvent(kind, state.id, state.version, self.wall_clock())
            deliver(self._subscriptions, event)

    def _unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    def _session_gone(self, entry: Entry, reason: GoneReason, final: SessionState | None) -> None:
        """Forget a session: it ended, expired, was removed or failed."""
        if entry.gone is not None:
            return
        entry.gone = reason
        forgotten = self._forgotten.get(entry.id)
        if forgotten is not None:
            # The record of a handle kept from before the session was dropped here
            # (another record took its place): its next call finds it gone, where it
            # looked it up anew, found it missing and counted it expired as well.
            forgotten.gone = reason
        if self._sessions.get(entry.id) is entry:
            del self._sessions[entry.id]
            del self._index[entry.id]
        elif self._index.get(entry.id) and self._handed.get(entry.id) is entry:
            del self._index[entry.id], self._handed[entry.id]
        if entry.client_id is not None:
            self._drop_client(entry.client_id)
        if entry.principal is not None:
            self._drop_principal(entry.principal)
        self._counts[reason] += 1
        if self._subscriptions:
            kind: EventKind = "ended" if reason == "failed" else reason
            version = final.version if final is not None else entry.version
            event = SessionEvent(kind, entry.id, version, self.wall_clock())
            deliver(self._subscriptions, event)
        entry.state = None  # free it; the caller holds the final state if it needs it
        if entry.ref is not None:
            entry.ref.stop_soon()  # queued calls get SessionClosedError, then it goes

    # -- time -----------------------------------------------------------------------

    def _deadline(self, entry: Entry) -> float:
        return min(entry.last_active + self.config.idle_ttl, entry.ends)

    def _ttl_due(self, session_id: str, now: float) -> float | None:
        entry = self._sessions.get(session_id)
        if entry is None:
            filed = self._index.get(session_id)
            if not filed:
                return None  # gone (or, with a shared store, forgotten here)
            last_active, _, ends, *_ = marshal.loads(filed)
            due: float = min(last_active + self.config.idle_ttl, ends)
            if due > now:
                return due
            entry = self._record(session_id)
        ref = entry.ref
        if ref is not None and ref.busy:
            # A session with work never expires (I5). Its deadline can only move
            # later, so look again then (past it: every _BUSY_RECHECK seconds).
            return max(self._deadline(entry), now + _BUSY_RECHECK)
        deadline = self._deadline(entry)
        if deadline > now:
            return deadline  # it was used since it was armed: re-arm, lazily
        if self.leases is not None:
            self._forget(entry)  # the store decides when it expires
            return None
        self._session_gone(entry, "expired", entry.state)
        self.store.discard(entry.id)
        return None

    def _forget(self, entry: Entry) -> None:
        """Drop a shared store's session from this process's memory (it idled here);
        it lives on in the store until the store expires it."""
        entry.forgotten = True
        self._forgotten[entry.id] = entry
        if self._sessions.get(entry.id) is entry:
            del self._sessions[entry.id]
            del self._index[entry.id]
        if entry.ref is not None:
            entry.ref.stop_soon()  # its on_stop releases the lease
        elif self.leases is not None:
            self.leases.release(entry, self.now())

    async def _load_index(self) -> None:
        """Adopt the sessions of a store that already holds some."""
        stored = await self.store.index()
        if not stored:
            return
        wall, now = self.wall_clock(), trio.current_time()
        config = self.config
        expired = 0
        for i, item in enumerate(stored):
            idle = max(0.0, wall - item.last_used)
            age = max(0.0, wall - item.created_at)
            lifetime_left = math.inf if config.max_lifetime is None else config.max_lifetime - age
            if idle >= config.idle_ttl or lifetime_left <= 0:
                self.store.discard(item.id)
                expired += 1
            else:
                entry = Entry(item.id, None, now, item.client_id)
                entry.principal = item.principal
                entry.version = item.version
                entry.created_wall = item.created_at
                entry.last_active = now - idle
                entry.ends = now + lifetime_left
                self._file(self._admit(entry))
            if i % 1024 == 1023:
                await trio.lowlevel.checkpoint()
        logger.info(
            "session store %s: adopted %d sessions, discarded %d expired",
            self.store.kind,
            len(self._index),
            expired,
        )

    def _close_subscriptions(self) -> None:
        for subscription in list(self._subscriptions):
            subscription.close()


@asynccontextmanager
async def open_session_manager(
    config: SessionConfig | None = None,
) -> AsyncIterator[SessionManager]:
    """Open a :class:`SessionManager` for the duration of an ``async with`` block.

    Opens the store (adopting the sessions it already holds, minus those whose TTL
    has passed), and on exit stops intake, lets in-flight and queued calls finish
    within ``shutdown_grace`` seconds, flushes the store, ends every subscription
    and leaves no task behind (I9, docs/architecture.md). An exception from the block propagates
    as it is.
    """
    config = config or SessionConfig()
    store = config.store if config.store is not None else MemoryStore()
    body_error: BaseException | None = None
    async with store.open():
        async with open_supervisor(
            shutdown_grace=config.shutdown_grace, schedule_slice=config.schedule_slice
        ) as sup:
            manager = SessionManager(config, store, sup)
            try:
                if manager.leases is not None:  # opens without the index; sweeps it
                    await manager.leases.sweep()
                    sup.start_soon(manager.leases.run)
                    sup.start_soon(manager.leases.follow)
                else:
                    await manager._load_index()  # noqa: SLF001 (the manager's own opener)
                sup.start_soon(manager._ttl.run, manager._ttl_due)  # noqa: SLF001 (same)
                if manager._kept is not None:  # noqa: SLF001 (same)
                    sup.start_soon(manager._kept_due.run, manager._kept_idle)  # noqa: SLF001
                yield manager
            except BaseException as exc:
                body_error = exc  # raised again below, outside the nurseries, unwrapped
            finally:
                manager._closing = True  # noqa: SLF001 (same)
        manager._close_subscriptions()  # noqa: SLF001 (same)
    if body_error is not None:
        raise body_error


def _actor_idle(config: SessionConfig, store: SessionStore) -> tuple[float | None, bool]:
    """How long an idle session's actor stays in memory, and whether a cold call's
    actor leaves at once (see :meth:`SessionManager._spawn`).

    With a memory store and no ``passivate_after``, an idle actor leaves after
    MEMORY_ACTOR_IDLE seconds (at least the time its rate limit takes to refill, so
    that the bucket its successor starts full with is the one it would have had),
    and a cold call's actor at once, unless the sessions are rate limited (a bucket
    one token down would come back full).
    """
    if config.passivate_after is not None or not store.immediate or store.shared:
        return config.passivate_after, False
    limit = config.rate_limit
    if limit is None:
        return MEMORY_ACTOR_IDLE, True
    return max(MEMORY_ACTOR_IDLE, limit.burst / limit.rate), False


async def _load_to_list(store: SessionStore, session_id: str) -> SessionState | None:
    try:
        return await store.load(session_id)
    except SessionError:
        raise
    except Exception as exc:
        raise SessionStoreError(
            f"listing sessions: the store failed to load session {session_id!r}: {exc!r}",
            applied=False,  # a read: nothing to save
        ) from exc


def _filing(entry: Entry) -> bytes:
    """The filed form of a record (see SessionManager._file): its fields that a
    session without an actor keeps, as ``marshal`` bytes."""
    return marshal.dumps(
        (
            entry.last_active,
            entry.version,
            entry.ends,
            entry.created_wall,
            entry.client_id,
            entry.principal,
        )
    )


def _unfiling(session_id: str, filed: bytes) -> Entry:
    """The record that :func:`_filing` filed."""
    last_active, version, ends, created_wall, client_id, principal = marshal.loads(filed)
    entry = Entry(session_id, None, last_active, client_id)
    entry.version = version
    entry.ends = ends
    entry.created_wall = created_wall
    entry.principal = principal
    return entry


def _index_entry(state: SessionState) -> IndexEntry:
    binding = state.client_binding
    return IndexEntry(
        state.id,
        state.created_at,
        state.last_used,
        None if binding is None else binding.client_id,
        state.version,
        state.topic,
        "" if binding is None else binding.token_hmac,
        state.principal,
    )
