"""Calls between sessions from inside async updates, and the cycles among them.

An async update runs inside its session's actor: while it awaits a call to another
session, its own session takes no other call. If that other session's update awaits
a call back (directly, or through more sessions), every one of them waits for the
next, forever. Each running async update is a :class:`Hold` that lists the sessions
it waits on, and the code running inside updates knows its holds (a context
variable, inherited by the tasks it starts), so a call that would close a cycle is
refused with :class:`SessionReentrancyError` before it waits.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING

from ._errors import SessionReentrancyError

if TYPE_CHECKING:
    from ._leases import Entry


class Hold:
    """One async update of a session, while it runs: made only by :func:`hold`, as
    ``Hold()``, which sets its fields (``object``'s ``__init__``: a type call with no
    frame of Python, for every async update)."""

    __slots__ = ("active", "entry", "outer", "token", "waits_on")
    __init__ = object.__init__

    entry: Entry
    active: bool
    #: The sessions that code inside this update is calling now (a list: several
    #: tasks started by the update may call the same session). Made at the first
    #: such call: most updates call none, and each pays for this object.
    waits_on: list[Entry] | tuple[()]
    #: The update this one runs inside (None: none), and so on out: HOLDS holds the
    #: innermost one (a chain, where a tuple of them was made for every update).
    outer: Hold | None
    token: Token[Hold | None]  # HOLDS before this one


#: The innermost update the current code runs inside (the others through its
#: ``outer``); None outside every update.
HOLDS: ContextVar[Hold | None] = ContextVar("triact_session_holds", default=None)
#: ``HOLDS.get``, bound once. (Another module that imports ``HOLDS`` and calls
#: ``HOLDS.get()`` looks the method up and binds it at every call: CPython 3.11 reads
#: an attribute of an imported name as a module's, and makes the call no method call.)
current_hold = HOLDS.get


def hold(entry: Entry) -> Hold:
    """Mark what runs from now on, in this task, as the running async update of
    ``entry``'s session, until :func:`release` of the hold returned (in a
    ``finally``: :func:`holding` spelled out, for the hot path of async updates,
    which spares a generator and a context manager per update)."""
    held: Hold = Hold()  # (its fields set here: see Hold)
    held.entry = entry
    held.active = True
    held.waits_on = ()
    entry.hold = held
    held.outer = HOLDS.get()
    held.token = HOLDS.set(held)
    return held


def release(held: Hold) -> None:
    """End what :func:`hold` began."""
    held.active = False  # a task the update left running must not look inside it
    entry = held.entry
    if entry.hold is held:
        entry.hold = None
    HOLDS.reset(held.token)  # (hold set it)


@contextmanager
def holding(entry: Entry) -> Iterator[None]:
    """Mark the block as the running async update of ``entry``'s session."""
    held = hold(entry)
    try:
        yield
    finally:
        release(held)


def wait_on(target: Entry, innermost: Hold) -> Hold | None:
    """Record that code inside ``innermost`` (and the updates it runs inside) is about
    to call ``target``'s session, and return the hold that waits (give it to
    :func:`done_waiting` afterwards); None if none of them is running any more.

    Raises :class:`SessionReentrancyError` if the call would close a cycle: if
    ``target`` is one of the updates the caller runs inside, or if ``target``'s
    running update waits (through any number of sessions) on one of them.
    """
    live: list[Hold] = []  # the updates still running, outermost first
    held: Hold | None = innermost
    while held is not None:
        if held.active:
            live.append(held)
        held = held.outer
    live.reverse()
    if not live:
        return None
    cycle = _find_cycle(target, live)
    if cycle is not None:
        raise _cycle_error(target, live[-1].entry, cycle)
    waiter = live[-1]
    if waiter.waits_on:
        waiter.waits_on.append(target)
    else:
        waiter.waits_on = [target]
    return waiter


def done_waiting(waiter: Hold, target: Entry) -> None:
    waiter.waits_on.remove(target)  # type: ignore[union-attr]  # (a list: wait_on made it)


def _find_cycle(target: Entry, live: list[Hold]) -> list[Entry] | None:
    """The sessions of the cycle the call would close (the caller's updates from the
    first one involved, then ``target`` and on back to that one); None if none."""
    mine = {id(hold.entry): i for i, hold in enumerate(live)}
    came_from: dict[int, Entry | None] = {id(target): None}
    queue = deque([target])
    # Breadth-first over "the running update of X waits on Y".
    while queue:
        entry = queue.popleft()
        at = mine.get(id(entry))
        if at is not None:
            path: list[Entry] = []
            step: Entry | None = entry
            while step is not None:
                path.append(step)
                step = came_from[id(step)]
            return [hold.entry for hold in live[at:]] + path[::-1]
        hold = entry.hold
        if hold is not None and hold.active:
            for after in hold.waits_on:
                if id(after) not in came_from:
                    came_from[id(after)] = entry
                    queue.append(after)
    return None


def _cycle_error(target: Entry, caller: Entry, cycle: list[Entry]) -> SessionReentrancyError:
    if len(cycle) == 2 and cycle[0] is cycle[1]:
        return SessionReentrancyError(
            f"session {target.id!r} was called from inside its own update; that call would "
            "wait for itself forever. Work on the state passed to your update function "
            "instead"
        )
    ids = " -> ".join(repr(entry.id) for entry in cycle)
    return SessionReentrancyError(
        f"session {target.id!r} was called from an update of session {caller.id!r} while "
        f"that would close a cycle of updates waiting on each other ({ids}): it would wait "
        "forever, so it was refused. Call the other session before or after your update, "
        "not inside it"
    )
