"""Where session states live when they must outlive an actor: the store interface,
and the in-memory store."""

from __future__ import annotations

import abc
import heapq
import re
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, ClassVar

import attrs
import trio

from ._errors import SessionConcurrencyError
from ._state import SessionState, compact, expand


@attrs.frozen
class IndexEntry:
    """What the manager needs to know of a stored session without loading it."""

    id: str
    created_at: float  #: wall-clock
    last_used: float  #: wall-clock
    client_id: str | None = None
    version: int = 0  #: the stored version (0: the store does not say)
    topic: str | None = None
    #: The HMAC of a bound session's token (its ``client_binding.token_hmac``), ""
    #: for an unbound session; None: the store does not say (load it to know).
    token_hmac: str | None = None
    #: The session's principal (None: none); told by the stores that tell
    #: ``token_hmac``.
    principal: str | None = None


@attrs.frozen
class Activation:
    """What :meth:`SharedSessionStore.activate` found: the stored state, and whether
    this process now holds the session's activation lease."""

    state: SessionState
    #: The fencing epoch this process holds; None if another process holds a live
    #: lease (this process then serves the session as a guest).
    epoch: int | None
    #: The process holding the lease when ``epoch`` is None.
    holder: str | None = None
    #: Seconds that lease has left (``now`` as the caller gave it).
    lease_left: float = 0.0


