"""SqliteStore on a real SQLite file: round trips, compare-and-set, group commit,
failures, cancellation, reopening."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import triact
from triact.sessions import _sqlite as sqlite_module
from triact.sessions._codec import encode_state
from triact.sessions._errors import (
    SessionConcurrencyError,
    SessionDataError,
    SessionError,
    SessionStoreError,
)
from triact.sessions._sqlite import _GATHER_ROUNDS, SqliteStore
from triact.sessions._state import (
    AnalysisRecord,
    ClientBinding,
    RequestRecord,
    SecurityEvent,
    SessionMetrics,
    SessionState,
    Thread,
    ThreadMessage,
)
from triact.sessions._store import IndexEntry


def make_state(session_id: str = "s1", version: int = 1, **changes: Any) -> SessionState:
    return SessionState(
        id=session_id, version=version, created_at=1000.0, last_used=1000.5, **changes
    )


def rich_state() -> SessionState:
    return make_state(
        "rich",
        7,
        topic="naming things",
        working_directory="/srv/project",
        project_id="p-9",
        threads=(
            Thread(
                "critic",
                1000.1,
                "Be harsh.",
                (
                    ThreadMessage("user", "hello ✓", 1000.2),
                    ThreadMessage("assistant", "no", 1000.3),
                ),
            ),
        ),
        analyses=(AnalysisRecord("why?", {"critic": "because"}, 1000.4, 0.25),),
        data={"nested": {"list": [1, 2.5, None, "x"]}, "flag": True},
        metrics=SessionMetrics(operations=3, errors=1, total_latency=0.75, max_latency=0.5),
        client_binding=ClientBinding("ab" * 32, 1000.0, "client-1"),
        security_events=(SecurityEvent("invalid_token", 1000.2, "tool", "refused"),),
        active_requests=(RequestRecord("rich:c:1:1000:abc", "c", 1000.3, tool_name="tool"),),
        completed_requests=(
            RequestRecord("rich:c:0:999:def", "c", 999.0, "failed", None, 999.5, "boom"),
        ),
        request_counter=2,
        metadata={"origin": "test"},
    )


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection of the test's own, in autocommit mode."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        yield conn


@contextmanager
def write_lock(path: Path) -> Iterator[sqlite3.Connection]:
    """Hold the database's write lock from another connection until the block ends
    (or the test runs ROLLBACK on the connection)."""
    with raw(path) as conn:
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")


def creating(store: SqliteStore, state: SessionState) -> Callable[[], Awaitable[None]]:
    """A call that stores ``state`` as a new session."""
    return lambda: store.write(state, previous_version=None)


async def attempt(
    results: dict[str, object], key: str, call: Callable[[], Awaitable[object]]
) -> None:
    try:
        results[key] = await call()
    except SessionError as exc:
        results[key] = exc


async def run_in_one_batch(
    store: SqliteStore, path: Path, calls: dict[str, Callable[[], Awaitable[object]]]
) -> dict[str, object]:
    """Queue ``calls`` in order while the db task is stalled on a lock, so that they
    all land in its next batch; the outcome (result or SessionError) of each."""
    results: dict[str, object] = {}
    async with trio.open_nursery() as nursery:
        with write_lock(path) as lock:
            store.discard("stall")  # this batch's transaction waits for the lock
            await trio.testing.wait_all_tasks_blocked()
            for key, call in calls.items():
                nursery.start_soon(attempt, results, key, call)
                await trio.testing.wait_all_tasks_blocked()
            lock.execute("ROLLBACK")
    return results


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "sessions.db"


async def test_write_then_load_round_trips_a_rich_state(path: Path) -> None:
    store = SqliteStore(path)
    state = rich_state()
    async with store.open():
        await store.write(state, previous_version=None)
        loaded = await store.load("rich")
    assert loaded == state
    assert store.writes == 1
    assert store.transactions == 1


async def test_load_of_unknown_session_is_none(path: Path) -> None:
    async with (store := SqliteStore(path)).open():
        assert await store.load("nobody") is None


async def test_update_with_the_right_previous_version_replaces_the_row(path: Path) -> None:
    store = SqliteStore(path)
    async with store.open():
        await store.write(make_state(version=1), previous_version=None)
        await store.write(make_state(version=2, topic="later"), previous_version=1)
        loaded = await store.load("s1")
    assert loaded is not None
    assert (loaded.version, loaded.topic) == (2, "later")


async def test_write_with_a_stale_previous_version_is_a_conflict(path: Path) -> None:
    store = SqliteStore(path)
    async with store.open():
        await store.write(make_state(version=1), previous_version=None)
        with pytest.raises(
            SessionConcurrencyError, match="store holds version 1, expected 5"
        ) as info:
            await store.write(make_state(version=6, topic="lost"), previous_version=5)
        assert (info.value.expected, info.value.actual) == (5, 1)
        loaded = await store.load("s1")
    assert loaded is not None
    assert loaded.topic is None
    assert store.writes == 1


async def test_creating_a_stored_session_again_is_a_conflict(path: Path) -> None:
    store = SqliteStore(path)
    async with store.open():
        await store.write(make_state(version=1), previous_version=None)
        with pytest.raises(SessionConcurrencyError, match="expected None") as info:
            await store.write(make_state(version=1, topic="dup"), previous_version=None)
        assert (info.value.expected, info.value.actual) == (-1, 1)


async def test_updating_a_session_that_is_not_stored_is_a_conflict(path: Path) -> None:
    store = SqliteStore(path)
    async with store.open():
        with pytest.raises(SessionConcurrencyError, match="store holds version None") as info:
            await store.write(make_state(version=2), previous_version=1)
        assert info.value.actual == -1
        assert await store.load("s1") is None


async def staggered_writes(store: SqliteStore, count: int) -> None:
    """Write sessions w0, w1, ...: the i-th queues its write i scheduler rounds after
    the first, as tasks woken one after another by a commit do."""

    async def write(i: int) -> None:
        for _ in range(i):
            await trio.lowlevel.checkpoint()
        await store.write(make_state(f"w{i}"), previous_version=None)

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(write, i)


async def test_writes_queued_in_the_rounds_that_follow_join_the_batch(tmp_path: Path) -> None:
    # Trio runs each scheduler round in one of two orders, at random, and the batch
    # cannot see every order's late jobs (here it misses the last in about one run
    # in two). Without gathering, no run folds the three into one transaction; with
    # it, the chance that none of 30 runs does is about 0.5 ** 30.
    folded = 0
    for run in range(30):
        store = SqliteStore(tmp_path / f"{run}.db")
        async with store.open():
            await staggered_writes(store, 3)
        assert store.writes == 3
        folded += store.transactions == 1
    assert folded >= 1


async def test_a_batch_waits_a_bounded_number_of_rounds_for_more(path: Path) -> None:
    store = SqliteStore(path)
    async with store.open():
        await staggered_writes(store, 3 * _GATHER_ROUNDS)  # a job every round
    assert store.writes == 3 * _GATHER_ROUNDS
    assert store.transactions >= 2  # the first did not wait for them all


async def test_concurrent_writes_of_many_sessions_share_transactions(path: Path) -> None:
    store = SqliteStore(path)
    async with store.open():
        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(creating(store, make_state(f"s{i}", topic=f"t{i}")))
        loaded = [await store.load(f"s{i}") for i in range(50)]
    assert [s.topic if s else None for s in loaded] == [f"t{i}" for i in range(50)]
    assert store.writes == 50
    assert store.transactions < store.writes


async def test_writes_of_one_session_in_one_batch_apply_in_order(path: Path) -> None:
    store = SqliteStore(path)
    async with store.open():
        before = store.transactions
        results = await run_in_one_batch(
            store,
            path,
            {
                "create": lambda: store.write(make_state(version=1), previous_version=None),
                "update": lambda: store.write(make_state(version=2, topic="b"), previous_version=1),
                "again": lambda: store.write(make_state(version=3, topic="c"), previous_version=2),
            },
        )
        loaded = await store.load("s1")
    assert results == {"create": None, "update": None, "again": None}
    assert loaded is not None
    assert (loaded.version, loaded.topic) == (3, "c")
    assert store.transactions == before + 2  # the stalled discard's, and this batch's


async def test_a_conflict_in_a_batch_fails_only_that_write(path: Path) -> None:
    store = SqliteStore(path)
    async with store.open():
        results = await run_in_one_batch(
            store,
            path,
            {
                "first": lambda: store.write(make_state(topic="first"), previous_version=None),
                "second": lambda: store.write(make_state(topic="second"), previous_version=None),
                "other": lambda: store.write(make_state("s2"), previous_version=None),
            },
        )
        loaded = await store.load("s1")
        other = await store.load("s2")
    assert isinstance(results["second"], SessionConcurrencyError)
    assert results["first"] is None
    assert results["other"] is None
    assert loaded is not None
    assert loaded.topic == "first"
    assert other is not None
    assert store.writes == 2


async def stored_sessions(store: SqliteStore, *ids: str) -> None:
    for session_id in ids:
        await store.write(make_state(session_id), previous_version=None)


def updating(store: SqliteStore, session_id: str, version: int, topic: str) -> Any:
    """A call that stores version ``version`` over ``version - 1``."""
    state = make_state(session_id, version, topic=topic)
    return lambda: store.write(state, previous_version=version - 1)


async def test_updates_in_a_batch_commit_together_in_order(path: Path) -> None:
    store = SqliteStore(path)
    async with store.open():
        await stored_sessions(store, "a", "b")
        before = store.transactions
        results = await run_in_one_batch(
            store,
            path,
            {
                "a2": updating(store, "a", 2, "a2"),
                "b2": updating(store, "b", 2, "b2"),
                "a3": updating(store, "a", 3, "a3"),  # over the a2 of this same batch
            },
        )
        loaded = [await store.load(i) for i in ("a", "b")]
    assert results == {"a2": None, "b2": None, "a3": None}
    assert [(s.version, s.topic) for s in loaded if s] == [(3, "a3"), (2, "b2")]
    assert store.transactions == before + 2  # the stall's, and this batch's


async def test_a_stale_update_in_a_batch_fails_only_that_write(path: Path) -> None:
    store = SqliteStore(path)
    async with store.open():
        await stored_sessions(store, "a", "b", "c")
        results = await run_in_one_batch(
            store,
            path,
            {
                "a2": updating(store, "a", 2, "a2"),
                "b5": updating(store, "b", 5, "stale"),  # b is at version 1
                "c2": updating(store, "c", 2, "c2"),
            },
        )
        loaded = [await store.load(i) for i in ("a", "b", "c")]
    assert results["a2"] is None
    assert results["c2"] is None
    conflict = results["b5"]
    assert isinstance(conflict, SessionConcurrencyError)
    assert "store holds version 1, expected 4" in str(conflict)
    assert [(s.version, s.topic) for s in loaded if s] == [(2, "a2"), (1, None), (2, "c2")]


async def test_a_write_is_visible_to_other_connections_once_it_returns(path: Path) -> None:
    store = SqliteStore(path, synchronous="NORMAL")
    async with store.open():
        await store.write(make_state(version=4), previous_version=None)
        with raw(path) as conn:
            rows = conn.execute("SELECT id, version FROM sessions").fetchall()
    assert rows == [("s1", 4)]


async def test_delete_reports_whether_the_session_was_stored(path: Path) -> None:
    store = SqliteStore(path)
    async with store.open():
        await store.write(make_state(), previous_version=None)
        assert await store.delete("s1") is True
        assert await store.delete("s1") is False
        assert await store.load("s1") is None


async def test_index_lists_sessions_with_their_client_ids_and_versions(path: Path) -> None:
    store = SqliteStore(path)
    async with store.open():
        await store.write(rich_state(), previous_version=None)
        await store.write(make_state("plain"), previous_version=None)
        await store.write(make_state("gone"), previous_version=None)
        await store.delete("gone")
        entries = sorted(await store.index(), key=lambda e: e.id)
    assert entries == [
        IndexEntry("plain", 1000.0, 1000.5, None, version=1),
        IndexEntry("rich", 1000.0, 1000.5, "client-1", version=rich_state().version),
    ]


async def test_discards_are_durable_when_open_exits(path: Path) -> None:
    store = SqliteStore(path)
    async with store.open():
        for i in range(3):
            await store.write(make_state(f"s{i}"), previous_version=None)
    async with store.open():
        store.discard("s0")
        store.discard("s2")
        store.discard("never-stored")
    with raw(path) as conn:
        assert conn.execute("SELECT id FROM sessions").fetchall() == [("s1",)]


async def test_state_survives_closing_and_a_new_store_on_the_same_file(path: Path) -> None:
    async with (first := SqliteStore(path)).open():
        await first.write(rich_state(), previous_version=None)
    second = SqliteStore(str(path))
    async with second.open():
        loaded = await second.load("rich")
        await second.write(attrs.evolve(rich_state(), version=8), previous_version=7)
    assert loaded == rich_state()
    async with second.open():  # a store can be opened again after closing
        again = await second.load("rich")
    assert again is not None
    assert again.version == 8


async def test_the_file_is_in_wal_mode_with_a_store_schema_record(path: Path) -> None:
    async with SqliteStore(path).open():
        pass
    with raw(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("2",)


async def test_a_corrupt_row_is_a_data_error_and_the_store_keeps_serving(path: Path) -> None:
    store = SqliteStore(path)
    async with store.open():
        await store.write(make_state("bad"), previous_version=None)
        await store.write(make_state("good"), previous_version=None)
        with raw(path) as conn:
            conn.execute("UPDATE sessions SET state = '{not json' WHERE id = 'bad'")
        with pytest.raises(SessionDataError, match=r"session 'bad' in .*sessions\.db") as info:
            await store.load("bad")
        assert "not valid JSON" in str(info.value)
        assert info.value.applied is None  # not classified: the safe answer
        assert await store.load("good") == make_state("good")
        await store.write(make_state("good", version=2), previous_version=1)
        assert len(await store.index()) == 2


async def test_a_record_from_a_newer_schema_is_refused_with_upgrade_advice(path: Path) -> None:
    store = SqliteStore(path)
    async with store.open():
        await store.write(make_state(), previous_version=None)
        record = json.loads(encode_state(make_state()))
        record["schema"] = 99
        with raw(path) as conn:
            conn.execute("UPDATE sessions SET state = ? WHERE id = 's1'", (json.dumps(record),))
        with pytest.raises(SessionDataError, match="upgrade triact"):
            await store.load("s1")


async def test_a_row_holding_another_sessions_record_is_a_data_error(path: Path) -> None:
    store = SqliteStore(path)
    async with store.open():
        await store.write(make_state("s1"), previous_version=None)
        await store.write(make_state("s2"), previous_version=None)
        with raw(path) as conn:
            conn.execute(
                "UPDATE sessions SET state = ? WHERE id = 's1'", (encode_state(make_state("s2")),)
            )
        with pytest.raises(SessionDataError, match="holds session 's2'"):
            await store.load("s1")


async def test_a_file_from_a_newer_store_schema_is_refused(path: Path) -> None:
    async with SqliteStore(path).open():
        pass
    with raw(path) as conn:
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema'")
    store = SqliteStore(path)
    with pytest.raises(SessionStoreError, match=r"store schema version 3.*upgrade triact"):
        async with store.open():
            pytest.fail("opened a store from a newer triact")
    with pytest.raises(SessionStoreError, match="not open"):
        await store.load("s1")


async def test_a_foreign_sessions_table_is_refused(path: Path) -> None:
    with raw(path) as conn:
        conn.execute("CREATE TABLE sessions (id TEXT, payload BLOB)")
    with pytest.raises(SessionStoreError, match="not a triact session store"):
        async with SqliteStore(path).open():
            pass


async def test_a_locked_database_fails_the_batch_and_the_store_recovers(path: Path) -> None:
    store = SqliteStore(path, timeout=0)
    async with store.open():
        await store.write(make_state("kept"), previous_version=None)
        results: dict[str, object] = {}
        with write_lock(path):
            async with trio.open_nursery() as nursery:
                for key in ("a", "b"):
                    call = creating(store, make_state(key))
                    nursery.start_soon(attempt, results, key, call)
            assert await store.load("kept") == make_state("kept")  # reads still served
        for key in ("a", "b"):
            error = results[key]
            assert isinstance(error, SessionStoreError)
            assert f"session {key!r}" in str(error)
            assert "database is locked" in str(error)
            assert error.applied is False  # never begun: certainly not saved
        assert store.transactions == 1
        assert await store.load("a") is None
        await store.write(make_state("a"), previous_version=None)
        assert await store.load("a") == make_state("a")
    assert store.transactions == 2


async def test_a_transaction_failing_midway_commits_none_of_its_batch(path: Path) -> None:
    async with SqliteStore(path).open():
        pass
    with raw(path) as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON sessions WHEN NEW.id = 'bad' "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END"
        )
    store = SqliteStore(path)
    async with store.open():
        results = await run_in_one_batch(
            store,
            path,
            {
                "good": creating(store, make_state("good")),
                "bad": creating(store, make_state("bad")),
            },
        )
        assert await store.load("good") is None
        await store.write(make_state("good"), previous_version=None)
        assert await store.load("good") == make_state("good")
    for key in ("good", "bad"):
        error = results[key]
        assert isinstance(error, SessionStoreError)
        assert f"session {key!r}" in str(error)
        assert "refused by the test trigger" in str(error)
        assert error.applied is False  # rolled back
    assert store.writes == 1


async def test_a_discard_whose_transaction_failed_is_retried_at_close(path: Path) -> None:
    store = SqliteStore(path, timeout=0)
    async with store.open():
        await store.write(make_state(), previous_version=None)
        with write_lock(path):
            store.discard("s1")
            # Answered only after the discard's batch ran, all of it under the lock.
            with pytest.raises(SessionStoreError, match="database is locked"):
                await store.write(make_state("s2"), previous_version=None)
        with raw(path) as conn:
            assert conn.execute("SELECT id FROM sessions").fetchall() == [("s1",)]
    with raw(path) as conn:
        assert conn.execute("SELECT count(*) FROM sessions").fetchone() == (0,)


async def test_a_discard_that_cannot_be_committed_fails_the_close(path: Path) -> None:
    store = SqliteStore(path, timeout=0)
    async with store.open():
        await store.write(make_state(), previous_version=None)
    with write_lock(path):
        with pytest.raises(SessionStoreError, match="closed without removing sessions 's1'"):
            async with store.open():
                store.discard("s1")
        with pytest.raises(ValueError, match="body failed") as info:
            async with store.open():
                store.discard("s1")
                raise ValueError("body failed")
    assert "closed without removing sessions 's1'" in "".join(info.value.__notes__)
    async with store.open():
        assert await store.load("s1") is not None


async def cancel_while_queued(
    store: SqliteStore, path: Path, call: Callable[[], Awaitable[object]]
) -> trio.CancelScope:
    """Run ``call`` in a scope that is cancelled while its job is queued behind a
    stalled batch; return the scope once the call is over."""
    scope = trio.CancelScope()

    async def run() -> None:
        with scope:
            await call()

    async with trio.open_nursery() as nursery:
        with write_lock(path) as lock:
            store.discard("stall")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(run)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            lock.execute("ROLLBACK")
    return scope


async def test_a_call_cancelled_while_queued_is_withdrawn(path: Path) -> None:
    store = SqliteStore(path)
    async with store.open():
        await store.write(make_state(), previous_version=None)
        scope = await cancel_while_queued(store, path, lambda: store.delete("s1"))
        assert scope.cancelled_caught
        assert await store.load("s1") == make_state()  # the delete never ran


async def test_a_write_cancelled_while_queued_is_still_carried_out(path: Path) -> None:
    # Writes are never withdrawn (writes_see_through): a session actor that began
    # one must learn its outcome, so it needs no shielded scope of its own.
    assert SqliteStore.writes_see_through
    store = SqliteStore(path)
    returned = False

    async def write() -> None:
        nonlocal returned
        await store.write(make_state(), previous_version=None)
        returned = True
        await trio.lowlevel.checkpoint()  # where the cancellation arrives

    async with store.open():
        scope = await cancel_while_queued(store, path, write)
        assert returned
        assert scope.cancelled_caught
        assert await store.load("s1") == make_state()
        assert store.writes == 1


async def test_a_call_cancelled_after_its_job_was_taken_completes(path: Path) -> None:
    store = SqliteStore(path)
    returned = False
    async with store.open(), trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def writer() -> None:
            nonlocal returned
            with scope:
                await store.write(make_state(), previous_version=None)
                returned = True

        with write_lock(path) as lock:
            nursery.start_soon(writer)
            await trio.testing.wait_all_tasks_blocked()  # taken; its transaction waits
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            lock.execute("ROLLBACK")
    assert returned
    assert not scope.cancelled_caught
    assert store.writes == 1


async def test_calls_are_checkpoints(path: Path) -> None:
    store = SqliteStore(path)
    async with store.open():
        await store.write(make_state(), previous_version=None)
        for call in (
            lambda: store.load("s1"),
            lambda: store.index(),
            lambda: store.delete("s1"),
        ):
            with trio.CancelScope() as scope:
                scope.cancel()
                await call()
            assert scope.cancelled_caught
        assert await store.load("s1") is not None  # the cancelled delete was withdrawn


async def test_calls_on_a_store_that_is_not_open_fail(path: Path) -> None:
    store = SqliteStore(path)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.load("s1"),
        lambda: store.write(make_state(), previous_version=None),
        lambda: store.delete("s1"),
        lambda: store.index(),
    ]
    for call in calls:
        with pytest.raises(
            SessionStoreError, match=r"not open; use `async with store.open\(\):`"
        ) as info:
            await call()
        assert info.value.applied is False
    with pytest.raises(SessionStoreError, match="not open"):
        store.discard("s1")
    async with store.open():
        pass
    with pytest.raises(SessionStoreError, match="not open"):
        await store.load("s1")


async def test_opening_an_open_store_again_fails(path: Path) -> None:
    store = SqliteStore(path)
    async with store.open():
        with pytest.raises(SessionStoreError, match="already open"):
            async with store.open():
                pytest.fail("opened twice")
        await store.write(make_state(), previous_version=None)
    assert store.writes == 1


async def test_an_error_in_the_block_propagates_as_is_after_flushing(path: Path) -> None:
    store = SqliteStore(path)
    async with store.open():
        await store.write(make_state(), previous_version=None)
    with pytest.raises(ValueError, match="body failed"):
        async with store.open():
            store.discard("s1")
            raise ValueError("body failed")
    with raw(path) as conn:
        assert conn.execute("SELECT count(*) FROM sessions").fetchone() == (0,)
    async with store.open():  # closed cleanly: opens again
        assert await store.load("s1") is None


async def test_a_missing_directory_is_a_store_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "sessions.db"
    with pytest.raises(SessionStoreError, match="does not exist") as info:
        async with SqliteStore(path).open():
            pytest.fail("opened a file in a missing directory")
    assert str(path) in str(info.value)


@pytest.fixture
def not_a_database(path: Path) -> Path:
    path.write_bytes(b"this is not a SQLite database, " * 100)
    return path


async def test_a_file_that_is_not_a_database_is_a_store_error(not_a_database: Path) -> None:
    path = not_a_database
    with pytest.raises(SessionStoreError, match="not a SQLite database") as info:
        async with SqliteStore(path).open():
            pytest.fail("opened a file that is not a database")
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("",), {}, ValueError, "must not be empty"),
        ((b"bytes.db",), {}, TypeError, "path"),
        (("x.db",), {"timeout": -1}, ValueError, "timeout"),
        (("x.db",), {"timeout": float("nan")}, ValueError, "timeout"),
        (("x.db",), {"timeout": True}, TypeError, "timeout"),
        (("x.db",), {"synchronous": "OFF"}, ValueError, "synchronous"),
    ],
)
def test_bad_arguments_are_refused(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        SqliteStore(*args, **kwargs)


def test_settings_are_exposed(path: Path) -> None:
    store = SqliteStore(path, timeout=2, synchronous="NORMAL")
    assert (store.path, store.timeout, store.synchronous) == (str(path), 2.0, "NORMAL")
    assert (store.kind, store.immediate) == ("sqlite", False)
    assert (store.transactions, store.writes) == (0, 0)


def set_n(state: SessionState) -> SessionState:
    return attrs.evolve(state, data={"n": 1})


async def test_an_update_cancelled_during_its_write_is_committed(path: Path) -> None:
    # The write is seen through: the caller's update returns, and the state in memory
    # and in the file agree.
    store = SqliteStore(path)
    async with triact.open_session_manager(triact.SessionConfig(store=store)) as manager:
        session = await manager.create_session()
        scope = trio.CancelScope()
        results: list[SessionState] = []

        async def updater() -> None:
            with scope:
                results.append(await session.update(set_n))

        async with trio.open_nursery() as nursery:
            with write_lock(path) as lock:
                nursery.start_soon(updater)
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
                await trio.testing.wait_all_tasks_blocked()
                lock.execute("ROLLBACK")
        assert [state.version for state in results] == [2]
        assert (await session.snapshot()).data == {"n": 1}
        assert (await store.load(session.id)) == results[0]


class CancellableWrites(SqliteStore):
    """A store whose writes may be cancelled halfway, as a third-party store's might:
    each write waits for ``release`` first."""

    writes_see_through = False
    shared = False  # a single-process durable store, as a third-party one might be

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.release = trio.Event()

    async def write(self, state: SessionState, *, previous_version: int | None) -> None:
        await self.release.wait()
        await super().write(state, previous_version=previous_version)


async def test_a_write_that_does_not_see_itself_through_is_shielded(path: Path) -> None:
    store = CancellableWrites(path)
    async with triact.open_session_manager(triact.SessionConfig(store=store)) as manager:
        store.release.set()
        session = await manager.create_session()
        store.release = trio.Event()
        scope = trio.CancelScope()
        results: list[SessionState] = []

        async def updater() -> None:
            with scope:
                results.append(await session.update(set_n))
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(updater)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            store.release.set()
        assert scope.cancelled_caught
        assert [state.version for state in results] == [2]
        assert (await store.load(session.id)) == results[0]
        assert (await session.snapshot()).data == {"n": 1}


async def test_a_durable_update_is_a_checkpoint(path: Path) -> None:
    # Its wait for the commit is its schedule point (ask adds none after a reply
    # seen through).
    async with triact.open_session_manager(
        triact.SessionConfig(store=SqliteStore(path))
    ) as manager:
        session = await manager.create_session()
        with trio.testing.assert_checkpoints():
            await session.update(set_n)


def fail_update(state: SessionState) -> SessionState:
    raise RuntimeError("refused by the update")


async def test_durable_calls_are_counted_once_each(path: Path) -> None:
    # Durable commits account for their own calls (no wrapper does it for them).
    store = SqliteStore(path)
    async with triact.open_session_manager(triact.SessionConfig(store=store)) as manager:
        session = await manager.create_session(bind_client=True)
        for _ in range(3):
            await session.update(set_n)  # 3 operations
        with pytest.raises(RuntimeError):
            await session.update(fail_update)  # 1 operation, 1 error
        await session.validate_security(session.token)  # 1 operation
        with pytest.raises(triact.SessionSecurityError):
            await session.validate_security("wrong")  # refused: not an operation
        stats = await session.stats()  # 1 operation, counted once it returns
        assert (stats.operations, stats.errors) == (5, 1)
        await session.update(set_n)  # 1 operation, committed with the counts so far
        assert (await store.load(session.id)).metrics.operations == 7  # type: ignore[union-attr]
        await session.end()  # 1 operation
        totals = await manager.stats()
        assert (totals.operations, totals.errors, totals.security_failures) == (8, 1, 1)


async def test_a_deferred_constraint_failing_the_commit_rolls_back_and_says_so(
    path: Path,
) -> None:
    # The COMMIT itself fails, but SQLite keeps the transaction open (a deferred
    # foreign key): the store rolls it back, so nothing was saved, certainly.
    async with SqliteStore(path).open():
        pass
    with raw(path) as conn:
        conn.execute("CREATE TABLE parents (id TEXT PRIMARY KEY)")
        conn.execute(
            "CREATE TABLE children (parent TEXT REFERENCES parents (id) "
            "DEFERRABLE INITIALLY DEFERRED)"
        )
        conn.execute(
            "CREATE TRIGGER orphan AFTER INSERT ON sessions WHEN NEW.id = 'bad' "
            "BEGIN INSERT INTO children VALUES ('nobody'); END"
        )
    store = SqliteStore(path)
    async with store.open():
        await store.run(lambda conn: conn.execute("PRAGMA foreign_keys = ON"), write=False)
        with pytest.raises(SessionStoreError, match="FOREIGN KEY") as info:
            await store.write(make_state("bad"), previous_version=None)
        assert info.value.applied is False
        assert "was not stored" in str(info.value)
        assert await store.load("bad") is None


#: Runs in a child process: a SqliteStore whose COMMIT fails writing the WAL (a file
#: size limit, as a disk filling up mid-commit would): SQLite ends the transaction
#: itself, and whether a later reader finds it is not the store's to know.
_COMMIT_FAILS = """
import os, resource, signal, sys
import trio, triact

