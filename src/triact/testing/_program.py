"""Concurrent programs against a session manager: several tasks, each a list of steps
with pauses between them. Plain values, so that Hypothesis can generate and shrink
them and a failing one prints as code."""

from __future__ import annotations

from typing import Any, Literal

import attrs

from ._faults import StoreOp
from ._model import DataChange

Action = Literal["read", "update", "end", "remove"]
#: The ``expected_version`` an update passes: none, the version this task saw last
#: ("seen"), one less ("stale") or one more ("ahead").
Expect = Literal["none", "seen", "stale", "ahead"]


def short_repr(value: Any) -> str:
    """``Class(field=value, ...)`` with only the fields that differ from their defaults,
    so that a failing example prints as short, valid code."""
    parts = []
    for field in attrs.fields(type(value)):
        item = getattr(value, field.name)
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        if field.default is attrs.NOTHING or item != default:
            parts.append(f"{field.name}={item!r}")
    return f"{type(value).__name__}({', '.join(parts)})"


@attrs.frozen(repr=False)
class Step:
    """One call of a task, after sleeping ``pause`` seconds."""

    action: Action
    session: int  #: which session, modulo the program's number of sessions
    pause: float = 0.0
    #: An update's change to data (the runner adds a marker naming the step).
    change: DataChange = attrs.field(factory=DataChange)
    fails: bool = False  #: the update function raises
    duration: float = 0.0  #: > 0: an async update function that sleeps this long
    expect: Expect = "none"
    #: Cancel the call after this many seconds: by a deadline, or by another task.
    timeout: float | None = None
    cancel_by_task: bool = False
    lookup: bool = False  #: reach the session through ``manager.get_session``

    __repr__ = short_repr


@attrs.frozen(repr=False)
class Faults:
    """The seeded schedule of a :class:`~triact.testing.FaultyStore`."""

    seed: int = 0
    fail_rate: float = 0.0
    stall_rate: float = 0.0
    stall: float = 1.0
    corrupt_rate: float = 0.0
    #: The store calls that may be harmed at all, and those of them that may fail.
    operations: tuple[StoreOp, ...] = ("load", "write", "delete")
    fail_on: tuple[StoreOp, ...] = ("load", "write", "delete")

    __repr__ = short_repr


@attrs.frozen(repr=False)
class Program:
    """Tasks of steps against ``sessions`` sessions of one manager.

    With ``shutdown_after`` the manager begins shutting down that many seconds after
    the tasks start, while they go on calling it.
    """

    sessions: int
    tasks: tuple[tuple[Step, ...], ...]
    idle_ttl: float = 7200.0
    mailbox_size: int = 256
    passivate_after: float | None = None
    faults: Faults | None = None
    shutdown_after: float | None = None
    shutdown_grace: float = 5.0

    __repr__ = short_repr
