"""The work tables in a SqliteStore's file, when other processes use that file."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

import triact
from tests._serving import serving
from triact.work import WorkConfig, open_work_sessions


@contextmanager
def write_locked(path: Path) -> Iterator[None]:
    """Another process's write transaction, held open on ``path`` (as one paused
    inside its transaction holds it)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
    finally:
        conn.close()


async def lay_out(path: Path) -> None:
    """The work tables made in ``path``, with one reflection, by a first process."""
    config = triact.SessionConfig(store=triact.SqliteStore(path))
    async with (
        triact.open_session_manager(config) as manager,
        open_work_sessions(manager, WorkConfig(semantic="off")) as work,
    ):
        await work.store_reflection("we re-read the version and retry", project="p")


async def found(path: Path, *, timeout: float) -> list[str]:
    """The reflections of project p matching "retry", read by a new process whose
    store waits at most ``timeout`` seconds for a lock."""
    config = triact.SessionConfig(store=triact.SqliteStore(path, timeout=timeout))
    async with (
        triact.open_session_manager(config) as manager,
        open_work_sessions(manager, WorkConfig(semantic="off")) as work,
    ):
        search = await work.search_reflections("retry", project="p")
    return [hit.reflection.content for hit in search.hits]


async def test_work_sessions_open_while_another_process_holds_the_write_lock(
    sqlite_path: Path,
) -> None:
    # A process restarted while another is paused inside a write used to wait out the
    # busy timeout for a lock it did not need, and then fail to start.
    await lay_out(sqlite_path)
    with write_locked(sqlite_path), trio.fail_after(10):
        assert await found(sqlite_path, timeout=0.5) == ["we re-read the version and retry"]


async def test_a_missing_work_table_is_made_again(sqlite_path: Path) -> None:
    await lay_out(sqlite_path)
    with sqlite3.connect(sqlite_path) as conn:
        conn.execute("DROP INDEX work_vectors_by_model")
    conn.close()
    assert await found(sqlite_path, timeout=5) == ["we re-read the version and retry"]
    with sqlite3.connect(sqlite_path) as conn:
        query = "SELECT count(*) FROM sqlite_master WHERE name = 'work_vectors_by_model'"
        assert conn.execute(query).fetchone() == (1,)
    conn.close()


async def test_a_file_without_the_work_tables_waits_for_the_lock_and_says_so(
    sqlite_path: Path,
) -> None:
    config = triact.SessionConfig(store=triact.SqliteStore(sqlite_path))
    async with triact.open_session_manager(config):
        pass  # the session tables only
    with (
        write_locked(sqlite_path),
        pytest.raises(triact.SessionStoreError, match="database is locked") as caught,
    ):
        await found(sqlite_path, timeout=0.2)
    assert caught.value.applied is False


def test_serve_starts_and_answers_while_another_process_holds_the_write_lock(
    sqlite_path: Path,
) -> None:
    trio.run(lay_out, sqlite_path)
    with (
        write_locked(sqlite_path),
        serving("--semantic", "off", store=f"sqlite:{sqlite_path}") as call,
    ):
        result = call("reflection_search", {"query": "retry", "project": "p"})
        assert result["isError"] is False
        hits = result["structuredContent"]["results"]
        assert [hit["content"] for hit in hits] == ["we re-read the version and retry"]
