"""Fault injection: FaultyStore fails, stalls and corrupts as a real store would, on a
seeded schedule, and counts what it injected; the helpers cancel, time out and jump
the clock."""

from __future__ import annotations

import contextlib
import errno
import sqlite3

import pytest
import trio
import trio.testing

import triact
from triact.testing import (
    Cancelled,
    DataChange,
    Fault,
    FaultyStore,
    InjectedError,
    call_with_timeout,
    failing_update,
    jump_past_ttl,
    slow_update,
)


def _state(version: int = 1) -> triact.SessionState:
    return triact.SessionState(id="s", version=version, created_at=0.0, last_used=0.0)


async def test_a_failure_is_a_store_error_caused_by_a_driver_or_disk_error() -> None:
    store = FaultyStore(triact.MemoryStore(), fail_rate=1.0, seed=7)
    causes = set()
    for _ in range(20):
        with pytest.raises(triact.SessionStoreError) as info:
            await store.write(_state(), previous_version=None)
        cause = info.value.__cause__
        assert isinstance(cause, sqlite3.OperationalError | OSError)
        causes.add(type(cause))
        if isinstance(cause, OSError):
            assert cause.errno == errno.ENOSPC
    assert causes == {sqlite3.OperationalError, OSError}
    assert store.injected == {"fail": 20}
    assert await store.inner.load("s") is None  # nothing was written