async def main(path):
    async with triact.open_session_manager(
        triact.SessionConfig(store=triact.SqliteStore(path))
    ) as manager:
        session = await manager.create_session()
        size = max(os.path.getsize(path + end) for end in ("", "-wal"))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 65536, resource.RLIM_INFINITY))
        try:
            await session.update(lambda state: state.with_data(big="x" * 400_000))
        except triact.SessionStoreError as exc:
            print(repr(exc.applied))
            print(exc)

trio.run(main, sys.argv[1])
"""


def test_a_commit_failing_on_disk_leaves_the_outcome_unknown(tmp_path: Path) -> None:
    pytest.importorskip("resource")
    source = Path(triact.__file__).parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(source), *sys.path])}
    path = tmp_path / "s.db"
    done = subprocess.run(
        [sys.executable, "-c", _COMMIT_FAILS, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    applied, message = done.stdout.splitlines()[:2]
    assert applied == "None"
    assert "may or may not have been saved" in message
    assert "I/O error" in message


def lock_a_new_file(path: Path) -> sqlite3.Connection:
    """A connection holding the write lock of a new database at ``path`` (as another
    process setting the file up at the same moment would): switching the file to WAL
    mode meanwhile gets "database is locked" at once, without waiting."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    return holder


async def test_a_new_file_another_connection_is_setting_up_opens_once_it_is_done(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    met_the_lock = threading.Event()  # set when the store's thread waits to try again

    class Waits:
        monotonic = staticmethod(time.monotonic)

        @staticmethod
        def sleep(seconds: float) -> None:
            met_the_lock.set()
            time.sleep(seconds)

    monkeypatch.setattr(sqlite_module, "time", Waits)
    holder = lock_a_new_file(path)
    store = SqliteStore(path, timeout=10)
    opened = trio.Event()

    async def open_it() -> None:
        async with store.open():
            opened.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(open_it)
            assert await trio.to_thread.run_sync(met_the_lock.wait, 10)
            assert not opened.is_set()
            holder.execute("ROLLBACK")
            holder.close()
            await opened.wait()


async def test_a_file_locked_past_the_stores_timeout_is_a_clear_error(path: Path) -> None:
    holder = lock_a_new_file(path)
    try:
        with pytest.raises(triact.SessionStoreError, match="database is locked"):
            async with SqliteStore(path, timeout=0.3).open():
                pass
    finally:
        holder.close()


async def test_stores_opening_a_new_file_at_once_all_open(tmp_path: Path) -> None:
    for round_ in range(5):
        path = tmp_path / f"at-once-{round_}.db"
        opened: list[int] = []

        async def open_one(path: Path = path, opened: list[int] = opened) -> None:
            async with SqliteStore(path).open():
                opened.append(1)

        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(open_one)
        assert len(opened) == 6
