"""Where session states live when they must outlive an actor: the store interface,
and the in-memory store."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, ClassVar, cast

import attrs
import trio

from ._errors import SessionConcurrencyError
from ._state import SessionState


@attrs.frozen
class IndexEntry:
    """What the manager needs to know of a stored session without loading it."""

    id: str
    created_at: float  #: wall-clock
    last_used: float  #: wall-clock
    client_id: str | None = None
    version: int = 0  #: the stored version (0: the store does not say)


class SessionStore(abc.ABC):
    """A place that keeps session states, keyed by id, with compare-and-set on version.

    A manager opens its store once (``async with store.open():``) and uses it from
    many session actors at once; each session's writes come from its own actor, in
    order. Implementations raise :class:`SessionStoreError` (or a subclass) for
    failures, never a bare ``OSError`` or driver error.
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

    @property
    def extensions(self) -> dict[str, Any]:
        """Per-store objects of the layers built on the sessions (such as
        :mod:`triact.work`), by a key each layer chooses (its module name).

        They live exactly as long as this store object: a layer keeps here what it
        attaches to the store (with :class:`MemoryStore`, its data itself). The
        sessions layer never reads them.
        """
        return cast(dict[str, Any], self.__dict__.setdefault("_extensions", {}))

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


class MemoryStore(SessionStore):
    """Keeps states in a dict: the default. Nothing survives the process."""

    immediate = True
    kind = "memory"

    def __init__(self) -> None:
        self._states: dict[str, SessionState] = {}

    def __len__(self) -> int:
        return len(self._states)

    @asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        await trio.lowlevel.checkpoint()
        yield

    async def load(self, session_id: str) -> SessionState | None:
        await trio.lowlevel.checkpoint()
        return self._states.get(session_id)

    async def write(self, state: SessionState, *, previous_version: int | None) -> None:
        await trio.lowlevel.checkpoint()
        self.write_now(state, previous_version=previous_version)

    def write_now(self, state: SessionState, *, previous_version: int | None) -> None:
        current = self._states.get(state.id)
        actual = None if current is None else current.version
        if actual != previous_version:
            raise SessionConcurrencyError(
                f"session {state.id!r}: store holds version {actual}, "
                f"expected {previous_version}; another writer got there first",
                expected=-1 if previous_version is None else previous_version,
                actual=-1 if actual is None else actual,
            )
        self._states[state.id] = state

    async def delete(self, session_id: str) -> bool:
        await trio.lowlevel.checkpoint()
        return self._states.pop(session_id, None) is not None

    def discard(self, session_id: str) -> None:
        self._states.pop(session_id, None)

    async def index(self) -> list[IndexEntry]:
        await trio.lowlevel.checkpoint()
        return [
            IndexEntry(
                s.id,
                s.created_at,
                s.last_used,
                s.client_binding.client_id if s.client_binding else None,
                s.version,
            )
            for s in self._states.values()
        ]
