"""Passivation with a durable store: the state leaves memory, and the first call after
brings it back inside the actor, so calls keep their arrival order."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

import triact
from triact.testing import FaultyStore


def appended(index: int) -> object:
    def fn(state: triact.SessionState) -> triact.SessionState:
        return attrs.evolve(state, data={"order": [*state.data.get("order", []), index]})

    return fn


class FlakyLoads(triact.SqliteStore):
    """Fails the next ``failures`` loads (activations: a shared store's loads), as a
    locked database would."""

    failures = 0

    async def activate(
        self, session_id: str, *, node: str, lease: float, now: float, force: bool = False
    ) -> triact.Activation | None:
        if self.failures:
            self.failures -= 1
            await trio.lowlevel.checkpoint()
            raise sqlite3.OperationalError("database is locked")
        return await super().activate(session_id, node=node, lease=lease, now=now, force=force)


def config(store: triact.SessionStore) -> triact.SessionConfig:
    return triact.SessionConfig(idle_ttl=1000.0, passivate_after=10.0, store=store)


async def test_calls_to_a_passivated_session_keep_their_arrival_order(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    called: list[int] = []
    async with triact.open_session_manager(config(triact.SqliteStore(tmp_path / "s.db"))) as m:
        session = await m.create_session()
        await session.snapshot()  # an actor, which then passivates
        await trio.sleep(11)
        assert (await m.stats()).passivated == 1

        async def call(index: int) -> None:
            called.append(index)  # no schedule point between this and the mailbox
            await session.update(appended(index))  # type: ignore[arg-type]

        async with trio.open_nursery() as nursery:
            for index in range(20):
                nursery.start_soon(call, index)
        state = await session.snapshot()
    assert state.data["order"] == called
    assert state.version == 21


async def test_a_failed_load_fails_that_call_and_the_next_one_loads(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    store = FlakyLoads(tmp_path / "s.db")
    async with triact.open_session_manager(config(store)) as manager:
        session = await manager.create_session()
        await session.update(appended(1))  # type: ignore[arg-type]
        await trio.sleep(11)
        store.failures = 1
        with pytest.raises(triact.SessionStoreError, match=f"{session.id}.*database is locked"):
            await session.snapshot()
        state = await session.snapshot()
        assert (state.version, state.data["order"]) == (2, [1])


async def test_a_session_gone_from_the_store_is_not_found(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "s.db"
    async with triact.open_session_manager(config(triact.SqliteStore(path))) as manager:
        session = await manager.create_session()
        await session.snapshot()
        await trio.sleep(11)
        with sqlite3.connect(path) as db:  # another process ended it
            db.execute("DELETE FROM sessions WHERE id = ?", (session.id,))
        with pytest.raises(triact.SessionNotFoundError, match="no longer in the store"):
            await session.snapshot()
        assert manager.session_count == 0


async def test_set_working_directory_keeps_its_place_in_the_order(tmp_path: Path) -> None:
    async with triact.open_session_manager() as manager:
        session = await manager.create_session()
        seen: list[str | None] = []

        def read_directory(state: triact.SessionState) -> triact.SessionState:
            seen.append(state.working_directory)
            return state

        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.set_working_directory, str(tmp_path))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(session.update, read_directory)
    assert seen == [str(tmp_path)]


async def test_events_of_a_passivated_session_carry_its_stored_version(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FaultyStore(triact.MemoryStore())  # a durable store, without threads
    settings = triact.SessionConfig(idle_ttl=100.0, passivate_after=10.0, store=store)
    async with triact.open_session_manager(settings) as manager:
        with manager.subscribe() as events:
            session = await manager.create_session()
            await session.update(appended(1))
            await session.update(appended(2))  # version 3
            await trio.sleep(50.0)  # passivated at 10 s
            assert (await manager.stats()).active_actors == 0
            await trio.sleep(100.0)  # expired at 110 s
            assert manager.session_count == 0
            seen = [(event.kind, event.version) async for event in _until_expired(events)]
    assert seen[-1] == ("expired", 3)


async def _until_expired(events: triact.Subscription) -> AsyncIterator[triact.SessionEvent]:
    async for event in events:
        yield event
        if event.kind == "expired":
            return


async def test_a_restarted_manager_reports_the_stored_version_of_what_it_adopted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    async with triact.open_session_manager(config(triact.SqliteStore(path))) as manager:
        session = await manager.create_session()
        await session.update(appended(1))  # version 2
    async with triact.open_session_manager(config(triact.SqliteStore(path))) as manager:
        with manager.subscribe() as events:
            assert await manager.remove_session(session.id)
            event = await events.__anext__()
    assert (event.kind, event.session_id, event.version) == ("removed", session.id, 2)
