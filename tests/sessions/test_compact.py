"""The memory store's compact states: a session without an actor costs the garbage
collector nothing, and comes back exactly as it was; at most SessionConfig.actors_kept
sessions keep an actor between calls."""

from __future__ import annotations

import gc

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import triact
from triact import SessionState, Thread
from triact.sessions._leases import Entry
from triact.sessions._manager import MEMORY_ACTOR_IDLE
from triact.sessions._state import compact, expand
from triact.testing import json_values, session_states

from ._helpers import OpenManager, put, sleep_then_put

# -- the compact form -------------------------------------------------------------------


@given(session_states)
def test_a_compact_state_expands_to_the_same_state(state: SessionState) -> None:
    held = compact(state)
    again = expand(state.id, held)
    assert again == state
    assert again is not state
    # == says 1 == 1.0 == True; the JSON does not, so the types came back too
    assert triact.encode_state(again) == triact.encode_state(state)
    assert attrs.evolve(again, data={"x": 1}).data == {"x": 1}  # frozen, usable


@given(st.dictionaries(st.text(max_size=5), json_values, max_size=5))
def test_a_state_without_records_is_kept_as_bytes_the_collector_never_tracks(
    data: dict[str, object],
) -> None:
    state = SessionState(
        id="s", version=7, created_at=1.0, last_used=2.0, data=data, metadata={"m": [1]}
    )
    held = compact(state)
    assert type(held) is bytes
    assert not gc.is_tracked(held)
    assert expand("s", held) == state


def test_a_state_with_records_is_kept_as_a_tuple() -> None:
    state = SessionState(id="s", version=1, created_at=1.0, last_used=1.0)
    state = attrs.evolve(state, threads=(Thread("t", 1.0),))
    held = compact(state)
    assert type(held) is tuple
    assert expand("s", held) == state


# -- the memory store --------------------------------------------------------------------


async def test_the_memory_store_keeps_idle_states_compact_and_checks_versions() -> None:
    store = triact.MemoryStore()
    state = SessionState(id="s", version=1, created_at=1.0, last_used=1.0, data={"n": 1})
    store.keep_idle(state, previous_version=None)
    assert await store.load("s") == state
    assert [entry.version for entry in await store.index()] == [1]
    newer = attrs.evolve(state, version=2)
    with pytest.raises(triact.SessionConcurrencyError, match="holds version 1"):
        store.write_now(newer, previous_version=2)  # checked against the compact form
    taken = store.take_up("s")
    assert taken == state
    assert store.load_now("s") is taken  # held itself while an actor has it
    store.write_now(newer, previous_version=1)
    with pytest.raises(triact.SessionConcurrencyError):
        store.keep_idle(state, previous_version=1)
    assert store.load_now("s") is newer
    assert store.take_up("missing") is None
    # (the compact dict keeps its keys while states come and go, so that it is never
    # rebuilt whole by a call; a session in use is b"" there)
    assert (len(store), store._compact) == (1, {"s": b""})
    store.keep_idle(newer, previous_version=2)
    assert (len(store), list(store._compact)) == (1, ["s"])
    assert store.load_now("s") == newer
    assert await store.delete("s")
    assert (len(store), store.load_now("s"), await store.delete("s")) == (0, None, False)


# -- sessions ----------------------------------------------------------------------------


def _tracked() -> int:
    gc.collect()
    gc.collect()  # (a nested tuple stops being tracked one collection later)
    return len(gc.get_objects())


