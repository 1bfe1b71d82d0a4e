"""A reference model: the session semantics as plain sequential code.

:class:`ReferenceModel` holds sessions as (version, data) pairs and applies calls one
at a time, raising the same exception types as a :class:`~triact.SessionManager`. A
test runs the same calls against both and compares; the history checker replays the
serial order it finds through a :class:`ModelSession`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from ..sessions import SessionConcurrencyError, SessionNotFoundError, SessionState

DataFn = Callable[[Mapping[str, Any]], Mapping[str, Any]]


def _frozen(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


def _keys(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen(eq=True, repr=False)
class DataChange:
    """A change to a session's ``data``, with the semantics of the ``session_update``
    MCP tool: delete ``delete``, then set ``set``, then add ``increment`` to numbers
    (a missing key counts as 0; a key holding something else raises ValueError).

    Calling it on a :class:`~triact.SessionState` returns the changed state, so it can
    be passed to :meth:`Session.update` as it is.
    """

    set: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen)
    increment: Mapping[str, int | float] = attrs.field(factory=dict, converter=_frozen)
    delete: tuple[str, ...] = attrs.field(default=(), converter=_keys)

    def __hash__(self) -> int:  # mappings are not hashable; identity is enough here
        return id(self)

    def __repr__(self) -> str:
        parts = [f"set={dict(self.set)!r}"] if self.set else []
        if self.increment:
            parts.append(f"increment={dict(self.increment)!r}")
        if self.delete:
            parts.append(f"delete={self.delete!r}")
        return f"DataChange({', '.join(parts)})"

    def apply(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """The data after this change."""
        out = dict(data)
        for key in self.delete:
            out.pop(key, None)
        out.update(self.set)
        for key, delta in self.increment.items():
            old = out.get(key, 0)
            if type(old) not in (int, float):
                raise ValueError(f"data[{key!r}] holds {old!r}, which cannot be incremented")
            out[key] = old + delta
        return out

    def __call__(self, state: SessionState) -> SessionState:
        return attrs.evolve(state, data=self.apply(state.data))

    def with_set(self, **values: Any) -> DataChange:
        """This change, also setting ``values`` (a marker, say)."""
        return attrs.evolve(self, set={**self.set, **values})

    def arguments(self) -> dict[str, Any]:
        """The ``session_update`` tool arguments for this change."""
        args: dict[str, Any] = {}
        if self.set:
            args["set"] = dict(self.set)
        if self.increment:
            args["increment"] = dict(self.increment)
        if self.delete:
            args["delete"] = list(self.delete)
        return args

    def describe(self) -> str:
        parts = [f"{k}={v!r}" for k, v in self.set.items()]
        parts += [f"{k}+={v!r}" for k, v in self.increment.items()]
        parts += [f"del {k}" for k in self.delete]
        return ", ".join(parts) or "no data change"


@attrs.frozen
class ModelState:
    """A session as the model sees it."""

    session_id: str
    version: int
    data: Mapping[str, Any]


@attrs.define(on_setattr=attrs.setters.NO_OP)  # update() freezes data itself
class ModelSession:
    """One session of the model: its version and data, and whether it lives."""

    session_id: str
    version: int = 1
    data: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen)
    alive: bool = True
    last_active: float = 0.0

    @property
    def state(self) -> ModelState:
        return ModelState(self.session_id, self.version, self.data)

    def check_alive(self) -> None:
        if not self.alive:
            raise SessionNotFoundError(f"model: no session {self.session_id!r}")

    def read(self) -> ModelState:
        self.check_alive()
        return self.state

    def update(
        self, change: DataChange | DataFn | None, expected_version: int | None = None
    ) -> ModelState:
        """Commit ``change`` (None: data unchanged) as version + 1. If it raises, or
        ``expected_version`` is not the version, nothing changes."""
        self.check_alive()
        if expected_version is not None and expected_version != self.version:
            raise SessionConcurrencyError(
                f"model: session {self.session_id!r} is at version {self.version}, "
                f"not {expected_version}",
                expected=expected_version,
                actual=self.version,
            )
        if isinstance(change, DataChange):
            data: Mapping[str, Any] = change.apply(self.data)
        elif change is not None:
            data = change(self.data)
        else:
            data = self.data
        self.data = _frozen(data)
        self.version += 1
        return self.state

    def end(self) -> ModelState:
        self.check_alive()
        self.alive = False
        return self.state


class ReferenceModel:
    """Sessions as plain sequential code: what a manager must do when calls come one
    at a time.

    Times are whatever the caller passes to :meth:`advance` (use Trio's clock); with
    ``idle_ttl`` a session untouched for that long expires at exactly that age (the
    real reaper may take up to its documented granularity longer for a session that
    was busy at its deadline).
    """

    def __init__(self, *, idle_ttl: float = math.inf) -> None:
        self.idle_ttl = idle_ttl
        self.now = 0.0
        self.sessions: dict[str, ModelSession] = {}

    def _get(self, session_id: str) -> ModelSession:
        session = self.sessions.get(session_id)
        if session is None:
            raise SessionNotFoundError(f"model: no session {session_id!r}")
        session.check_alive()
        session.last_active = self.now
        return session

    def create(
        self, session_id: str, data: Mapping[str, Any] | None = None, version: int = 1
    ) -> ModelState:
        """A new session at ``version`` (1 unless it existed before the model began)."""
        if session_id in self.sessions:
            raise ValueError(f"model: session {session_id!r} exists already")
        session = ModelSession(session_id, version, data or {}, last_active=self.now)
        self.sessions[session_id] = session
        return session.state

    def read(self, session_id: str) -> ModelState:
        return self._get(session_id).read()

    def update(
        self,
        session_id: str,
        change: DataChange | DataFn | None,
        expected_version: int | None = None,
    ) -> ModelState:
        return self._get(session_id).update(change, expected_version)

    def end(self, session_id: str) -> ModelState:
        return self._get(session_id).end()

    def remove(self, session_id: str) -> bool:
        session = self.sessions.get(session_id)
        if session is None or not session.alive:
            return False
        session.alive = False
        return True

    def live(self) -> list[str]:
        """The ids of the live sessions, oldest first."""
        return [s.session_id for s in self.sessions.values() if s.alive]

    def advance(self, seconds: float) -> list[str]:
        """Let ``seconds`` pass; return the ids of the sessions that expired."""
        self.now += seconds
        expired = []
        for session in self.sessions.values():
            if session.alive and self.now - session.last_active >= self.idle_ttl:
                session.alive = False
                expired.append(session.session_id)
        return expired
