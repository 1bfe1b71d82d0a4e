"""Lifecycle events: what is published, in what order, and bounded subscribers."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import triact

from ._helpers import OpenManager, put


async def drain(events: triact.Subscription) -> list[tuple[str, str, int]]:
    """Close ``events`` and return what it had buffered, as (kind, id, version)."""
    events.close()
    return [(e.kind, e.session_id, e.version) async for e in events]


async def test_lifecycle_events_arrive_in_order_with_ids_and_versions(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(idle_ttl=100.0) as manager:
        events = manager.subscribe()
        ended = await manager.create_session()
        await ended.update(put("k", 1))
        await ended.add_thread("t")
        await ended.end()
        removed = await manager.create_session()
        await removed.update(put("k", 1))
        await manager.remove_session(removed.id)
        expired = await manager.create_session()
        await trio.sleep(101.0)
        assert await drain(events) == [
            ("created", ended.id, 1),
            ("updated", ended.id, 2),
            ("updated", ended.id, 3),
            ("ended", ended.id, 3),
            ("created", removed.id, 1),
            ("updated", removed.id, 2),
            ("removed", removed.id, 2),
            ("created", expired.id, 1),
            ("expired", expired.id, 1),
        ]


async def test_temporary_session_publishes_created_and_removed(
    open_manager: OpenManager,
) -> None:
    async with open_manager() as manager:
        with manager.subscribe() as events:
            async with manager.session() as tmp:
                pass
        assert await drain(events) == [("created", tmp.id, 1), ("removed", tmp.id, 1)]


async def test_event_time_comes_from_the_wall_clock(open_manager: OpenManager) -> None:
    now = [1000.0]
    async with open_manager(wall_clock=lambda: now[0]) as manager:
        with manager.subscribe() as events:
            session = await manager.create_session()
            now[0] = 1005.0
            await session.update(put("k", 1))
        received = [e async for e in events]
    assert [e.at for e in received] == [1000.0, 1005.0]
    assert all(isinstance(e, triact.SessionEvent) for e in received)


async def test_every_subscriber_gets_every_event(open_manager: OpenManager) -> None:
    async with open_manager() as manager:
        first = manager.subscribe()
        session = await manager.create_session()
        second = manager.subscribe()  # sees only what happens after it subscribed
        await session.update(put("k", 1))
        assert await drain(first) == [("created", session.id, 1), ("updated", session.id, 2)]
        assert await drain(second) == [("updated", session.id, 2)]


async def test_a_waiting_subscriber_is_woken_by_a_new_event(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    received: list[triact.SessionEvent] = []
    async with open_manager() as manager:
        events = manager.subscribe()

        async def consume() -> None:
            async for event in events:
                received.append(event)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await trio.testing.wait_all_tasks_blocked()
            session = await manager.create_session()
            await trio.testing.wait_all_tasks_blocked()
            assert [(e.kind, e.session_id) for e in received] == [("created", session.id)]
            await session.update(put("k", 1))
            await trio.testing.wait_all_tasks_blocked()
            assert [e.kind for e in received] == ["created", "updated"]
            events.close()


async def test_a_subscriber_that_falls_behind_loses_the_oldest(
    open_manager: OpenManager,
) -> None:
    async with open_manager() as manager:
        events = manager.subscribe(buffer=3)
        session = await manager.create_session()
        for i in range(5):
            await session.update(put("i", i))
        assert events.dropped == 3
        assert await drain(events) == [("updated", session.id, v) for v in (4, 5, 6)]


async def test_subscriber_buffer_defaults_to_the_config(open_manager: OpenManager) -> None:
    async with open_manager(event_buffer=2) as manager:
        events = manager.subscribe()
        session = await manager.create_session()
        for i in range(4):
            await session.update(put("i", i))
        assert events.dropped == 3
        assert await drain(events) == [("updated", session.id, 4), ("updated", session.id, 5)]


async def test_a_full_subscriber_never_blocks_the_manager(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager() as manager:
        ignored = manager.subscribe(buffer=1)
        session = await manager.create_session()
        start = trio.current_time()
        with trio.fail_after(1.0):
            for i in range(200):
                state = await session.update(put("i", i))
        assert trio.current_time() == start
        assert state.version == 201
        assert ignored.dropped == 200
        assert await drain(ignored) == [("updated", session.id, 201)]


async def test_closing_a_subscription_with_a_with_block(open_manager: OpenManager) -> None:
    async with open_manager() as manager:
        with manager.subscribe() as events:
            first = await manager.create_session()
        await manager.create_session()  # after the close: not delivered
        received = [(e.kind, e.session_id) async for e in events]
        assert received == [("created", first.id)]
        events.close()  # closing again is harmless


async def test_closing_a_subscription_ends_a_waiting_iteration(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager() as manager:
        events = manager.subscribe()
        done = trio.Event()

        async def consume() -> None:
            async for _ in events:
                pass
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await trio.testing.wait_all_tasks_blocked()
            events.close()
            with trio.fail_after(1.0):
                await done.wait()


async def test_closing_the_manager_ends_iteration(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    received: list[str] = []
    finished = False

    async def consume(events: triact.Subscription) -> None:
        nonlocal finished
        async for event in events:
            received.append(event.kind)
        finished = True

    with trio.fail_after(10.0):
        async with trio.open_nursery() as nursery, open_manager() as manager:
            nursery.start_soon(consume, manager.subscribe())
            session = await manager.create_session()
            await session.update(put("k", 1))
            await trio.testing.wait_all_tasks_blocked()
    assert finished
    assert received == ["created", "updated"]


async def test_buffered_events_are_still_read_after_the_manager_closes(
    open_manager: OpenManager,
) -> None:
    async with open_manager() as manager:
        events = manager.subscribe()
        session = await manager.create_session()
    assert [(e.kind, e.session_id) async for e in events] == [("created", session.id)]


async def test_no_event_for_a_change_that_was_not_committed(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    def fail(state: triact.SessionState) -> triact.SessionState:
        raise RuntimeError("no")

    async def slow(state: triact.SessionState) -> triact.SessionState:
        await trio.sleep(10.0)
        return state

    async with open_manager() as manager:
        session = await manager.create_session()
        with manager.subscribe() as events:
            with pytest.raises(RuntimeError):
                await session.update(fail)
            with pytest.raises(triact.SessionConcurrencyError):
                await session.update(put("k", 1), expected_version=5)
            with pytest.raises(TypeError):
                await session.update(lambda state: None)
            with pytest.raises(ValueError, match="already has a thread"):
                await session.add_thread("t")
                await session.add_thread("t")
            with trio.move_on_after(1.0):
                await session.update(slow)
            await session.snapshot()
            await session.stats()
        assert await drain(events) == [("updated", session.id, 2)]  # the first add_thread


async def test_no_event_for_a_refused_creation(open_manager: OpenManager) -> None:
    async with open_manager(max_sessions=1) as manager:
        with manager.subscribe() as events:
            with pytest.raises(ValueError, match="absolute"):
                await manager.create_session(working_directory="relative")
            session = await manager.create_session()
            with pytest.raises(triact.SessionLimitError):
                await manager.create_session()
            assert await manager.remove_session("unknown") is False
        assert await drain(events) == [("created", session.id, 1)]
