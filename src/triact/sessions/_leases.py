"""What a manager does with a shared store besides committing: its sessions' records
(:class:`Entry`), and for a :class:`SharedSessionStore` the activation leases it
renews, the idle deadlines it pushes, and the sweep that expires sessions in the
store.

The store is the authority on time and existence: a process expires a session only
by the store's conditional delete (the deadline passed and no live lease), so a
session that any process used since stays. Times for the store are the manager's
wall clock (all processes on one machine share it); loops run on Trio's clock.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import trio

from ._config import SessionConfig
from ._store import SharedSessionStore

if TYPE_CHECKING:
    from ..actors import ActorRef
    from . import _ops as ops
    from ._actor import SessionActor
    from ._cycles import Hold
    from ._security import SessionGuard
    from ._state import SessionState

logger = logging.getLogger("triact.sessions")

#: After following a shared store's events failed, the first pause before following
#: again (seconds), doubled after each failure in a row up to FOLLOW_RETRY_MAX.
FOLLOW_RETRY = 0.5
FOLLOW_RETRY_MAX = 10.0

GoneReason = Literal["ended", "expired", "removed", "failed"]

#: Reads push a session's deadline in the store at most this often (per session).
TOUCH_INTERVAL = 1.0
#: How often a manager asks a shared store for the sessions whose deadline passed:
#: with a shared store this is the granularity of expiry.
SWEEP_INTERVAL = 1.0
_SWEEP_BATCH = 1000
_NEVER = -float("inf")  # one float for every entry (a float each is 24 bytes)
_NEVER_ENDS = float("inf")


class Entry:
    """The manager's record of one session it knows of (for a shared store: one that
    this process has used lately; others' sessions are found in the store)."""

    __slots__ = (
        "__weakref__",
        "actor",
        "client_id",
        "created_wall",
        "ends",
        "epoch",
        "forgotten",
        "gone",
        "guard",
        "hold",
        "id",
        "last_active",
        "principal",
        "ref",
        "state",
        "touched",
        "version",
    )

    def __init__(
        self, session_id: str, state: SessionState | None, now: float, client_id: str | None
    ) -> None:
        self.id = session_id
        #: The last committed state; None while passivated with a durable store.
        self.state = state
        #: The version of the state in the store, kept while ``state`` is None (for
        #: the events of a passivated session).
        self.version = 0 if state is None else state.version
        self.ref: ActorRef[ops.Op, Any] | None = None
        #: The actor that ``ref`` runs now (the last one made for this session).
        self.actor: SessionActor | None = None
        #: Trio time at which ``max_lifetime`` ends the session (inf: it does not; one
        #: float shared by all, where a creation time of each would cost 24 bytes).
        self.ends = _NEVER_ENDS
        #: Wall-clock creation time (the store's order of sessions).
        self.created_wall = 0.0 if state is None else state.created_at
        self.last_active = now  # Trio clock
        self.client_id = client_id
        #: Its principal, counted for ``max_sessions_per_principal`` (a store that is
        #: not shared; None otherwise).
        self.principal: str | None = None
        #: Why the session is gone ("ended", "expired", ...), None while it lives.
        self.gone: GoneReason | None = None
        #: The session's token checks and security events not yet committed (made by
        #: its first actor; kept here so that passivation keeps them).
        self.guard: SessionGuard | None = None
        #: The session's async update while it runs (see ``_cycles``).
        self.hold: Hold | None = None
        #: Shared store: the fencing epoch of this process's lease (None: a guest).
        self.epoch: int | None = None
        #: Shared store: Trio time of the last deadline push for a read.
        self.touched = _NEVER
        #: Shared store: dropped from this process's memory while the session lives on
        #: in the store; a handle that still holds this record finds the session anew.
        self.forgotten = False


