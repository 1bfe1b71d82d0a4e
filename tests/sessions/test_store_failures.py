"""Store failures: an end or a removal whose delete fails, a group of changes whose
write fails."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import triact


class FlakyDeletes(triact.SqliteStore):
    """Fails the next ``failures`` deletes, as a full disk would."""

    shared = False  # the single-process durable path: deletes, not removals

    failures = 0

    async def delete(self, session_id: str) -> bool:
        if self.failures:
            self.failures -= 1
            await trio.lowlevel.checkpoint()
            raise sqlite3.OperationalError("database or disk is full")
        return await super().delete(session_id)


def stored_ids(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT id FROM sessions")]


async def test_an_end_whose_delete_fails_leaves_the_session_whole(tmp_path: Path) -> None:
    store = FlakyDeletes(tmp_path / "s.db")
    async with triact.open_session_manager(triact.SessionConfig(store=store)) as manager:
        session = await manager.create_session()
        store.failures = 1
        with pytest.raises(triact.SessionStoreError, match="disk is full"):
            await session.end()
        assert (await session.snapshot()).version == 1  # still there, still serving
        assert manager.session_count == 1
        final = await session.end()
        assert final.id == session.id
        assert manager.session_count == 0
    assert stored_ids(tmp_path / "s.db") == []


async def test_a_removal_whose_delete_fails_is_retried_by_the_store(tmp_path: Path) -> None:
    store = FlakyDeletes(tmp_path / "s.db")
    async with triact.open_session_manager(triact.SessionConfig(store=store)) as manager:
        session = await manager.create_session()
        store.failures = 1
        with pytest.raises(triact.SessionStoreError, match="will be retried"):
            await manager.remove_session(session.id)
        assert manager.session_count == 0
        with pytest.raises(triact.SessionNotFoundError):
            await manager.get_session(session.id)
    assert stored_ids(tmp_path / "s.db") == []  # the store's discard got it by close


class SlowDeletes(triact.SqliteStore):
    shared = False  # the single-process durable path: deletes, not removals

    async def delete(self, session_id: str) -> bool:
        await trio.sleep(1)
        return await super().delete(session_id)


async def test_a_removal_during_an_ends_delete_wins(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    store = SlowDeletes(tmp_path / "s.db")
    async with triact.open_session_manager(triact.SessionConfig(store=store)) as manager:
        session = await manager.create_session()
        events = manager.subscribe()
        outcome: list[object] = []

        async def end() -> None:
            try:
                outcome.append(await session.end())
            except triact.SessionError as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(end)
            await trio.sleep(0.5)
            assert await manager.remove_session(session.id)
        assert isinstance(outcome[0], triact.SessionClosedError)
        events.close()
        assert [e.kind async for e in events] == ["removed"]  # gone once, not twice


class SecondWriteFails(triact.SqliteStore):
    """Once armed, holds the first write until ``release`` is set, then fails the
    next one."""

    shared = False

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.holding = trio.Event()
        self.release = trio.Event()
        self.armed = False
        self.seen = 0

    async def write(self, state: triact.SessionState, **kwargs: Any) -> None:
        self.seen += self.armed
        if self.seen == 1:
            self.holding.set()
            await self.release.wait()
        elif self.seen == 2:
            await trio.lowlevel.checkpoint()
            raise sqlite3.OperationalError("database or disk is full")
        await super().write(state, **kwargs)


def bump(state: triact.SessionState) -> triact.SessionState:
    return state.with_data(n=state.data.get("n", 0) + 1)


async def test_every_caller_of_a_group_whose_write_failed_is_told_so(tmp_path: Path) -> None:
    store = SecondWriteFails(tmp_path / "s.db")
    async with triact.open_session_manager(triact.SessionConfig(store=store)) as manager:
        session = await manager.create_session()
        store.armed = True
        failures: list[BaseException] = []

        async def update() -> None:
            try:
                await session.update(bump)
            except triact.SessionStoreError as exc:
                failures.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(update)  # its write is held
            await store.holding.wait()
            nursery.start_soon(update)  # these two queue, and are written together
            nursery.start_soon(update)
            await trio.testing.wait_all_tasks_blocked()
            store.release.set()
        assert len(failures) == 2
        # The caller whose change began the group, then the one grouped with it.
        assert "disk is full" in str(failures[0])
        grouped = str(failures[1])
        assert "(2 changes; a store that lost its connection after the write" in grouped
        assert "read the session before retrying" in grouped
        assert "disk is full" in grouped
        # A driver's error the store did not classify: maybe saved, the safe answer.
        assert [getattr(f, "applied", "?") for f in failures] == [None, None]
        # Neither change was kept: the session is at the first update, still serving.
        assert (await session.snapshot()).data == {"n": 1}
        assert (await session.update(bump)).data == {"n": 2}


async def test_a_group_whose_transaction_never_began_says_nothing_was_saved(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    store = triact.SqliteStore(path, timeout=0.05)
    async with triact.open_session_manager(triact.SessionConfig(store=store)) as manager:
        session = await manager.create_session()
        failures: list[triact.SessionStoreError] = []

        async def update() -> None:
            try:
                await session.update(bump)
            except triact.SessionStoreError as exc:
                failures.append(exc)

        blocker = sqlite3.connect(path)  # holds the write lock: BEGIN IMMEDIATE fails
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(3):  # the first alone, the two made meanwhile together
                    nursery.start_soon(update)
        finally:
            blocker.rollback()
            blocker.close()
        assert len(failures) == 3
        assert all(failure.applied is False for failure in failures)
        grouped = [str(f) for f in failures if "was grouped in" in str(f)]
        assert grouped
        assert all("nothing of it was saved" in text for text in grouped)
        assert all("read the session" not in text for text in grouped)
        assert (await session.snapshot()).version == 1


class FailingLoads(triact.SqliteStore):
    """Fails every load once ``failing`` is set, as an unreadable disk would."""

    shared = False

    failing = False

    async def load(self, session_id: str) -> triact.SessionState | None:
        if self.failing:
            await trio.lowlevel.checkpoint()
            raise sqlite3.OperationalError("disk I/O error")
        return await super().load(session_id)


async def test_a_listing_whose_load_fails_says_nothing_was_saved(tmp_path: Path) -> None:
    store = FailingLoads(tmp_path / "s.db")
    async with triact.open_session_manager(triact.SessionConfig(store=store)) as manager:
        await manager.create_session()
    store = FailingLoads(tmp_path / "s.db")
    async with triact.open_session_manager(triact.SessionConfig(store=store)) as manager:
        store.failing = True  # the session is in the store only, not in memory
        with pytest.raises(triact.SessionStoreError, match="listing sessions") as raised:
            await manager.usable_sessions()
        assert raised.value.applied is False  # a read: a client may retry it as it is