async def test_idle_called_sessions_leave_almost_nothing_tracked(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    n = 300
    store = triact.MemoryStore()
    async with open_manager(max_sessions=n, store=store) as manager:
        before = _tracked()
        sessions = [await manager.create_session(topic="t") for _ in range(n)]
        for session in sessions:
            await session.update(put("n", 1))
            await session.update(lambda s: s.with_data(n=s.data["n"] + 1))
        await trio.sleep(MEMORY_ACTOR_IDLE + 1)
        assert (await manager.stats()).active_actors == 0
        del session
        per_session = (_tracked() - before) / n
        # the compact states are held by a dict the collector never tracks (were it
        # tracked, a call would put it, a million entries, in the young generation)
        assert not gc.is_tracked(store._compact)
        # the handles (one each, held here), the record and its deadline
        assert per_session <= 3.2, per_session
        states = [await s.snapshot() for s in sessions]
    assert [(s.version, dict(s.data), s.topic) for s in states] == [(3, {"n": 2}, "t")] * n
    assert [s.metrics.operations for s in states] == [2] * n  # (a read counts once done)


async def test_idle_sessions_without_handles_leave_nothing_tracked(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    n = 300
    async with open_manager(max_sessions=n, idle_ttl=3600.0) as manager:
        before = _tracked()
        ids = [(await manager.create_session(client_id=f"c{i % 3}")).id for i in range(n)]
        for session_id in ids:
            await (await manager.get_session(session_id)).update(put("n", 1))
        await trio.sleep(MEMORY_ACTOR_IDLE + 1)
        assert (await manager.stats()).active_actors == 0
        # no record, no deadline, no container that holds them is tracked: what is
        # new is Trio's (the sleeps of the reapers, a few dozen objects)
        extra = _tracked() - before
        assert extra < n / 5, extra
        assert not any(type(o) is Entry for o in gc.get_objects())
        # and each session is all there: listed, counted, by its client, callable
        assert manager.session_ids() == ids
        listed = await manager.list_sessions(limit=n)
        assert sorted((e.id, e.client_id, e.version) for e in listed) == sorted(
            (session_id, f"c{i % 3}", 2) for i, session_id in enumerate(ids)
        )
        state = await (await manager.get_session(ids[7])).update(put("n", 2))
        assert (state.version, state.data) == (3, {"n": 2})
        await trio.sleep(3600.0 - MEMORY_ACTOR_IDLE - 2)
        assert manager.session_count == n  # (their TTL runs from their last call)
        await trio.sleep(2.0)
        assert manager.session_ids() == [ids[7]]
        await trio.sleep(MEMORY_ACTOR_IDLE + 1)
        assert manager.session_count == 0
        assert (await manager.stats()).expired == n


async def test_a_filed_session_has_one_record_for_all_its_handles(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(idle_ttl=3600.0) as manager:
        first = await manager.create_session()
        second = await manager.get_session(first.id)
        assert second._entry is first._entry
        await second.update(put("k", 1))
        await trio.sleep(MEMORY_ACTOR_IDLE + 1)  # its actor left: the record is filed
        third = await manager.get_session(first.id)
        assert third._entry is first._entry
        assert await manager.remove_session(first.id)
        assert "removed" in repr(first)
        with pytest.raises(triact.SessionNotFoundError, match="removed"):
            await third.snapshot()
        assert not await manager.remove_session(first.id)
        with pytest.raises(triact.SessionNotFoundError):
            await manager.get_session(first.id)


async def test_a_cancelled_call_of_a_filed_session_counts_as_use_after_its_handle_goes(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(idle_ttl=100.0) as manager:
        session = await manager.create_session()
        session_id = session.id
        await session.update(put("k", 1))
        await trio.sleep(MEMORY_ACTOR_IDLE + 1)
        with trio.move_on_after(10.0):
            await session.update(sleep_then_put(50.0, "k", 2))
        cancelled_at = trio.current_time()
        del session  # its record goes with it: the stamp of the call is filed
        await trio.sleep(MEMORY_ACTOR_IDLE + 1)
        assert (await manager.stats()).active_actors == 0
        await trio.sleep(cancelled_at + 99.0 - trio.current_time())
        assert manager.session_ids() == [session_id]
        await trio.sleep(2.0)
        assert manager.session_count == 0


async def test_a_compact_session_comes_back_whole(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager() as manager:
        session = await manager.create_session(topic="t", metadata={"m": 1})
        created = await session.snapshot()
        await session.add_thread("a", system_prompt="p")
        state = await session.update(put("k", {"nested": [1, 2.5, None]}))
        await trio.sleep(MEMORY_ACTOR_IDLE + 1)
        assert (await manager.stats()).active_actors == 0
        again = await session.snapshot()
        assert attrs.evolve(again, metrics=state.metrics) == state
        assert again.metrics.operations == state.metrics.operations  # (it counted itself)
        assert (again.created_at, again.metadata) == (created.created_at, {"m": 1})
        with pytest.raises(triact.SessionConcurrencyError):
            await session.update(put("k", 2), expected_version=state.version - 1)
        assert (await session.update(put("k", 2))).version == state.version + 1


async def test_a_failing_or_cancelled_update_of_a_compact_session_changes_nothing(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()
        await session.update(put("k", 1))
        await trio.sleep(MEMORY_ACTOR_IDLE + 1)

        def fail(state: SessionState) -> SessionState:
            raise RuntimeError("no")

        with pytest.raises(RuntimeError):
            await session.update(fail)
        await trio.sleep(MEMORY_ACTOR_IDLE + 1)
        with trio.move_on_after(1.0):
            await session.update(sleep_then_put(5.0, "k", 2))
        await trio.sleep(MEMORY_ACTOR_IDLE + 1)
        state = await session.snapshot()
        assert (state.version, state.data) == (2, {"k": 1})


async def test_at_most_actors_kept_sessions_keep_an_actor(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(actors_kept=3) as manager:
        sessions = [await manager.create_session() for _ in range(10)]
        for round_ in range(3):
            for i, session in enumerate(sessions):
                await session.update(put("n", (round_, i)))
                assert (await manager.stats()).active_actors <= 3
        # the session used last keeps its actor: a second chance for what was used
        hot = sessions[0]
        await hot.update(put("hot", 1))
        for session in sessions[1:5]:
            await session.update(put("n", 0))
            await hot.update(put("hot", 1))
            assert hot._entry.ref is not None
        states = [await s.snapshot() for s in sessions]
        assert [s.version for s in states] == [9] + [5] * 4 + [4] * 5
        stats = await manager.stats()
        assert stats.active_actors <= 3
        await trio.sleep(MEMORY_ACTOR_IDLE * 2 + 1)
        assert (await manager.stats()).active_actors == 0


async def test_a_busy_actor_is_not_let_go_and_its_update_stays_atomic(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(actors_kept=3) as manager:
        busy = await manager.create_session()
        others = [await manager.create_session() for _ in range(6)]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(busy.update, sleep_then_put(10.0, "k", "done"))
            await trio.testing.wait_all_tasks_blocked()
            for session in others:
                await session.update(put("n", 1))
            assert busy._entry.ref is not None
            assert busy._entry.ref.busy
            cancelled = trio.CancelScope()

            async def cancelled_update() -> None:
                with cancelled:
                    await busy.update(sleep_then_put(10.0, "k", "never"))

            nursery.start_soon(cancelled_update)
            await trio.testing.wait_all_tasks_blocked()
            cancelled.cancel()
        state = await busy.snapshot()
        assert (state.version, state.data) == (2, {"k": "done"})
        assert (await manager.stats()).active_actors <= 3


async def test_listing_gives_each_sessions_committed_version(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager() as manager:
        held, filed = await manager.create_session(), await manager.create_session()
        for _ in range(3):
            await held.update(put("n", 1))
        await filed.update(put("n", 1))
        await trio.sleep(MEMORY_ACTOR_IDLE + 1)  # filed's actor goes...
        await held.update(put("n", 2))  # a cold call: its actor leaves at once
        await held.update(put("n", 3))  # a warm one: its actor stays, with the state
        assert (await manager.stats()).active_actors == 1
        listed = {e.id: e.version for e in await manager.list_sessions()}
        assert listed == {held.id: 6, filed.id: 2}  # created at 1
