"""Async updates of sessions that call each other: a cycle is refused, not a deadlock."""

from __future__ import annotations

from collections.abc import Callable

import attrs
import pytest
import trio
import trio.testing

import triact

from ._helpers import OpenManager, put

Outcome = triact.SessionState | triact.SessionError


def calls_after(seconds: float, other: triact.Session, key: str) -> Callable[..., object]:
    """An async update that holds its session for ``seconds``, then updates ``other``
    (setting ``key``) and records that it did."""

    async def fn(state: triact.SessionState) -> triact.SessionState:
        await trio.sleep(seconds)
        await other.update(put(key, 1))
        return attrs.evolve(state, data={**state.data, "called": key})

    return fn


async def run_all(
    updates: dict[str, tuple[triact.Session, Callable[..., object]]],
) -> dict[str, Outcome]:
    """Run the updates concurrently, each in its own task; the outcome of each."""
    outcomes: dict[str, Outcome] = {}

    async def run(name: str, session: triact.Session, fn: Callable[..., object]) -> None:
        try:
            outcomes[name] = await session.update(fn)  # type: ignore[arg-type]
        except triact.SessionError as exc:
            outcomes[name] = exc

    with trio.fail_after(60.0):  # a deadlock fails the test instead of hanging it
        async with trio.open_nursery() as nursery:
            for name, (session, fn) in updates.items():
                nursery.start_soon(run, name, session, fn)
    return outcomes


def refused(outcomes: dict[str, Outcome]) -> list[str]:
    return [name for name, o in outcomes.items() if isinstance(o, triact.SessionReentrancyError)]


async def test_two_sessions_whose_updates_call_each_other_are_refused_not_deadlocked(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(idle_ttl=100.0) as manager:
        a = await manager.create_session()
        b = await manager.create_session()
        outcomes = await run_all(
            {"a": (a, calls_after(1.0, b, "from_a")), "b": (b, calls_after(1.0, a, "from_b"))}
        )
        (loser,) = refused(outcomes)
        winner = "b" if loser == "a" else "a"
        error = str(outcomes[loser])
        assert a.id in error
        assert b.id in error
        assert "cycle" in error
        states = {"a": await a.snapshot(), "b": await b.snapshot()}
        # The refused update committed nothing; the other one went through, its call
        # to the loser's session included.
        assert "called" not in states[loser].data
        assert states[winner].data["called"] == f"from_{winner}"
        assert states[loser].data == {f"from_{winner}": 1}
        assert (states[winner].version, states[loser].version) == (2, 2)
        # both stay usable, then expire as any idle session does
        await a.update(put("after", 1))
        await b.update(put("after", 1))
        await trio.sleep(101.0)
        assert manager.session_count == 0


async def test_a_cycle_of_three_sessions_is_refused(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(idle_ttl=100.0) as manager:
        a, b, c = [await manager.create_session() for _ in range(3)]
        outcomes = await run_all(
            {
                "a": (a, calls_after(1.0, b, "from_a")),
                "b": (b, calls_after(2.0, c, "from_b")),
                "c": (c, calls_after(3.0, a, "from_c")),  # closes the cycle
            }
        )
        assert refused(outcomes) == ["c"]
        message = str(outcomes["c"])
        assert f"{c.id!r} -> {a.id!r} -> {b.id!r} -> {c.id!r}" in message
        assert isinstance(outcomes["a"], triact.SessionState)
        assert isinstance(outcomes["b"], triact.SessionState)
        assert (await c.snapshot()).data == {"from_b": 1}  # its own update: nothing
        assert (await b.snapshot()).data == {"from_a": 1, "called": "from_b"}
        assert (await a.snapshot()).data == {"called": "from_a"}
        for session in (a, b, c):
            await session.update(put("after", 1))
        await trio.sleep(101.0)
        assert manager.session_count == 0


async def test_a_task_started_by_an_update_may_not_call_its_session(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()
        errors: list[triact.SessionError] = []

        async def reads_the_session() -> None:
            try:
                await session.snapshot()  # would queue behind the update that waits
            except triact.SessionReentrancyError as exc:
                errors.append(exc)

        async def spawns_a_caller(state: triact.SessionState) -> triact.SessionState:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reads_the_session)
            return state

        with trio.fail_after(5.0):
            await session.update(spawns_a_caller)
        (error,) = errors
        assert session.id in str(error)
        assert "its own update" in str(error)


async def test_updates_that_wait_on_each_other_without_a_cycle_both_commit(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager() as manager:
        a, b, c, d = [await manager.create_session() for _ in range(4)]
        # a and b both call c while c's own update runs: a chain, not a cycle
        outcomes = await run_all(
            {
                "c": (c, calls_after(2.0, d, "x")),
                "a": (a, calls_after(1.0, c, "from_a")),
                "b": (b, calls_after(1.0, c, "from_b")),
            }
        )
        assert refused(outcomes) == []
        assert (await c.snapshot()).data == {"called": "x", "from_a": 1, "from_b": 1}
        assert (await d.snapshot()).data == {"x": 1}


async def test_a_task_left_running_by_an_update_may_call_its_session_later(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager() as manager, trio.open_nursery() as outer:
        session = await manager.create_session()
        done = trio.Event()

        async def later() -> None:
            await trio.sleep(1.0)  # the update has finished by now
            await session.update(put("later", 1))
            done.set()

        async def starts_a_task(state: triact.SessionState) -> triact.SessionState:
            outer.start_soon(later)  # inherits this update's context
            return state

        await session.update(starts_a_task)
        await done.wait()
        assert (await session.snapshot()).data == {"later": 1}


def test_a_hold_marks_its_update_until_released_innermost_first() -> None:
    """hold() makes the Hold whole (it has no __init__ of its own) and marks the
    code after it; release() undoes it, nested holds in turn."""
    from triact import SessionReentrancyError
    from triact.sessions._cycles import HOLDS, done_waiting, hold, release, wait_on

    class Entry:
        hold: object = None

        def __init__(self, id: str) -> None:
            self.id = id

    outer_entry, inner_entry, other = Entry("outer"), Entry("inner"), Entry("other")
    outer = hold(outer_entry)  # type: ignore[arg-type]
    inner = hold(inner_entry)  # type: ignore[arg-type]
    assert HOLDS.get() is inner
    assert inner.outer is outer
    assert (inner.entry, inner.active, inner.waits_on) == (inner_entry, True, ())
    assert (outer_entry.hold, inner_entry.hold) == (outer, inner)
    # A call from inside both: the innermost waits; a call to either closes a cycle.
    assert wait_on(other, inner) is inner  # type: ignore[arg-type]
    assert inner.waits_on == [other]
    done_waiting(inner, other)  # type: ignore[arg-type]
    with pytest.raises(SessionReentrancyError, match="'outer'"):
        wait_on(outer_entry, inner)  # type: ignore[arg-type]
    release(inner)
    assert HOLDS.get() is outer
    assert outer.outer is None
    assert (inner.active, inner_entry.hold, outer.active) == (False, None, True)
    release(outer)
    assert HOLDS.get() is None
    assert (outer.active, outer_entry.hold) == (False, None)
