"""Store failures on the way out: an end or a removal whose delete fails."""

from __future__ import annotations

import sqlite3
from pathlib import Path

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
