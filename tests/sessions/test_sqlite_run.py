"""SqliteStore.run: a layer's own SQL through the store's single connection, in its
batches and transactions."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio

from triact.sessions._errors import SessionStoreError
from triact.sessions._sqlite import SqliteStore
from triact.sessions._state import SessionState


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "s.db")
    async with store.open():
        await store.run(
            lambda conn: conn.execute("CREATE TABLE IF NOT EXISTS ext (k TEXT PRIMARY KEY)"),
            write=True,
        )
        yield store


def _keys(conn: sqlite3.Connection) -> list[str]:
    return [k for (k,) in conn.execute("SELECT k FROM ext ORDER BY k")]


def _insert(key: str, table: str = "ext") -> Callable[[sqlite3.Connection], int]:
    return lambda conn: conn.execute(f"INSERT INTO {table} (k) VALUES (?)", (key,)).rowcount


async def test_writes_commit_and_reads_see_them(store: SqliteStore) -> None:
    assert await store.run(_insert("a"), write=True) == 1
    assert await store.run(_keys, write=False) == ["a"]


async def test_a_failed_write_is_undone_alone(store: SqliteStore) -> None:
    state = SessionState(id="s1", version=1, created_at=1.0, last_used=1.0)
    outcomes: dict[str, object] = {}

    async def attempt(name: str, job: Awaitable[object]) -> None:
        try:
            outcomes[name] = await job
        except Exception as exc:
            outcomes[name] = exc

    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO ext (k) VALUES ('half')")
        raise LookupError("changed my mind")

    async with trio.open_nursery() as nursery:  # one batch: all queued before it runs
        nursery.start_soon(attempt, "good", store.run(_insert("b"), write=True))
        nursery.start_soon(attempt, "bad", store.run(half_then_fail, write=True))
        nursery.start_soon(attempt, "sql", store.run(_insert("c", "nowhere"), write=True))
        nursery.start_soon(attempt, "session", store.write(state, previous_version=None))
    assert isinstance(outcomes["bad"], LookupError)  # raised as it is
    sql_error = outcomes["sql"]
    assert isinstance(sql_error, SessionStoreError)
    assert "an extension's call failed" in str(sql_error)
    assert isinstance(sql_error.__cause__, sqlite3.OperationalError)
    assert sql_error.applied is False  # rolled back to its savepoint
    assert await store.run(_keys, write=False) == ["b"]
    loaded = await store.load("s1")
    assert loaded is not None
    assert loaded.version == 1


async def test_a_read_error_is_a_store_error(store: SqliteStore) -> None:
    with pytest.raises(SessionStoreError, match="no such table") as info:
        await store.run(lambda conn: conn.execute("SELECT * FROM nowhere"), write=False)
    assert info.value.applied is False


async def test_run_needs_an_open_store(tmp_path: Path) -> None:
    with pytest.raises(SessionStoreError, match="not open"):
        await SqliteStore(tmp_path / "x.db").run(_keys, write=False)
