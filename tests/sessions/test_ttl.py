"""TTL (I5): idle expiry, max_lifetime, busy sessions, passivation, mass expiry."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
import pytest
import trio
import trio.testing

import triact
from triact.sessions._manager import MEMORY_ACTOR_IDLE

from ._helpers import OpenManager, put, sleep_then_put


async def is_live(manager: triact.SessionManager, session_id: str) -> bool:
    try:
        await manager.get_session(session_id)
    except triact.SessionNotFoundError:
        return False
    return True


# -- idle TTL ---------------------------------------------------------------------------


async def test_an_idle_session_expires_after_idle_ttl(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    store = triact.MemoryStore()
    async with open_manager(idle_ttl=60.0, store=store) as manager:
        with manager.subscribe() as events:
            session = await manager.create_session()
            await session.update(put("k", 1))
            await trio.sleep(59.0)
            assert await is_live(manager, session.id)
            assert len(store) == 1
            await trio.sleep(2.0)
            assert not await is_live(manager, session.id)
            assert manager.session_count == 0
            assert len(store) == 0
            with pytest.raises(triact.SessionNotFoundError, match=f"{session.id}.*expired"):
                await session.snapshot()
            stats = await manager.stats()
            assert (stats.expired, stats.sessions, stats.active_actors) == (1, 0, 0)
        kinds = [(e.kind, e.session_id, e.version) async for e in events]
    assert kinds == [
        ("created", session.id, 1),
        ("updated", session.id, 2),
        ("expired", session.id, 2),
    ]


async def test_a_session_never_called_expires_too(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    store = triact.MemoryStore()
    async with open_manager(idle_ttl=60.0, store=store) as manager:
        session = await manager.create_session()
        await trio.sleep(61.0)
        assert not await is_live(manager, session.id)
        assert len(store) == 0


async def test_expired_session_cannot_be_removed_or_ended(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(idle_ttl=60.0) as manager:
        session = await manager.create_session()
        await trio.sleep(61.0)
        assert await manager.remove_session(session.id) is False
        with pytest.raises(triact.SessionNotFoundError):
            await session.end()
        stats = await manager.stats()
        assert (stats.expired, stats.removed, stats.ended) == (1, 0, 0)


def _calls(session: triact.Session) -> dict[str, Callable[[], Awaitable[object]]]:
    return {
        "snapshot": session.snapshot,
        "stats": session.stats,
        "update": lambda: session.update(put("k", 1)),
        "validate_security": lambda: session.validate_security(None),
    }


@pytest.mark.parametrize("call", ["snapshot", "stats", "update", "validate_security"])
async def test_a_session_used_regularly_never_expires(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock, call: str
) -> None:
    async with open_manager(idle_ttl=60.0) as manager:
        session = await manager.create_session()
        for _ in range(100):
            await trio.sleep(50.0)
            await _calls(session)[call]()
        assert trio.current_time() == pytest.approx(5000.0)
        assert await is_live(manager, session.id)
        await trio.sleep(61.0)  # and once it stops being used, it does
        assert not await is_live(manager, session.id)


async def test_a_session_with_a_running_call_does_not_expire(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(idle_ttl=10.0) as manager:
        session = await manager.create_session()
        state = await session.update(sleep_then_put(100.5, "k", "done"))
        assert (state.version, state.data) == (2, {"k": "done"})
        assert await is_live(manager, session.id)
        # the idle time counts from the end of the call
        await trio.sleep(9.0)
        assert (await session.snapshot()).version == 2
        await trio.sleep(11.0)
        assert not await is_live(manager, session.id)


async def test_a_session_is_live_right_after_a_call_longer_than_idle_ttl(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    # The reaper looks at a busy session again every second. When the call ends on
    # one of those looks, the session must count as used just now, not as idle
    # since the call began. (Trio orders tasks woken at the same instant at random,
    # hence the rounds.)
    async with open_manager(idle_ttl=10.0) as manager:
        live = []
        for _ in range(30):
            session = await manager.create_session()
            state = await session.update(sleep_then_put(20.0, "k", "done"))
            assert state.version == 2
            live.append(await is_live(manager, session.id))
            await manager.remove_session(session.id)
        assert all(live), f"expired right after its call in {live.count(False)} of 30 rounds"


async def test_a_session_with_queued_calls_does_not_expire(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(idle_ttl=10.0) as manager:
        session = await manager.create_session()
        results: list[triact.SessionState] = []

        async def call(value: int) -> None:
            results.append(await session.update(sleep_then_put(30.25, "k", value)))

        async with trio.open_nursery() as nursery:
            for value in range(3):
                nursery.start_soon(call, value)
                await trio.testing.wait_all_tasks_blocked()
        assert trio.current_time() == pytest.approx(90.75)
        assert [(s.version, s.data["k"]) for s in results] == [(2, 0), (3, 1), (4, 2)]
        assert await is_live(manager, session.id)


async def test_a_busy_session_does_not_shield_the_others(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(idle_ttl=10.0) as manager:
        busy = await manager.create_session()
        idle = await manager.create_session()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(busy.update, sleep_then_put(100.0, "k", 1))
            await trio.sleep(11.0)
            assert not await is_live(manager, idle.id)
            assert await is_live(manager, busy.id)


# -- max_lifetime -----------------------------------------------------------------------


async def test_max_lifetime_expires_a_session_in_constant_use(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    store = triact.MemoryStore()
    async with open_manager(idle_ttl=100.0, max_lifetime=50.0, store=store) as manager:
        with manager.subscribe() as events:
            session = await manager.create_session()
            for _ in range(4):
                await trio.sleep(10.0)
                await session.update(put("k", 1))
            assert await is_live(manager, session.id)  # t = 40
            await trio.sleep(9.0)
            await session.snapshot()
            await trio.sleep(2.0)  # t = 51
            assert not await is_live(manager, session.id)
            assert len(store) == 0
            with pytest.raises(triact.SessionNotFoundError):
                await session.snapshot()
        assert [e.kind async for e in events][-1] == "expired"


async def test_max_lifetime_waits_for_a_running_call(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(idle_ttl=100.0, max_lifetime=50.0) as manager:
        session = await manager.create_session()
        state = await session.update(sleep_then_put(80.0, "k", 1))
        assert state.version == 2
        await trio.sleep(2.0)  # it expires soon after the call ends
        assert not await is_live(manager, session.id)


# -- passivation --------------------------------------------------------------------------


async def test_passivation_drops_the_actor_and_the_next_call_brings_it_back(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    store = triact.MemoryStore()
    async with open_manager(idle_ttl=1000.0, passivate_after=10.0, store=store) as manager:
        session = await manager.create_session(topic="t")
        other = await manager.create_session()
        await session.update(put("k", 1))
        await other.snapshot()
        before = await session.snapshot()
        stats = await manager.stats()
        assert (stats.active_actors, stats.passivated, stats.activations) == (2, 0, 2)
        await trio.sleep(5.0)
        await other.snapshot()
        await trio.sleep(6.0)
        stats = await manager.stats()
        assert (stats.active_actors, stats.passivated) == (1, 1)
        assert (stats.sessions, manager.session_count) == (2, 2)  # still live
        assert len(store) == 2
        after = await session.snapshot()
        assert attrs.evolve(after, metrics=before.metrics) == before
        stats = await manager.stats()
        assert (stats.active_actors, stats.activations) == (2, 3)
        state = await session.update(put("k", 2), expected_version=2)
        assert (state.version, state.data) == (3, {"k": 2})


async def test_passivation_keeps_the_session_metrics(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(passivate_after=10.0) as manager:
        session = await manager.create_session()
        await session.update(put("k", 1))
        await session.snapshot()
        before = (await session.snapshot()).metrics
        await trio.sleep(11.0)
        assert (await manager.stats()).passivated == 1
        after = (await session.snapshot()).metrics
        # counters never go backwards: the calls handled before passivation count
        assert after.operations >= before.operations


async def test_passivated_session_still_expires_by_ttl(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    store = triact.MemoryStore()
    async with open_manager(idle_ttl=100.0, passivate_after=10.0, store=store) as manager:
        session = await manager.create_session()
        await session.snapshot()
        await trio.sleep(50.0)
        assert await is_live(manager, session.id)
        assert (await manager.stats()).active_actors == 0
        await trio.sleep(51.0)
        assert not await is_live(manager, session.id)
        assert len(store) == 0
        stats = await manager.stats()
        assert (stats.expired, stats.passivated) == (1, 1)


async def test_a_busy_session_is_not_passivated(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(passivate_after=10.0) as manager:
        session = await manager.create_session()
        state = await session.update(sleep_then_put(50.0, "k", 1))
        assert state.version == 2
        stats = await manager.stats()
        assert (stats.active_actors, stats.passivated) == (1, 0)


async def test_many_passivations_and_activations_keep_every_change(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(passivate_after=1.0) as manager:
        session = await manager.create_session()
        for _ in range(20):
            await session.update(lambda s: attrs.evolve(s, data={"n": s.data.get("n", 0) + 1}))
            await trio.sleep(2.0)
        state = await session.snapshot()
        assert (state.version, state.data) == (21, {"n": 20})
        stats = await manager.stats()
        assert (stats.passivated, stats.activations) == (20, 21)


async def test_with_a_memory_store_an_idle_session_gives_its_actor_back(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    store = triact.MemoryStore()
    async with open_manager(store=store) as manager:
        session = await manager.create_session()
        await session.update(put("k", 1))
        before = await session.snapshot()
        assert (await manager.stats()).active_actors == 1
        await trio.sleep(MEMORY_ACTOR_IDLE * 0.9)
        assert (await manager.stats()).active_actors == 1
        await trio.sleep(MEMORY_ACTOR_IDLE * 0.2)
        stats = await manager.stats()
        assert (stats.active_actors, stats.passivated, stats.sessions) == (0, 1, 1)
        after = await session.snapshot()
        assert attrs.evolve(after, metrics=before.metrics) == before
        assert after.metrics.operations == before.metrics.operations + 1  # none lost
        # that read was cold: its actor left at once, and the store holds what the
        # session's record holds, every call counted (update, snapshot, snapshot)
        assert (await manager.stats()).active_actors == 0
        stored = await store.load(session.id)
        assert stored is not None
        assert stored.metrics.operations == 3
        state = await session.update(put("k", 2), expected_version=2)
        assert (state.version, state.data) == (3, {"k": 2})


async def test_a_cold_call_leaves_no_actor_behind_and_a_warm_one_keeps_it(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()
        await trio.sleep(MEMORY_ACTOR_IDLE * 5)
        state = await session.update(put("k", 1))  # cold: idle longer than an actor stays
        stats = await manager.stats()
        assert (stats.active_actors, stats.activations, stats.passivated) == (0, 1, 1)
        assert state.version == 2
        await session.update(put("k", 2))  # warm: its last call just ended
        await session.update(put("k", 3))
        stats = await manager.stats()
        assert (stats.active_actors, stats.activations, stats.passivated) == (1, 2, 1)
        final = await session.snapshot()
        assert (final.version, final.data, final.metrics.operations) == (4, {"k": 3}, 3)


async def test_a_cold_calls_queue_is_handled_in_order_before_its_actor_goes(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()
        await trio.sleep(MEMORY_ACTOR_IDLE * 5)
        order: list[int] = []

        def append(i: int) -> Callable[[triact.SessionState], triact.SessionState]:
            def change(state: triact.SessionState) -> triact.SessionState:
                order.append(i)
                seen = [*state.data.get("seen", []), i]
                return attrs.evolve(state, data={**state.data, "seen": seen})

            return change

        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.update, sleep_then_put(1.0, "first", 0))
            await trio.testing.wait_all_tasks_blocked()
            for i in range(5):  # queued behind the cold call, or after its actor left
                nursery.start_soon(session.update, append(i))
                await trio.testing.wait_all_tasks_blocked()
        state = await session.snapshot()
        assert order == list(range(5))
        assert (state.version, state.data["seen"], state.data["first"]) == (7, order, 0)


async def test_a_rate_limited_session_keeps_its_actor_until_its_bucket_is_full(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    # A new actor starts with a full bucket: the old one may not leave before its
    # bucket would be full again (burst / rate = 200 s), nor after a single call.
    async with open_manager(rate_limit=triact.RateLimit(rate=0.01, burst=2)) as manager:
        session = await manager.create_session()
        await session.snapshot()
        await session.snapshot()
        await trio.sleep(MEMORY_ACTOR_IDLE * 2)
        assert (await manager.stats()).active_actors == 1
        with pytest.raises(triact.SessionRateLimitError):
            await session.snapshot()
        await trio.sleep(250.0)
        assert (await manager.stats()).active_actors == 0
        await session.snapshot()  # cold, but not released at once: one token spent
        await session.snapshot()
        with pytest.raises(triact.SessionRateLimitError):
            await session.snapshot()


# -- at scale --------------------------------------------------------------------------


async def test_thousands_of_sessions_expire_at_once(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    store = triact.MemoryStore()
    async with open_manager(idle_ttl=60.0, store=store) as manager:
        sessions = [await manager.create_session() for _ in range(5000)]
        for session in sessions[::100]:
            await session.snapshot()
        assert manager.session_count == 5000
        await trio.sleep(61.0)
        assert manager.session_count == 0
        assert len(store) == 0
        stats = await manager.stats()
        assert (stats.expired, stats.active_actors) == (5000, 0)
        # and the manager still works afterwards
        fresh = await manager.create_session()
        assert (await fresh.update(put("k", 1))).version == 2