async def test_a_stall_sleeps_on_the_way_in_then_goes_through(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FaultyStore(triact.MemoryStore(), stall_rate=1.0, stall=3.0)
    start = trio.current_time()
    await store.write(_state(), previous_version=None)
    assert trio.current_time() - start == 3.0
    assert (await store.inner.load("s")) == _state()
    assert store.injected == {"stall": 1}


async def test_a_corrupt_load_raises_the_decoders_data_error() -> None:
    inner = triact.MemoryStore()
    inner.write_now(_state(), previous_version=None)
    store = FaultyStore(inner, corrupt_rate=1.0)
    with pytest.raises(triact.SessionDataError, match="not valid JSON"):
        await store.load("s")
    assert store.injected == {"corrupt": 1}
    assert [(f.kind, f.operation, f.session_id) for f in store.log] == [("corrupt", "load", "s")]


async def test_the_same_seed_injects_the_same_faults() -> None:
    async def faults(seed: int) -> list[str]:
        store = FaultyStore(
            triact.MemoryStore(), seed=seed, fail_rate=0.3, stall_rate=0.2, stall=0.0
        )
        for _ in range(50):
            with contextlib.suppress(triact.SessionStoreError):
                await store.load("s")
        return [f"{f.kind}@{f.call}" for f in store.log]

    assert await faults(1) == await faults(1)
    assert await faults(1) != await faults(2)


async def test_a_schedule_names_the_calls_to_harm_and_disarming_spares_them() -> None:
    store = FaultyStore(triact.MemoryStore(), schedule=[Fault("fail", at=1), Fault("fail", at=2)])
    await store.load("s")
    with pytest.raises(triact.SessionStoreError):
        await store.load("s")
    store.armed = False
    await store.load("s")  # call 2 would have failed
    assert store.injected == {"fail": 1}


async def test_operations_and_fail_on_choose_what_may_be_harmed() -> None:
    store = FaultyStore(triact.MemoryStore(), fail_rate=1.0, operations=("load",))
    await store.write(_state(), previous_version=None)
    with pytest.raises(triact.SessionStoreError):
        await store.load("s")
    spared = FaultyStore(triact.MemoryStore(), fail_rate=1.0, fail_on=("write",))
    assert await spared.load("s") is None


def test_rates_are_checked() -> None:
    with pytest.raises(ValueError, match="fail_rate"):
        FaultyStore(triact.MemoryStore(), fail_rate=1.5)
    with pytest.raises(ValueError, match="add up"):
        FaultyStore(triact.MemoryStore(), fail_rate=0.6, stall_rate=0.6)


async def test_a_manager_on_a_faulty_store_reports_store_errors_and_keeps_serving() -> None:
    store = FaultyStore(triact.MemoryStore(), schedule=[Fault("fail", at=2)])
    async with triact.open_session_manager(triact.SessionConfig(store=store)) as manager:
        session = await manager.create_session()
        with pytest.raises(triact.SessionStoreError):
            await session.update(DataChange(set={"a": 1}))
        state = await session.update(DataChange(set={"b": 1}))
        assert (state.version, dict(state.data)) == (2, {"b": 1})


async def test_failing_and_slow_updates(autojump_clock: trio.testing.MockClock) -> None:
    async with triact.open_session_manager() as manager:
        session = await manager.create_session()
        with pytest.raises(InjectedError):
            await session.update(failing_update())
        with pytest.raises(KeyError):
            await session.update(failing_update(KeyError("k")))
        start = trio.current_time()
        state = await session.update(slow_update(DataChange(set={"a": 1}), 2.0))
        assert trio.current_time() - start == 2.0
        assert state.version == 2


@pytest.mark.parametrize("by_task", [False, True])
async def test_call_with_timeout_cancels_a_slow_update_which_then_has_no_effect(
    autojump_clock: trio.testing.MockClock, by_task: bool
) -> None:
    async with triact.open_session_manager() as manager:
        session = await manager.create_session()
        slow = slow_update(DataChange(set={"a": 1}), 5.0)
        result = await call_with_timeout(lambda: session.update(slow), 1.0, by_task=by_task)
        assert result == Cancelled(1.0)
        assert (await session.snapshot()).version == 1
        fast = await call_with_timeout(session.snapshot, 1.0, by_task=by_task)
        assert isinstance(fast, triact.SessionState)
        with pytest.raises(InjectedError):  # the call's own error, not a group
            await call_with_timeout(lambda: session.update(failing_update()), 1.0, by_task=by_task)


async def test_jump_past_ttl_expires_idle_sessions(autojump_clock: trio.testing.MockClock) -> None:
    config = triact.SessionConfig(idle_ttl=60.0)
    async with triact.open_session_manager(config) as manager:
        session = await manager.create_session()
        await jump_past_ttl(autojump_clock, config)
        with pytest.raises(triact.SessionNotFoundError):
            await session.snapshot()


# -- regressions: session bugs the suite found (DESIGN I3, I4) ------------------------------------


async def test_a_conflict_is_not_decided_against_a_group_write_that_fails(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # store calls: 0 index (open), 1 create's write, 2 the group's write: fails
    store = FaultyStore(triact.MemoryStore(), schedule=[Fault("fail", at=2)])
    async with triact.open_session_manager(triact.SessionConfig(store=store)) as manager:
        session = await manager.create_session()
        outcomes: dict[str, object] = {}

        async def update(name: str, fn: object, expected: int | None = None) -> None:
            try:
                outcomes[name] = await session.update(fn, expected)  # type: ignore[arg-type]
            except triact.SessionError as exc:
                outcomes[name] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(update, "slow", slow_update(DataChange(set={"a": 1}), 1.0))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(update, "plain", DataChange(set={"b": 1}))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(update, "expects 1", DataChange(set={"c": 1}), 1)
        assert isinstance(outcomes["slow"], triact.SessionStoreError)
        assert isinstance(outcomes["plain"], triact.SessionStoreError)
        assert (await session.snapshot()).version == 1
        # the session never left version 1, so "expects 1" was not a conflict
        assert not isinstance(outcomes["expects 1"], triact.SessionConcurrencyError)


async def test_a_removal_during_a_stalled_write_gives_the_update_a_session_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # store calls: 0 index (open), 1 create's write, 2 the update's write: stalled 1 s
    store = FaultyStore(triact.MemoryStore(), schedule=[Fault("stall", at=2)], stall=1.0)
    async with triact.open_session_manager(triact.SessionConfig(store=store)) as manager:
        session = await manager.create_session()
        errors: list[BaseException] = []

        async def update() -> None:
            try:
                await session.update(DataChange(set={"a": 1}))
            except Exception as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(update)
            await trio.sleep(0.5)
            assert await manager.remove_session(session.id)
        assert len(errors) == 1
        assert isinstance(errors[0], triact.SessionError), repr(errors[0])