class Leases:
    """A manager's side of a shared store: its node id, its leases and deadlines."""

    def __init__(
        self,
        store: SharedSessionStore,
        config: SessionConfig,
        entries: dict[str, Entry],
        on_expired: Callable[[str, int], None],
        on_event: Callable[[str, str, int], None] | None = None,
    ) -> None:
        self.store = store
        self.config = config
        #: This manager's name in the store's lease records.
        self.node = secrets.token_hex(8)
        self._entries = entries
        self._on_expired = on_expired
        self._on_event = on_event

    async def follow(self) -> None:
        """Pass the changes other processes commit to the manager, until cancelled
        (if the store has them to give). When following fails (the store's server
        restarted, say), it starts again after FOLLOW_RETRY seconds, doubling up to
        FOLLOW_RETRY_MAX while it keeps failing; the loss and the recovery are logged
        once each. Changes committed meanwhile are not delivered (events are at most
        once)."""
        deliver = self._on_event
        if deliver is None:
            await trio.sleep_forever()
            return
        pause = FOLLOW_RETRY
        lost = False

        def delivered(kind: str, session_id: str, version: int) -> None:
            nonlocal lost, pause
            if lost:
                logger.warning("shared session store: following its events again")
                lost, pause = False, FOLLOW_RETRY
            assert deliver is not None
            deliver(kind, session_id, version)

        while True:
            try:
                await self.store.follow(delivered)
            except Exception as exc:
                if not lost:
                    logger.warning(
                        "shared session store: following its events failed (%r); "
                        "trying again, changes made meanwhile by other processes are "
                        "not delivered as events",
                        exc,
                    )
                    lost = True
                await trio.sleep(pause)
                pause = min(pause * 2, FOLLOW_RETRY_MAX)

    def expires_at(self, created_at: float, now: float) -> float:
        """The idle deadline (wall clock) of a session used at ``now``."""
        deadline = now + self.config.idle_ttl
        if self.config.max_lifetime is not None:
            deadline = min(deadline, created_at + self.config.max_lifetime)
        return deadline

    def touch(self, entry: Entry, state: SessionState, now: float) -> None:
        """A read is use: push the deadline in the store, at most every
        TOUCH_INTERVAL seconds (Trio's clock ``now``) per session."""
        if now - entry.touched >= min(TOUCH_INTERVAL, self.config.idle_ttl / 4):
            entry.touched = now
            wall = self.config.wall_clock()
            self.store.touch(entry.id, expires_at=self.expires_at(state.created_at, wall))

    def release(self, entry: Entry, now: float) -> None:
        """Give up the entry's lease if it holds one (its actor left memory at Trio
        time ``now``), leaving the deadline its last use here gives in the store."""
        wall = self.config.wall_clock()
        last_used = wall - (now - entry.last_active)  # on the wall clock
        expires_at = self.expires_at(entry.created_wall, last_used)
        if entry.epoch is None:
            self.store.touch(entry.id, expires_at=expires_at)
        else:
            self.store.release(entry.id, node=self.node, epoch=entry.epoch, expires_at=expires_at)
            entry.epoch = None

    async def activate(self, entry: Entry, *, force: bool = False) -> SessionState | None:
        """Load the session and take its lease if it is free (or with ``force``);
        None if it is not stored. Leaves the epoch on the entry (None: a guest)."""
        activation = await self.store.activate(
            entry.id,
            node=self.node,
            lease=self.config.lease,
            now=self.config.wall_clock(),
            force=force,
        )
        if activation is None:
            return None
        self.leased(entry, activation.epoch)
        return activation.state

    def leased(self, entry: Entry, epoch: int | None) -> None:
        """Note that ``entry`` now holds the lease of ``epoch`` (None: none)."""
        entry.epoch = epoch

    async def run(self) -> None:
        """Renew leases (every third of the lease at least) and sweep the store's
        expired sessions (every SWEEP_INTERVAL seconds at most), until cancelled.

        One loop, one step after the other: a single timer, so that a test's
        autojump clock advances only as far as the work it waits for."""
        config = self.config
        period = min(SWEEP_INTERVAL, config.lease / 3, config.idle_ttl)
        while True:
            await trio.sleep(period)
            for step in (self.renew, self.sweep):
                try:
                    await step()
                except Exception as exc:  # the next round tries again; calls see errors
                    logger.warning("shared session store: %s failed: %r", step.__name__, exc)

    async def renew(self) -> None:
        """Extend the leases of the sessions in this process's memory; a busy one's
        deadline moves on too (a busy session never expires). Lost leases make their
        sessions guests here."""
        busy: dict[str, int] = {}
        idle: dict[str, int] = {}
        for entry in self._entries.values():
            if entry.epoch is not None and entry.ref is not None:
                (busy if entry.ref.busy else idle)[entry.id] = entry.epoch

        now = self.config.wall_clock()
        until = now + self.config.lease
        lost: set[str] = set()
        if busy:
            busy_until = now + self.config.idle_ttl
            lost |= await self.store.renew(self.node, busy, until=until, busy_until=busy_until)
        if idle:
            lost |= await self.store.renew(self.node, idle, until=until, busy_until=None)
        held = {**busy, **idle}
        for session_id in lost:
            lost_entry = self._entries.get(session_id)
            if lost_entry is not None and lost_entry.epoch == held.get(session_id):
                lost_entry.epoch = None

    async def sweep(self) -> None:
        """Expire the sessions whose deadline passed in the store (a conditional
        delete), and report each one."""
        now = self.config.wall_clock()
        # The sessions this process knows are its own to let go (its reaper does, once
        # they idled here, leaving their deadline from their last use here).
        spare = list(self._entries)
        expired = await self.store.expire_due(
            now, idle_before=now - self.config.idle_ttl, limit=_SWEEP_BATCH, spare=spare
        )
        for session_id, version in expired:
            self._on_expired(session_id, version)
