"""Fault injection: a store that fails, stalls or corrupts on a seeded schedule, update
functions that raise or stall, calls that are cancelled or time out, and clock jumps
past TTLs."""

from __future__ import annotations

import errno
import random
import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Literal, TypeVar

import attrs
import trio
import trio.testing

from ..sessions import (
    IndexEntry,
    SessionConfig,
    SessionState,
    SessionStore,
    SessionStoreError,
    decode_state,
    encode_state,
)

T = TypeVar("T")

FaultKind = Literal["fail", "stall", "corrupt"]
StoreOp = Literal["load", "write", "delete", "index"]

#: The reaper looks at a session that was busy at its deadline again this often, so
#: this is how much later than ``idle_ttl`` such a session may expire (docs/sessions.md).
TTL_GRANULARITY = 1.0


class InjectedError(Exception):
    """Raised on purpose by an update function from :func:`failing_update`."""


@attrs.frozen
class Fault:
    """A fault for the ``at``-th call (0-based) of a :class:`FaultyStore`."""

    kind: FaultKind
    at: int


@attrs.frozen
class InjectedFault:
    """A record of one fault a :class:`FaultyStore` injected."""

    kind: FaultKind
    operation: StoreOp
    session_id: str | None
    at: float  #: Trio clock time
    call: int  #: which call of the store (0-based)


class FaultyStore(SessionStore):
    """Wraps any :class:`~triact.SessionStore` and, on a schedule, makes its calls fail,
    stall or return corrupt data, as a real store would under a full disk, a locked
    database or a damaged file.

    * ``fail``: the call raises :class:`~triact.SessionStoreError` caused by
      ``sqlite3.OperationalError('database is locked')`` or ``OSError(ENOSPC)``,
      before reaching the inner store (nothing is written), as SqliteStore reports a
      failed transaction.
    * ``stall``: the call sleeps ``stall`` seconds (Trio's clock) on its way in.
    * ``corrupt``: a load returns a damaged record: it raises
      :class:`~triact.SessionDataError` from the real decoder.

    Each call of the store (``index`` included) draws from ``random.Random(seed)``
    against ``fail_rate``, ``stall_rate`` and ``corrupt_rate``, or takes its fault
    from ``schedule`` (explicit faults by call number, counting from 0: a manager's
    first call is ``index``, as it opens). Only calls named in ``operations`` are
    harmed, and fail only if named in ``fail_on`` too. :attr:`injected` counts what
    was injected; :attr:`log` lists it. Set :attr:`armed` to False to pass every call
    through unharmed (the schedule still advances).

    The wrapper's writes are never immediate, even over a MemoryStore: every commit
    awaits the store, so that stalls can happen (the manager then takes its durable
    path, with group commit).
    """

    immediate = False
    kind = "faulty"

    def __init__(
        self,
        inner: SessionStore,
        *,
        seed: int | None = 0,
        fail_rate: float = 0.0,
        stall_rate: float = 0.0,
        stall: float = 1.0,
        corrupt_rate: float = 0.0,
        schedule: Iterable[Fault] = (),
        operations: Iterable[StoreOp] = ("load", "write", "delete"),
        fail_on: Iterable[StoreOp] = ("load", "write", "delete", "index"),
    ) -> None:
        for name, rate in (
            ("fail_rate", fail_rate),
            ("stall_rate", stall_rate),
            ("corrupt_rate", corrupt_rate),
        ):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"FaultyStore {name} must be within [0, 1], got {rate!r}")
        if fail_rate + stall_rate + corrupt_rate > 1.0:
            raise ValueError("FaultyStore rates must add up to at most 1")
        if not stall >= 0:
            raise ValueError(f"FaultyStore stall must be >= 0 seconds, got {stall!r}")
        self.inner = inner
        self.fail_rate = fail_rate
        self.stall_rate = stall_rate
        self.stall = stall
        self.corrupt_rate = corrupt_rate
        self.operations = frozenset(operations)
        self.fail_on = frozenset(fail_on)
        self.schedule = {fault.at: fault.kind for fault in schedule}
        self.armed = True
        #: How many faults of each kind were injected.
        self.injected: Counter[FaultKind] = Counter()
        #: Every fault injected, in order.
        self.log: list[InjectedFault] = []
        self._random = random.Random(seed)
        self._calls = 0

    def __repr__(self) -> str:
        return f"FaultyStore({self.inner!r})"

    def _draw(self, operation: StoreOp, session_id: str | None) -> FaultKind | None:
        call = self._calls
        self._calls += 1
        roll = self._random.random()  # drawn every call, so the schedule stays seeded
        if not self.armed or operation not in self.operations:
            return None
        kind = self.schedule.get(call)
        if kind is None:
            if roll < self.fail_rate:
                kind = "fail"
            elif roll < self.fail_rate + self.stall_rate:
                kind = "stall"
            elif roll < self.fail_rate + self.stall_rate + self.corrupt_rate:
                kind = "corrupt"
        if kind == "corrupt" and operation != "load":
            kind = "fail"  # only loads return data to corrupt
        if kind == "fail" and operation not in self.fail_on:
            kind = None
        if kind is not None:
            self.injected[kind] += 1
            self.log.append(InjectedFault(kind, operation, session_id, trio.current_time(), call))
        return kind

    def _error(self, operation: StoreOp, session_id: str | None) -> SessionStoreError:
        cause: Exception
        if self._random.random() < 0.5:
            cause = sqlite3.OperationalError("database is locked")
        else:
            cause = OSError(errno.ENOSPC, "No space left on device")
        error = SessionStoreError(
            f"session {session_id!r}: the store failed to {operation} it (injected): {cause!r}"
        )
        error.__cause__ = cause
        return error

    async def _enter(self, operation: StoreOp, session_id: str | None) -> FaultKind | None:
        kind = self._draw(operation, session_id)
        if kind == "fail":
            await trio.lowlevel.checkpoint()
            raise self._error(operation, session_id)
        if kind == "stall":
            await trio.sleep(self.stall)
        return kind

    # -- the store interface ------------------------------------------------------

    def open(self) -> AbstractAsyncContextManager[None]:
        return self.inner.open()

    async def load(self, session_id: str) -> SessionState | None:
        kind = await self._enter("load", session_id)
        state = await self.inner.load(session_id)
        if kind == "corrupt" and state is not None:
            text = encode_state(state)
            cut = self._random.randrange(len(text))  # every proper prefix is invalid JSON
            return decode_state(text[:cut], where=f"session {session_id!r} (corrupted)")
        return state

    async def write(self, state: SessionState, *, previous_version: int | None) -> None:
        await self._enter("write", state.id)
        if self.inner.immediate:
            # Land the write before yielding, as the inner store would: the wrapper
            # adds no window of its own besides the faults it injects.
            self.inner.write_now(state, previous_version=previous_version)
            await trio.lowlevel.checkpoint()
        else:
            await self.inner.write(state, previous_version=previous_version)

    async def delete(self, session_id: str) -> bool:
        await self._enter("delete", session_id)
        return await self.inner.delete(session_id)

    def discard(self, session_id: str) -> None:
        self.inner.discard(session_id)

    async def index(self) -> list[IndexEntry]:
        await self._enter("index", None)
        return await self.inner.index()

    async def put_record(self, namespace: str, key: str, value: str, *, ttl: float) -> None:
        await self.inner.put_record(namespace, key, value, ttl=ttl)

    async def swap_record(
        self, namespace: str, key: str, value: str, *, expected: str | None, ttl: float
    ) -> bool:
        return await self.inner.swap_record(namespace, key, value, expected=expected, ttl=ttl)

    async def get_record(self, namespace: str, key: str) -> str | None:
        return await self.inner.get_record(namespace, key)

    async def delete_record(self, namespace: str, key: str) -> bool:
        return await self.inner.delete_record(namespace, key)


