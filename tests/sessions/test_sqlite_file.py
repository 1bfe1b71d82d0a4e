"""The SQLite store's file: created owner-only, marked as triact's, other files left
unchanged, corruption called corruption, a deleted or replaced file noticed."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import triact
from triact.sessions import SessionStoreError, SqliteStore
from triact.sessions._sqlite_file import APPLICATION_ID


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot_dir(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


async def create_sessions(store: SqliteStore, count: int) -> list[str]:
    async with triact.open_session_manager(triact.SessionConfig(store=store)) as manager:
        return [(await manager.create_session(topic="x" * 500)).id for _ in range(count)]


async def test_a_new_store_file_is_owner_only_and_marked(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(path)
    with umask(0o022):
        async with store.open():
            await store.write(triact.SessionState("s1", 1, 1.0, 1.0), previous_version=None)
            companions = [path.with_name(path.name + s) for s in ("-wal", "-shm")]
            assert [mode(p) for p in (path, *companions)] == [0o600, 0o600, 0o600]
    with raw(path) as conn:
        assert conn.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)


async def test_another_applications_database_is_refused_and_left_unchanged(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.db"
    with raw(path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        conn.execute("INSERT INTO notes (text) VALUES ('keep me')")
    before = snapshot_dir(tmp_path)
    with pytest.raises(SessionStoreError, match=r"another application.*left unchanged"):
        async with SqliteStore(path).open():
            pytest.fail("opened another application's database")
    assert snapshot_dir(tmp_path) == before  # no WAL switch, no tables, no new files
    with raw(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)


async def test_a_database_with_another_application_id_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with raw(path) as conn:
        conn.execute("PRAGMA application_id = 1234")
    before = snapshot_dir(tmp_path)
    with pytest.raises(SessionStoreError, match="application id 0x4d2"):
        async with SqliteStore(path).open():
            pass
    assert snapshot_dir(tmp_path) == before


async def test_a_file_that_is_not_sqlite_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, these are my notes\n" * 200)
    before = snapshot_dir(tmp_path)
    with pytest.raises(SessionStoreError, match="not a SQLite database"):
        async with SqliteStore(path).open():
            pass
    assert snapshot_dir(tmp_path) == before


async def test_a_store_made_before_the_mark_opens_and_is_marked(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    ids = await create_sessions(SqliteStore(path), 2)
    with raw(path) as conn:
        conn.execute("PRAGMA application_id = 0")
    store = SqliteStore(path)
    async with store.open():
        assert sorted(entry.id for entry in await store.index()) == sorted(ids)
    with raw(path) as conn:
        assert conn.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)


def corrupt(path: Path, start: int, end: int) -> None:
    data = bytearray(path.read_bytes())
    data[start:end] = b"\xa5" * (end - start)
    path.write_bytes(bytes(data))


async def test_a_corrupt_schema_page_is_reported_as_corruption(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    await create_sessions(SqliteStore(path), 50)
    corrupt(path, 100, 1000)  # page 1: the schema
    with pytest.raises(SessionStoreError, match=r"is corrupt.*malformed.*backup") as info:
        async with SqliteStore(path).open():
            pass
    assert "not a triact session store" not in str(info.value)


async def test_a_corrupt_data_page_is_reported_as_corruption(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    await create_sessions(SqliteStore(path), 50)
    page = 4096
    size = path.stat().st_size
    for start in range(page, size, page):  # every page but the schema's
        corrupt(path, start + 8, start + 600)
    store = SqliteStore(path)
    with pytest.raises(SessionStoreError, match=r"corrupt.*backup") as info:
        async with store.open():
            await store.index()
    assert "not a triact session store" not in str(info.value)


async def test_opening_a_store_in_a_missing_directory_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "s.db"
    with pytest.raises(SessionStoreError, match="does not exist"):
        async with SqliteStore(path).open():
            pass
    assert snapshot_dir(tmp_path) == {}


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_a_file_deleted_or_replaced_while_open_refuses_changes(
    tmp_path: Path, how: str
) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(path)
    async with store.open():
        await store.write(triact.SessionState("s1", 1, 1.0, 1.0), previous_version=None)
        assert await store.check() is None
        for name in (path.name, path.name + "-wal", path.name + "-shm"):
            (tmp_path / name).unlink()
        if how == "replaced":
            path.write_bytes(b"")
        problem = await store.check()
        assert problem is not None
        assert how in problem
        assert str(tmp_path) not in problem  # fit for clients: no path
        with pytest.raises(SessionStoreError, match=how):
            await store.write(triact.SessionState("s2", 1, 1.0, 1.0), previous_version=None)
        with pytest.raises(SessionStoreError, match=how):
            await store.delete("s1")
