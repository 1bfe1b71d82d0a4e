"""Recording histories: each operation's call and return, with Trio clock times, a
global event order, the task that made it and what it saw."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

import attrs
import trio

from ..sessions import (
    Session,
    SessionBusyError,
    SessionClosedError,
    SessionConcurrencyError,
    SessionError,
    SessionManager,
    SessionNotFoundError,
    SessionState,
    SessionStoreError,
)
from ._model import DataChange

T = TypeVar("T")

OpKind = Literal["create", "read", "update", "end", "remove"]
#: How a call ended. ``ok``: it returned; ``conflict``: SessionConcurrencyError
#: (``version`` holds the actual version); ``gone``: SessionNotFoundError, or
#: ``remove`` returned False; ``closed``: SessionClosedError; ``busy``: the mailbox or
#: the rate limit refused it; ``raised``: the update function (or anything that is not
#: a session error) raised; ``store_error``: SessionStoreError or SessionDataError;
#: ``cancelled``: Cancelled or TooSlowError; ``error``: any other SessionError;
#: ``unknown``: no answer came (the server died, hung or the call timed out), so it
#: may or may not have taken effect.
Outcome = Literal[
    "ok",
    "conflict",
    "gone",
    "closed",
    "busy",
    "raised",
    "store_error",
    "cancelled",
    "error",
    "unknown",
]


def classify(exc: BaseException) -> Outcome:
    """The outcome that an exception raised by a session call stands for."""
    if isinstance(exc, SessionConcurrencyError):
        return "conflict"
    if isinstance(exc, SessionNotFoundError):
        return "gone"
    if isinstance(exc, SessionClosedError):
        return "closed"
    if isinstance(exc, SessionBusyError):
        return "busy"
    if isinstance(exc, SessionStoreError):
        return "store_error"
    if isinstance(exc, trio.Cancelled | trio.TooSlowError):
        return "cancelled"
    if isinstance(exc, SessionError):
        return "error"
    return "raised"


@attrs.define(eq=False)
class Operation:
    """One call in a history.

    ``call_seq`` and ``return_seq`` number the call and return events of the whole
    history in the order they happened (exact, where Trio times often tie);
    ``called_at`` and ``returned_at`` are Trio clock times, for people and for TTLs.
    """

    id: int
    task: str
    session_id: str | None  #: None for a create that did not return a session
    kind: OpKind
    call_seq: int
    called_at: float
    change: DataChange | None = None  #: an update's change to data, if known
    expected_version: int | None = None
    return_seq: int | None = None
    returned_at: float | None = None
    outcome: Outcome | None = None
    #: ok: the version the call saw or produced; conflict: the actual version.
    version: int | None = None
    data: Mapping[str, Any] | None = None
    last_used: float | None = None
    removed: bool | None = None  #: what ``remove`` returned
    error: str | None = None
    #: The call reached the session (and so renewed its TTL): False for a remove, or a
    #: call refused by ``get_session`` before it reached the session.
    touches: bool = True

    @property
    def done(self) -> bool:
        return self.return_seq is not None

    def describe(self) -> str:
        """One line: what was called, by whom, when, and what came back."""
        args = ""
        if self.kind == "update":
            change = self.change.describe() if self.change is not None else "fn"
            expected = (
                "" if self.expected_version is None else f"; expected {self.expected_version}"
            )
            args = f"{change}{expected}"
        what = f"{self.kind}({args})"
        if self.return_seq is None:
            result = "never returned"
            span = f"called {self.called_at:.3f} (event {self.call_seq})"
        else:
            result = self._result()
            span = (
                f"{self.called_at:.3f}..{self.returned_at:.3f} "
                f"(events {self.call_seq}..{self.return_seq})"
            )
        return f"op {self.id} task {self.task} {span}: {what} -> {result}"

    def _result(self) -> str:
        if self.outcome == "ok":
            if self.kind == "remove":
                return f"removed={self.removed}"
            data = "" if self.data is None else f" data={dict(self.data)!r}"
            return f"ok version {self.version}{data}"
        if self.outcome == "conflict":
            return f"conflict (actual version {self.version})"
        return f"{self.outcome}" + (f" ({self.error})" if self.error else "")


@attrs.define
class History:
    """The operations of a recording, in call order, and when shutdown began."""

    operations: list[Operation]
    #: The event number at which the manager began shutting down, if it did: calls
    #: refused with SessionClosedError after it say nothing about their session.
    shutdown_seq: int | None = None

    def sessions(self) -> dict[str, list[Operation]]:
        """The operations of each session, in call order."""
        by_session: dict[str, list[Operation]] = {}
        for op in self.operations:
            if op.session_id is not None:
                by_session.setdefault(op.session_id, []).append(op)
        return by_session


class Call:
    """An operation being recorded: report how it ended with :meth:`ok` (or let the
    ``with`` block raise)."""

    __slots__ = ("_discard", "_end", "op")

    def __init__(
        self,
        end: Callable[[Operation, Outcome], None],
        discard: Callable[[Operation], None],
        op: Operation,
    ) -> None:
        self._end = end  # the recorder's: close ``op`` with an outcome
        self._discard = discard  # the recorder's: leave ``op`` out
        self.op = op

    def ok(self, result: Any = None) -> None:
        """The call returned ``result``: a SessionState, a Session (create), or the
        bool of a remove."""
        op = self.op
        if isinstance(result, Session):
            op.session_id = result.id
            op.version = 1
        elif isinstance(result, SessionState):
            op.session_id = op.session_id or result.id
            op.version = result.version
            op.data = result.data
            op.last_used = result.last_used
        elif op.kind == "remove":
            op.removed = bool(result)
            if not result:
                self._end(op, "gone")
                return
        self._end(op, "ok")

    def ok_version(
        self, version: int, data: Mapping[str, Any] | None = None, session_id: str | None = None
    ) -> None:
        """The call returned a state seen from outside the process (an MCP result)."""
        op = self.op
        op.session_id = op.session_id or session_id
        op.version = version
        op.data = data
        self._end(op, "ok")

    def failed(self, outcome: Outcome, error: str = "", version: int | None = None) -> None:
        """The call failed with ``outcome`` (``version``: the actual one of a conflict)."""
        self.op.error = error
        self.op.version = version
        self._end(self.op, outcome)

    def untouched(self) -> None:
        """The call has not reached the session (yet): a lookup may still refuse it."""
        self.op.touches = False

    def touched(self) -> None:
        """The call reached the session."""
        self.op.touches = True

    def discard(self) -> None:
        """Leave this call out of the history: it observed nothing."""
        self._discard(self.op)


class HistoryRecorder:
    """Records operations for the history checker.

    Wrap each call in ``with recorder.call(task, session_id, kind) as call:`` and
    report its result with ``call.ok(...)``; an exception leaving the block is
    classified (:func:`classify`), recorded and re-raised. Nothing here awaits, so
    the recorded event order is exactly the order in which calls began and ended.
    :meth:`session` and :meth:`manager` wrap the session API so that every call is
    recorded.
    """

    def __init__(self) -> None:
        self.operations: list[Operation] = []
        self.shutdown_seq: int | None = None
        self._seq = itertools.count()
        self._ids = itertools.count()

    def history(self) -> History:
        return History(list(self.operations), self.shutdown_seq)

    def mark_shutdown(self) -> None:
        """Note that the manager begins shutting down now."""
        if self.shutdown_seq is None:
            self.shutdown_seq = next(self._seq)

    @contextmanager
    def call(
        self,
        task: str,
        session_id: str | None,
        kind: OpKind,
        *,
        change: DataChange | None = None,
        expected_version: int | None = None,
    ) -> Iterator[Call]:
        op = Operation(
            id=next(self._ids),
            task=task,
            session_id=session_id,
            kind=kind,
            call_seq=next(self._seq),
            called_at=trio.current_time(),
            change=change,
            expected_version=expected_version,
            touches=kind != "remove",
        )
        self.operations.append(op)
        call = Call(self._end, self._discard, op)
        try:
            yield call
        except BaseException as exc:
            if not op.done:
                version = exc.actual if isinstance(exc, SessionConcurrencyError) else None
                call.failed(classify(exc), f"{type(exc).__name__}: {exc}"[:300], version)
            raise
        if not op.done:
            raise RuntimeError(f"{op.describe()}: report its result with call.ok(...)")

    async def record(
        self,
        task: str,
        session_id: str | None,
        kind: OpKind,
        awaitable: Awaitable[T],
        *,
        change: DataChange | None = None,
        expected_version: int | None = None,
    ) -> T:
        """Await ``awaitable`` (a session call not yet started) as a recorded call."""
        with self.call(
            task, session_id, kind, change=change, expected_version=expected_version
        ) as call:
            result = await awaitable
            call.ok(result)
        return result

    def session(self, session: Session, task: str) -> RecordedSession:
        """``session``, with every call recorded as made by ``task``."""
        return RecordedSession(self, session, task)

    def manager(self, manager: SessionManager, task: str) -> RecordedManager:
        """``manager``, with create, get and remove recorded as made by ``task``."""
        return RecordedManager(self, manager, task)

    def _discard(self, op: Operation) -> None:
        ops = self.operations
        for i in range(len(ops) - 1, -1, -1):
            if ops[i] is op:
                del ops[i]
                break
        op.outcome = "ok"
        op.return_seq = -1  # done, so that the ``with`` block does not complain

    def _end(self, op: Operation, outcome: Outcome) -> None:
        op.outcome = outcome
        op.return_seq = next(self._seq)
        op.returned_at = trio.current_time()


class RecordedSession:
    """A :class:`~triact.Session` whose snapshot, update and end calls are recorded."""

    def __init__(self, recorder: HistoryRecorder, session: Session, task: str) -> None:
        self.recorder = recorder
        self.inner = session
        self.task = task
        self.id = session.id

    async def snapshot(self) -> SessionState:
        return await self.recorder.record(self.task, self.id, "read", self.inner.snapshot())

    async def update(
        self,
        change: DataChange | Callable[[SessionState], Any],
        expected_version: int | None = None,
    ) -> SessionState:
        """Commit ``change``: a :class:`DataChange` (which the checker can replay), or
        any update function (whose effect on data the checker takes from what later
        calls see)."""
        known = change if isinstance(change, DataChange) else None
        return await self.recorder.record(
            self.task,
            self.id,
            "update",
            self.inner.update(change, expected_version),
            change=known,
            expected_version=expected_version,
        )

    async def end(self) -> SessionState:
        return await self.recorder.record(self.task, self.id, "end", self.inner.end())


class RecordedManager:
    """A :class:`~triact.SessionManager` whose create, get and remove are recorded."""

    def __init__(self, recorder: HistoryRecorder, manager: SessionManager, task: str) -> None:
        self.recorder = recorder
        self.inner = manager
        self.task = task

    async def create_session(self, topic: str | None = None, **kwargs: Any) -> RecordedSession:
        with self.recorder.call(self.task, None, "create") as call:
            session = await self.inner.create_session(topic, **kwargs)
            call.ok(session)
        return RecordedSession(self.recorder, session, self.task)

    async def get_session(self, session_id: str) -> RecordedSession:
        """The session's handle. A refusal is recorded (as a read that never reached
        the session); a successful lookup sees no state and is not."""
        with self.recorder.call(self.task, session_id, "read") as call:
            call.untouched()
            session = await self.inner.get_session(session_id)
            call.discard()
        return RecordedSession(self.recorder, session, self.task)

    async def remove_session(self, session_id: str) -> bool:
        return await self.recorder.record(
            self.task, session_id, "remove", self.inner.remove_session(session_id)
        )