class SessionStore(abc.ABC):
    """A place that keeps session states, keyed by id, with compare-and-set on version.

    A manager opens its store once (``async with store.open():``) and uses it from
    many session actors at once; each session's writes come from its own actor, in
    order. Implementations raise :class:`SessionStoreError` (or a subclass) for
    failures, never a bare ``OSError`` or driver error, with ``applied=False`` when
    they know nothing of the call was saved (left out, it is None: maybe saved).
    """

    #: True when :meth:`write_now` commits without waiting (nothing to wait for, as
    #: in memory): session actors then commit without a schedule point of their own.
    immediate: ClassVar[bool] = False
    #: True when :meth:`write` is seen through even if its caller is cancelled: once
    #: called, the write is carried out and its outcome returned or raised, and the
    #: cancellation arrives at the caller's next checkpoint. Session actors need that
    #: (a write they began must not vanish halfway); for stores without it they wrap
    #: each write in a shielded cancel scope, which costs more per write.
    writes_see_through: ClassVar[bool] = False
    #: Short name for logs and stats ("memory", "sqlite", ...).
    kind: ClassVar[str] = "store"
    #: True for a :class:`SharedSessionStore`: several managers (processes) may use
    #: the same sessions through it at once.
    shared: ClassVar[bool] = False

    @abc.abstractmethod
    def open(self) -> AbstractAsyncContextManager[None]:
        """Open the store for the duration of an ``async with`` block; flush on exit."""

    @abc.abstractmethod
    async def load(self, session_id: str) -> SessionState | None:
        """The stored state of ``session_id``, or None."""

    @abc.abstractmethod
    async def write(self, state: SessionState, *, previous_version: int | None) -> None:
        """Store ``state`` if the stored version is still ``previous_version`` (None:
        the session must not be stored yet); SessionConcurrencyError otherwise.

        Returns once the write is durable as the store defines it.
        """

    def write_now(self, state: SessionState, *, previous_version: int | None) -> None:
        """:meth:`write`, for stores whose :attr:`immediate` is True."""
        raise NotImplementedError(f"{type(self).__name__} has no immediate writes")

    @abc.abstractmethod
    async def delete(self, session_id: str) -> bool:
        """Remove ``session_id``; True if it was stored."""

    @abc.abstractmethod
    def discard(self, session_id: str) -> None:
        """Remove ``session_id`` without waiting (used when sessions expire in bulk).

        The removal is durable by the time the store is closed.
        """

    @abc.abstractmethod
    async def index(self) -> list[IndexEntry]:
        """Every stored session, for a manager that opens on an existing store."""

    async def check(self) -> str | None:
        """None while the store can keep what it is given; else what is wrong, in words
        fit for a health report (no paths, no secrets). Looks without changing
        anything."""
        await trio.lowlevel.checkpoint()
        return None

    # -- records: small JSON texts by namespace and key, for the layers above -------

    @abc.abstractmethod
    async def put_record(self, namespace: str, key: str, value: str, *, ttl: float) -> None:
        """Keep ``value`` (JSON text) under ``(namespace, key)``, replacing what was
        there; it expires ``ttl`` seconds after it was last put or read (the store's
        clock). With a shared store every process sees it."""

    @abc.abstractmethod
    async def get_record(self, namespace: str, key: str) -> str | None:
        """The record's value, or None if there is none or it expired; reading it
        starts its ``ttl`` again."""

    @abc.abstractmethod
    async def swap_record(
        self, namespace: str, key: str, value: str, *, expected: str | None, ttl: float
    ) -> bool:
        """:meth:`put_record`, only if the record holds ``expected`` now (None: there is
        none, or it expired), as one atomic step on the store: True if put; False, and
        nothing changed (its ttl included), if it held something else. Two processes
        that read a record and each swap their change into it cannot both succeed: the
        one that loses reads it again."""

    @abc.abstractmethod
    async def delete_record(self, namespace: str, key: str) -> bool:
        """Remove the record; True if it was there (and not expired)."""

    # -- broadcasts: short messages to every process on the store, for the layers above

    #: Whether :meth:`broadcast` reaches the other processes on the store.
    broadcasts: ClassVar[bool] = False

    async def broadcast(self, channel: str, message: str) -> bool:
        """Send ``message`` to every :meth:`listen` of ``channel`` on this store, in
        every process (this one's included), at most once and without waiting for
        them; True if sent. A store that is not shared has nobody to send to: False.
        ``channel`` is a lowercase word other than "events"."""
        check_channel(channel)
        await trio.lowlevel.checkpoint()
        return False

    async def listen(
        self,
        channel: str,
        deliver: Callable[[str], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Call ``deliver(message)`` for each message broadcast on ``channel`` once this
        has started (``task_status.started()``), until cancelled. SessionStoreError if
        the store stops delivering them. By default there are none: this waits."""
        check_channel(channel)
        task_status.started()
        await trio.sleep_forever()


class SharedSessionStore(SessionStore):
    """A store that several session managers, in several processes, use at once.

    The store decides: every change is a compare-and-set on the stored version (and,
    for an owner's write, on the fencing epoch) in one atomic store operation, so no
    acknowledged write is lost or forked whatever the processes do. An activation
    lease makes one process the usual owner of a session; it only decides who caches
    the state and who may run exclusive operations, never what commits. Idle
    deadlines, limits and listing live in the store.

    Times given as ``now`` and deadlines are wall-clock seconds from the manager's
    ``wall_clock``; correctness never depends on them.
    """

    shared = True

    @abc.abstractmethod
    async def activate(
        self, session_id: str, *, node: str, lease: float, now: float, force: bool = False
    ) -> Activation | None:
        """Load the session and, unless another process holds a live lease (or with
        ``force``), take its lease for ``node`` with a new fencing epoch, in one
        atomic step. None if the session is not stored."""

    @abc.abstractmethod
    async def write(
        self,
        state: SessionState,
        *,
        previous_version: int | None,
        epoch: int | None = None,
        expires_at: float | None = None,
    ) -> None:
        """Store ``state`` if the stored version is ``previous_version`` and (with
        ``epoch``) the stored epoch is ``epoch``; set its idle deadline to
        ``expires_at``. SessionConcurrencyError with the stored version (``actual``
        -1: not stored) or SessionFencedError with the stored epoch otherwise."""

    @abc.abstractmethod
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
        """Store a new session, leased to ``node`` (epoch 1), if the store holds fewer
        than ``max_sessions`` sessions, ``client_id`` fewer than ``max_per_client``
        and the state's principal (if any) fewer than ``max_per_principal``
        (SessionLimitError otherwise), in one atomic step that first removes the
        sessions whose deadline passed. Returns those (id, version)."""

    @abc.abstractmethod
    async def version(self, session_id: str, *, now: float | None = None) -> int | None:
        """The stored version (None: not stored); what an owner checks before it
        answers a read from its cache. With ``now``, a session past its deadline
        whose lease ran out counts as not stored (expired, not yet swept)."""

    @abc.abstractmethod
    async def renew(
        self, node: str, leases: dict[str, int], *, until: float, busy_until: float | None
    ) -> set[str]:
        """Extend ``node``'s leases (session id -> epoch) to ``until``, and push the
        deadlines of those sessions to at least ``busy_until`` (busy sessions never
        expire). Returns the ids whose lease was lost (taken over, or gone)."""

    @abc.abstractmethod
    def release(self, session_id: str, *, node: str, epoch: int, expires_at: float) -> None:
        """Give up a lease, without waiting (best effort: it also runs out), and push
        the deadline to at least ``expires_at`` (its owner's last use)."""

    @abc.abstractmethod
    def touch(self, session_id: str, *, expires_at: float) -> None:
        """Push the session's deadline to at least ``expires_at``, without waiting
        (reads count as use; callers coalesce these)."""

    @abc.abstractmethod
    async def remove(self, session_id: str, *, version: int | None) -> bool:
        """Delete the session if it is stored at ``version`` (None: whatever its
        version); True if it was deleted, False if it was not stored,
        SessionConcurrencyError with the stored version otherwise."""

    @abc.abstractmethod
    async def expire_due(
        self, now: float, *, idle_before: float, limit: int, spare: Collection[str] = ()
    ) -> list[tuple[str, int]]:
        """Delete up to ``limit`` sessions whose deadline has passed and whose lease
        (if any) has run out, except those in ``spare`` (the caller's own, which it
        expires itself): a conditional delete, so a session anyone used since stays.
        (A session stored without a deadline counts as due once its ``last_used`` is
        before ``idle_before``.) Returns their (id, version)."""

    @abc.abstractmethod
    async def count(self) -> int:
        """Sessions stored (those past their deadline count until removed)."""

    @abc.abstractmethod
    async def page(self, after: tuple[float, str] | None, limit: int) -> list[IndexEntry]:
        """Up to ``limit`` stored sessions ordered by (created_at, id), after the
        position ``after``; with their ``topic`` and ``token_hmac`` (which listing
        needs), so that listing loads no state."""

    async def follow(self, deliver: Callable[[str, str, int], None]) -> None:
        """Call ``deliver(kind, session_id, version)`` for each change that others
        (other store objects, other processes) commit through the store, in commit
        order per session, at most once, until cancelled; ``kind`` is "created",
        "updated", "removed" or "expired". By default there are none to follow: this
        waits until cancelled."""
        await trio.sleep_forever()


class MemoryStore(SessionStore):
    """Keeps states in a dict: the default. Nothing survives the process."""

    immediate = True
    kind = "memory"

    def __init__(self, *, clock: Callable[[], float] | None = None) -> None:
        # The sessions whose state is not kept as bytes: a state, or its compact form
        # as a tuple (see keep_idle).
        self._states: dict[str, SessionState | tuple[Any, ...]] = {}
        # Every stored session: its compact form as bytes, or b"" while it is in
        # _states. A dict of strings and bytes is one the collector never tracks,
        # however many sessions it holds (a state put into it, tracked, would have it
        # walked whole by the next collections). A session keeps its key while it
        # comes and goes from _states: a dict that keeps losing and gaining keys is
        # rebuilt whole every so often, which at a million keys is a long call.
        self._compact: dict[str, bytes] = {}
        # Records: (namespace, key) -> (value, ttl, expires_at), plus a lazy heap of
        # deadlines so that expired records leave without scans.
        self._clock = clock
        self._records: dict[tuple[str, str], tuple[str, float, float]] = {}
        self._record_deadlines: list[tuple[float, tuple[str, str]]] = []

    def __len__(self) -> int:
        return len(self._compact)

    @asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        await trio.lowlevel.checkpoint()
        yield

    async def load(self, session_id: str) -> SessionState | None:
        await trio.lowlevel.checkpoint()
        return self.load_now(session_id)

    def load_now(self, session_id: str) -> SessionState | None:
        """:meth:`load` without waiting (a new state built from a compact one)."""
        held = self._states.get(session_id)
        if held is None:
            blob = self._compact.get(session_id)
            return expand(session_id, blob) if blob else None
        if type(held) is tuple:
            return expand(session_id, held)
        return held  # type: ignore[return-value]

    def take_up(self, session_id: str) -> SessionState | None:
        """:meth:`load_now` for the actor that takes the session up: the store then
        holds that state itself (not a copy of it) until :meth:`keep_idle`."""
        held = self._states.get(session_id)
        if held is None:
            blob = self._compact.get(session_id)
            if not blob:
                return None
            state = self._states[session_id] = expand(session_id, blob)
            self._compact[session_id] = b""
        elif type(held) is tuple:
            state = self._states[session_id] = expand(session_id, held)
        else:
            return held  # type: ignore[return-value]
        return state

    async def write(self, state: SessionState, *, previous_version: int | None) -> None:
        await trio.lowlevel.checkpoint()
        self.write_now(state, previous_version=previous_version)

    def write_now(self, state: SessionState, *, previous_version: int | None) -> None:
        current = self._states.get(state.id)
        if type(current) is not SessionState or current.version != previous_version:
            self._check_version(state, previous_version)
            self._compact[state.id] = b""
        self._states[state.id] = state

    def keep_idle(self, state: SessionState, *, previous_version: int | None) -> None:
        """:meth:`write_now` for a session whose state nothing in memory holds any
        more (its actor left, or has not come yet): the store keeps it compact
        (``_state.compact``), which the garbage collector does not walk; :meth:`take_up`
        builds the state again. (A subclass of SessionState is kept as it is.)"""
        self._check_version(state, previous_version)
        held = compact(state) if type(state) is SessionState else state
        if type(held) is bytes:
            self._states.pop(state.id, None)
            self._compact[state.id] = held
        else:
            self._compact[state.id] = b""
            self._states[state.id] = held  # type: ignore[assignment]

    def _check_version(self, state: SessionState, previous_version: int | None) -> None:
        current = self.load_now(state.id)  # (compact only if no actor has it)
        actual = None if current is None else current.version
        if actual != previous_version:
            raise SessionConcurrencyError(
                f"session {state.id!r}: store holds version {actual}, "
                f"expected {previous_version}; another writer got there first",
                expected=-1 if previous_version is None else previous_version,
                actual=-1 if actual is None else actual,
            )

    async def delete(self, session_id: str) -> bool:
        await trio.lowlevel.checkpoint()
        self._states.pop(session_id, None)
        return self._compact.pop(session_id, None) is not None

    def discard(self, session_id: str) -> None:
        self._states.pop(session_id, None)
        self._compact.pop(session_id, None)

    async def index(self) -> list[IndexEntry]:
        await trio.lowlevel.checkpoint()
        return [
            IndexEntry(
                s.id,
                s.created_at,
                s.last_used,
                s.client_binding.client_id if s.client_binding else None,
                s.version,
                s.topic,
                s.client_binding.token_hmac if s.client_binding else "",
                s.principal,
            )
            for s in map(self._state, list(self._compact))
        ]

    def _state(self, session_id: str) -> SessionState:
        state = self.load_now(session_id)
        assert state is not None
        return state

    # -- records -------------------------------------------------------------------

    def _now(self) -> float:
        return self._clock() if self._clock is not None else trio.current_time()

    def _purge_records(self, now: float) -> None:
        deadlines = self._record_deadlines
        while deadlines and deadlines[0][0] <= now:
            _, name = heapq.heappop(deadlines)
            record = self._records.get(name)
            if record is not None and record[2] <= now:
                del self._records[name]

    async def put_record(self, namespace: str, key: str, value: str, *, ttl: float) -> None:
        """See :meth:`SessionStore.put_record`; times are Trio's clock by default."""
        check_record(namespace, key, value, ttl)
        await trio.lowlevel.checkpoint()
        now = self._now()
        self._purge_records(now)
        self._records[namespace, key] = (value, ttl, now + ttl)
        heapq.heappush(self._record_deadlines, (now + ttl, (namespace, key)))

    async def get_record(self, namespace: str, key: str) -> str | None:
        await trio.lowlevel.checkpoint()
        now = self._now()
        self._purge_records(now)
        record = self._records.get((namespace, key))
        if record is None:
            return None
        value, ttl, _ = record
        self._records[namespace, key] = (value, ttl, now + ttl)
        heapq.heappush(self._record_deadlines, (now + ttl, (namespace, key)))
        return value

    async def swap_record(
        self, namespace: str, key: str, value: str, *, expected: str | None, ttl: float
    ) -> bool:
        check_record(namespace, key, value, ttl)
        check_expected(expected)
        await trio.lowlevel.checkpoint()
        now = self._now()
        self._purge_records(now)
        record = self._records.get((namespace, key))
        if (None if record is None else record[0]) != expected:
            return False
        self._records[namespace, key] = (value, ttl, now + ttl)
        heapq.heappush(self._record_deadlines, (now + ttl, (namespace, key)))
        return True

    async def delete_record(self, namespace: str, key: str) -> bool:
        await trio.lowlevel.checkpoint()
        self._purge_records(self._now())
        return self._records.pop((namespace, key), None) is not None


def check_channel(channel: str) -> None:
    """ValueError unless ``channel`` may name a broadcast channel."""
    if not isinstance(channel, str) or re.fullmatch("[a-z]{1,32}", channel) is None:
        raise ValueError(f"a broadcast channel is a lowercase word (a-z, 1 to 32), not {channel!r}")
    if channel == "events":
        raise ValueError("the channel 'events' is the store's own (see follow)")


def check_expected(expected: str | None) -> None:
    """TypeError unless ``expected`` (what :meth:`SessionStore.swap_record` compares
    the record with) is a str or None."""
    if expected is not None and not isinstance(expected, str):
        raise TypeError(
            f"a record's expected value must be JSON text (a str) or None, "
            f"not {type(expected).__name__}"
        )


def check_record(namespace: str, key: str, value: str, ttl: float) -> None:
    """ValueError (or TypeError) naming what is wrong with a record to put."""
    if not isinstance(value, str):
        raise TypeError(f"a record's value must be JSON text (a str), not {type(value).__name__}")
    if not isinstance(namespace, str) or not namespace:
        raise ValueError(f"a record's namespace must be a non-empty str, not {namespace!r}")
    if not isinstance(key, str) or not key:
        raise ValueError(f"a record's key must be a non-empty str, not {key!r}")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < float("inf"):
        raise ValueError(f"a record's ttl must be a finite number of seconds > 0, not {ttl!r}")