# -- update functions ---------------------------------------------------------------


def failing_update(
    error: BaseException | Callable[[], BaseException] = InjectedError,
) -> Callable[[SessionState], SessionState]:
    """An update function that raises ``error`` (an instance or a factory): the session
    must stay exactly as it was (I2, docs/architecture.md)."""

    def fail(state: SessionState) -> SessionState:
        raise error() if callable(error) else error

    return fail


def slow_update(
    fn: Callable[[SessionState], SessionState], seconds: float
) -> Callable[[SessionState], Awaitable[SessionState]]:
    """``fn`` as an async update function that sleeps ``seconds`` first (during which a
    cancellation or a removal can catch it)."""

    async def slowly(state: SessionState) -> SessionState:
        await trio.sleep(seconds)
        return fn(state)

    return slowly


# -- cancellation and timeouts ------------------------------------------------------


@attrs.frozen
class Cancelled:
    """What :func:`call_with_timeout` returns for a call that did not finish in time."""

    after: float


async def call_with_timeout(
    fn: Callable[[], Awaitable[T]], timeout: float, *, by_task: bool = False
) -> T | Cancelled:
    """``await fn()``, cancelled after ``timeout`` seconds: by a deadline, or (with
    ``by_task``) by another task calling ``cancel()``, as an MCP
    ``notifications/cancelled`` does. Returns :class:`Cancelled` if it was cut off."""
    if not by_task:
        with trio.move_on_after(timeout):
            return await fn()
        return Cancelled(timeout)
    try:
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as scope:
                nursery.start_soon(_cancel_later, scope, timeout)
                result = await fn()
                nursery.cancel_scope.cancel()
                return result
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # the call's own error, alone: raise it as it is
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    return Cancelled(timeout)


async def _cancel_later(scope: trio.CancelScope, delay: float) -> None:
    await trio.sleep(delay)
    scope.cancel()


# -- time ---------------------------------------------------------------------------


async def jump_past_ttl(
    clock: trio.testing.MockClock, config: SessionConfig, *, extra: float = 0.001
) -> float:
    """Move ``clock`` past ``config.idle_ttl`` plus the reaper's granularity, then let
    the reaper run; returns the seconds jumped. Every session idle since now has
    expired when this returns."""
    seconds = config.idle_ttl + TTL_GRANULARITY + extra
    clock.jump(seconds)
    await trio.testing.wait_all_tasks_blocked()
    return seconds


async def advance(clock: trio.testing.MockClock, seconds: float) -> None:
    """Move ``clock`` forward by ``seconds`` and let every task that was due run."""
    clock.jump(seconds)
    await trio.testing.wait_all_tasks_blocked()
