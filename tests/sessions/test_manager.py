"""SessionManager: creating, finding and removing sessions, limits, stats, shutdown."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import pytest
import trio
import trio.testing

import triact

from ._helpers import OpenManager, put, sleep_then_put

# -- create_session ---------------------------------------------------------------


async def test_created_sessions_have_distinct_128_bit_ids(open_manager: OpenManager) -> None:
    async with open_manager() as manager:
        ids = {(await manager.create_session()).id for _ in range(200)}
    assert len(ids) == 200
    # secrets.token_urlsafe(16): 16 random bytes, 22 url-safe base64 characters
    assert all(len(i) >= 22 for i in ids)
    assert all(":" not in i for i in ids)  # request ids split on ':'


async def test_create_session_starts_at_version_1_and_keeps_what_it_was_given(
    open_manager: OpenManager, tmp_path: Path
) -> None:
    async with open_manager(wall_clock=lambda: 1_700_000_000.0) as manager:
        session = await manager.create_session(
            topic="design review",
            working_directory=tmp_path,
            metadata={"owner": "ana", "tags": ["a", "b"]},
            config_path="/etc/triact.toml",
            project_id="p-42",
        )
        state = await session.snapshot()
    assert state.id == session.id
    assert state.version == 1
    assert state.topic == "design review"
    assert state.working_directory == str(tmp_path)
    assert state.metadata == {"owner": "ana", "tags": ["a", "b"]}
    assert state.config_path == "/etc/triact.toml"
    assert state.project_id == "p-42"
    assert state.created_at == state.last_used == 1_700_000_000.0
    assert state.client_binding is None
    assert session.token is None
    assert state.data == {}


async def test_create_session_copies_the_metadata(open_manager: OpenManager) -> None:
    metadata = {"k": 1}
    async with open_manager() as manager:
        session = await manager.create_session(metadata=metadata)
        metadata["k"] = 2
        assert (await session.snapshot()).metadata == {"k": 1}


@pytest.mark.parametrize("relative", ["relative/dir", ".", ""])
async def test_create_session_with_a_relative_working_directory_is_refused(
    open_manager: OpenManager, relative: str
) -> None:
    async with open_manager() as manager:
        with pytest.raises(ValueError, match="absolute path") as info:
            await manager.create_session(working_directory=relative)
        assert repr(relative) in str(info.value)
        assert manager.session_count == 0


async def test_create_session_with_a_missing_working_directory_is_refused(
    open_manager: OpenManager, tmp_path: Path
) -> None:
    missing = tmp_path / "nope"
    store = triact.MemoryStore()
    async with open_manager(store=store) as manager:
        with pytest.raises(ValueError, match="does not exist") as info:
            await manager.create_session(working_directory=missing)
        assert str(missing) in str(info.value)
        assert manager.session_count == 0
        assert len(store) == 0
        assert (await manager.stats()).created == 0


async def test_create_session_with_a_file_as_working_directory_is_refused(
    open_manager: OpenManager, tmp_path: Path
) -> None:
    file = tmp_path / "file.txt"
    file.write_text("x")
    async with open_manager() as manager:
        with pytest.raises(ValueError, match="not a directory") as info:
            await manager.create_session(working_directory=os.fspath(file))
        assert str(file) in str(info.value)
        assert manager.session_count == 0


async def test_max_sessions_is_enforced_and_a_refused_create_creates_nothing(
    open_manager: OpenManager,
) -> None:
    store = triact.MemoryStore()
    async with open_manager(max_sessions=3, store=store) as manager:
        for _ in range(3):
            await manager.create_session()
        with pytest.raises(triact.SessionLimitError, match=r"3 sessions \(max_sessions\)"):
            await manager.create_session(topic="one too many")
        assert manager.session_count == 3
        assert len(store) == 3
        stats = await manager.stats()
        assert stats.created == 3
        assert stats.sessions == 3


async def test_max_sessions_holds_for_concurrent_creations(open_manager: OpenManager) -> None:
    store = triact.MemoryStore()
    created: list[triact.Session] = []
    refused: list[triact.SessionLimitError] = []

    async def create() -> None:
        try:
            created.append(await manager.create_session())
        except triact.SessionLimitError as exc:
            refused.append(exc)

    async with open_manager(max_sessions=3, store=store) as manager:
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(create)
        assert (len(created), len(refused)) == (3, 7)
        assert manager.session_count == 3
        assert len(store) == 3


async def test_max_sessions_per_client_holds_for_concurrent_creations(
    open_manager: OpenManager, tmp_path: Path
) -> None:
    created: list[triact.Session] = []

    async def create() -> None:
        with contextlib.suppress(triact.SessionLimitError):
            created.append(
                await manager.create_session(client_id="alice", working_directory=tmp_path)
            )

    async with open_manager(max_sessions_per_client=2) as manager:
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(create)
        assert len(created) == 2
        assert manager.session_count == 2


async def test_max_sessions_frees_a_slot_when_a_session_goes(open_manager: OpenManager) -> None:
    async with open_manager(max_sessions=1) as manager:
        first = await manager.create_session()
        with pytest.raises(triact.SessionLimitError):
            await manager.create_session()
        await first.end()
        second = await manager.create_session()
        assert manager.session_ids() == [second.id]


async def test_max_sessions_per_client_is_enforced_per_client(open_manager: OpenManager) -> None:
    async with open_manager(max_sessions_per_client=2) as manager:
        a1 = await manager.create_session(client_id="alice")
        await manager.create_session(client_id="alice", bind_client=True)
        with pytest.raises(triact.SessionLimitError, match=r"'alice'.*max_sessions_per_client"):
            await manager.create_session(client_id="alice")
        assert manager.session_count == 2
        # other clients, and sessions without a client id, are not affected
        await manager.create_session(client_id="bob")
        await manager.create_session()
        await manager.create_session()
        assert manager.session_count == 5
        # a slot of alice's comes back when one of her sessions goes
        assert await manager.remove_session(a1.id)
        await manager.create_session(client_id="alice")
        with pytest.raises(triact.SessionLimitError):
            await manager.create_session(client_id="alice")


# -- get_session / remove_session ---------------------------------------------------


async def test_get_session_returns_a_handle_to_the_same_session(
    open_manager: OpenManager,
) -> None:
    async with open_manager() as manager:
        created = await manager.create_session(topic="t")
        found = await manager.get_session(created.id)
        assert found.id == created.id
        await found.update(put("k", 1))
        assert (await created.snapshot()).data == {"k": 1}


async def test_get_session_of_an_unknown_id_names_it(open_manager: OpenManager) -> None:
    async with open_manager() as manager:
        with pytest.raises(triact.SessionNotFoundError, match="'no-such-id'"):
            await manager.get_session("no-such-id")
        with pytest.raises(triact.SessionNotFoundError) as long:
            await manager.get_session("x" * 100_000)
        assert str(long.value).startswith(f"no session {'x' * 40!r}... (100000 characters):")


async def test_remove_session_returns_true_then_false(open_manager: OpenManager) -> None:
    store = triact.MemoryStore()
    async with open_manager(store=store) as manager:
        session = await manager.create_session()
        other = await manager.create_session()
        await session.update(put("k", 1))  # give it a running actor
        assert await manager.remove_session(session.id) is True
        assert await manager.remove_session(session.id) is False
        assert manager.session_ids() == [other.id]
        assert len(store) == 1
        with pytest.raises(triact.SessionNotFoundError, match=session.id):
            await manager.get_session(session.id)


async def test_calls_on_a_handle_of_a_removed_session_raise_not_found(
    open_manager: OpenManager,
) -> None:
    async with open_manager() as manager:
        used = await manager.create_session()
        await used.snapshot()  # its actor is running
        unused = await manager.create_session()  # no actor yet
        for session in (used, unused):
            assert await manager.remove_session(session.id)
            with pytest.raises(triact.SessionNotFoundError, match=session.id):
                await session.snapshot()
            with pytest.raises(triact.SessionNotFoundError, match=session.id):
                await session.update(put("k", 1))
            with pytest.raises(triact.SessionNotFoundError, match=session.id):
                await session.end()


async def test_remove_session_while_an_update_runs_commits_nothing(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    store = triact.MemoryStore()
    async with open_manager(store=store) as manager:
        session = await manager.create_session()
        outcome: list[BaseException] = []

        async def call() -> None:
            try:
                await session.update(sleep_then_put(5.0, "k", 1))
            except triact.SessionError as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await trio.testing.wait_all_tasks_blocked()
            assert await manager.remove_session(session.id)
        assert len(outcome) == 1
        assert isinstance(outcome[0], triact.SessionClosedError)
        assert session.id in str(outcome[0])
        assert len(store) == 0


async def test_calls_queued_when_a_session_is_removed_get_closed_error(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    queued: list[BaseException] = []

    async def running() -> None:
        with contextlib.suppress(Exception):  # its own fate is another test's business
            await session.update(sleep_then_put(5.0, "k", "running"))

    async def waiting() -> None:
        try:
            await session.update(put("k", "queued"))
        except triact.SessionError as exc:
            queued.append(exc)

    async with open_manager() as manager:
        session = await manager.create_session()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(running)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(waiting)
            await trio.testing.wait_all_tasks_blocked()
            assert await manager.remove_session(session.id)
    assert len(queued) == 1
    assert isinstance(queued[0], triact.SessionClosedError)
    assert session.id in str(queued[0])


# -- manager.session() --------------------------------------------------------------


async def test_temporary_session_is_removed_on_normal_exit(open_manager: OpenManager) -> None:
    async with open_manager() as manager:
        async with manager.session(topic="scratch") as tmp:
            assert (await tmp.snapshot()).topic == "scratch"
            assert manager.session_count == 1
        assert manager.session_count == 0
        with pytest.raises(triact.SessionNotFoundError):
            await manager.get_session(tmp.id)
        assert (await manager.stats()).removed == 1


async def test_temporary_session_is_removed_when_the_body_raises(
    open_manager: OpenManager,
) -> None:
    class Boom(Exception):
        pass

    async with open_manager() as manager:
        with pytest.raises(Boom):
            async with manager.session(topic="scratch") as tmp:
                await tmp.update(put("k", 1))
                raise Boom
        assert manager.session_count == 0
        with pytest.raises(triact.SessionNotFoundError):
            await manager.get_session(tmp.id)


async def test_temporary_session_is_removed_when_the_body_is_cancelled(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    store = triact.MemoryStore()
    async with open_manager(store=store) as manager:
        with trio.move_on_after(1.0) as scope:
            async with manager.session(topic="scratch") as tmp:
                await trio.sleep(10.0)
        assert scope.cancelled_caught
        assert manager.session_count == 0
        assert len(store) == 0
        with pytest.raises(triact.SessionNotFoundError):
            await manager.get_session(tmp.id)


async def test_a_temporary_sessions_body_error_wins_over_a_closed_managers_refusal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Boom(Exception):
        pass

    path = tmp_path / "sessions.db"
    ended: list[BaseException | None] = []
    ids: list[str] = []

    async def body(manager: triact.SessionManager, fail: bool) -> None:
        try:
            async with manager.session(topic="scratch") as tmp:
                ids.append(tmp.id)
                entered.set()
                await closed.wait()
                if fail:
                    raise Boom
        except BaseException as exc:
            ended.append(exc)
        else:
            ended.append(None)

    for fail in (True, False):
        entered, closed = trio.Event(), trio.Event()
        async with trio.open_nursery() as nursery:
            config = triact.SessionConfig(store=triact.SqliteStore(path))
            async with triact.open_session_manager(config) as manager:
                nursery.start_soon(body, manager, fail)
                await entered.wait()
            closed.set()
    assert type(ended[0]) is Boom  # not the removal's SessionClosedError
    assert "was not removed" in caplog.text
    assert type(ended[1]) is triact.SessionClosedError  # the block itself succeeded
    config = triact.SessionConfig(store=triact.SqliteStore(path))
    async with triact.open_session_manager(config) as manager:  # they stayed in the store
        assert {(await manager.get_session(i)).id for i in ids} == set(ids)


async def test_temporary_session_passes_its_arguments_on(
    open_manager: OpenManager, tmp_path: Path
) -> None:
    async with (
        open_manager() as manager,
        manager.session(
            topic="t", working_directory=tmp_path, metadata={"a": 1}, bind_client=True
        ) as tmp,
    ):
        assert tmp.token is not None
        state = await tmp.snapshot()
        assert state.working_directory == str(tmp_path)
        assert state.metadata == {"a": 1}
        assert state.client_binding is not None


# -- counts and stats -----------------------------------------------------------------


async def test_session_count_follows_creation_and_every_way_of_going(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(idle_ttl=100.0) as manager:
        assert manager.session_count == 0
        ended = await manager.create_session()
        removed = await manager.create_session()
        expiring = await manager.create_session()
        kept = await manager.create_session()
        assert manager.session_count == 4
        await ended.end()
        assert manager.session_count == 3
        await manager.remove_session(removed.id)
        assert manager.session_count == 2
        await trio.sleep(60.0)
        await kept.snapshot()
        await trio.sleep(60.0)  # expiring has been idle 120 s, kept 60 s
        assert manager.session_ids() == [kept.id]
        assert manager.session_count == 1
        with pytest.raises(triact.SessionNotFoundError):
            await expiring.snapshot()


async def test_stats_counts_sessions_by_how_they_went(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(idle_ttl=100.0) as manager:
        sessions = [await manager.create_session() for _ in range(6)]
        await sessions[0].end()
        await sessions[1].end()
        await manager.remove_session(sessions[2].id)
        async with manager.session():
            pass
        for session in sessions[4:]:
            await session.snapshot()
        await trio.sleep(101.0)  # all of them idle now
        stats = await manager.stats()
    assert stats.created == 7
    assert stats.ended == 2
    assert stats.removed == 2
    assert stats.expired == 3
    assert stats.sessions == 0
    assert stats.store == "memory"


async def test_stats_counts_operations_and_errors(open_manager: OpenManager) -> None:
    def fail(state: triact.SessionState) -> triact.SessionState:
        raise RuntimeError("no")

    async with open_manager() as manager:
        first = await manager.create_session()
        second = await manager.create_session()
        fresh = await manager.stats()
        assert (fresh.operations, fresh.errors, fresh.error_rate) == (0, 0, 0.0)
        for i in range(5):
            await first.update(put("i", i))
        await second.snapshot()
        with pytest.raises(RuntimeError):
            await second.update(fail)
        with pytest.raises(triact.SessionConcurrencyError):
            await first.update(put("i", 99), expected_version=1)
        stats = await manager.stats()
    assert stats.operations == 8
    assert stats.errors == 2
    assert stats.error_rate == pytest.approx(2 / 8)


async def test_stats_latency_percentiles(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager() as manager:
        assert (await manager.stats()).latency == triact.LatencySummary()
        session = await manager.create_session()
        for seconds in range(1, 101):
            await session.update(sleep_then_put(float(seconds), "s", seconds))
        latency = (await manager.stats()).latency
    assert latency.p50 == pytest.approx(50.0)
    assert latency.p95 == pytest.approx(95.0)
    assert latency.p99 == pytest.approx(99.0)
    assert latency.max == pytest.approx(100.0)


async def test_stats_latency_excludes_time_spent_queued(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()
        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(session.update, sleep_then_put(2.0, "i", i))
                await trio.testing.wait_all_tasks_blocked()
        assert trio.current_time() == pytest.approx(6.0)
        assert (await manager.stats()).latency.max == pytest.approx(2.0)


async def test_stats_counts_busy_rejections(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager(mailbox_size=1) as manager:
        session = await manager.create_session()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.update, sleep_then_put(5.0, "k", "running"))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(session.update, sleep_then_put(5.0, "k", "queued"))
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(2):
                with pytest.raises(triact.SessionBusyError, match=session.id):
                    await session.snapshot()
        stats = await manager.stats()
        state = await session.snapshot()
    assert stats.busy_rejections == 2
    assert state.data == {"k": "queued"}
    assert state.version == 3


async def test_stats_counts_security_failures_across_sessions(
    open_manager: OpenManager,
) -> None:
    async with open_manager() as manager:
        a = await manager.create_session(bind_client=True)
        b = await manager.create_session(bind_client=True)
        for session in (a, b, a):
            with pytest.raises(triact.SessionSecurityError):
                await session.validate_security("wrong")
        assert a.token is not None
        await a.validate_security(a.token)
        assert (await manager.stats()).security_failures == 3


async def test_stats_counts_activations(open_manager: OpenManager) -> None:
    async with open_manager() as manager:
        assert (await manager.stats()).active_actors == 0
        sessions = [await manager.create_session() for _ in range(3)]
        # creating a session starts no actor: the first call does
        assert (await manager.stats()).active_actors == 0
        for session in sessions[:2]:
            await session.snapshot()
            await session.snapshot()
        stats = await manager.stats()
    assert stats.active_actors == 2
    assert stats.activations == 2


# -- closing ----------------------------------------------------------------------------


async def test_calls_after_the_manager_closed_raise_closed_error(
    open_manager: OpenManager,
) -> None:
    async with open_manager() as manager:
        used = await manager.create_session()
        await used.snapshot()
        unused = await manager.create_session()
    with pytest.raises(triact.SessionClosedError):
        await manager.create_session()
    for session in (used, unused):
        with pytest.raises(triact.SessionClosedError, match=session.id):
            await session.snapshot()
        with pytest.raises(triact.SessionClosedError, match=session.id):
            await session.update(put("k", 1))
        with pytest.raises(triact.SessionClosedError, match=session.id):
            await session.end()
    with pytest.raises(triact.SessionClosedError):
        async with manager.session():
            pass


async def test_closing_the_manager_keeps_the_sessions_in_the_store(
    open_manager: OpenManager,
) -> None:
    store = triact.MemoryStore()
    async with open_manager(store=store) as manager:
        session = await manager.create_session()
        await session.update(put("k", 1))
    stored = await store.load(session.id)
    assert stored is not None
    assert stored.version == 2
    assert stored.data == {"k": 1}


async def test_an_exception_from_the_manager_block_propagates_unwrapped(
    open_manager: OpenManager,
) -> None:
    with pytest.raises(KeyError, match="boom"):
        async with open_manager() as manager:
            await manager.create_session()
            raise KeyError("boom")


async def test_shutdown_lets_in_flight_and_queued_updates_finish_within_the_grace(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    store = triact.MemoryStore()
    results: list[triact.SessionState] = []
    async with trio.open_nursery() as callers:
        async with open_manager(store=store, shutdown_grace=10.0) as manager:
            session = await manager.create_session()

            async def call(seconds: float, value: int) -> None:
                results.append(await session.update(sleep_then_put(seconds, "v", value)))

            callers.start_soon(call, 3.0, 1)
            await trio.testing.wait_all_tasks_blocked()
            callers.start_soon(call, 3.0, 2)
            await trio.testing.wait_all_tasks_blocked()
        closed_at = trio.current_time()
    assert closed_at == pytest.approx(6.0)  # the manager waited for both
    assert [(s.version, s.data["v"]) for s in results] == [(2, 1), (3, 2)]
    stored = await store.load(session.id)
    assert stored is not None
    assert (stored.version, stored.data) == (3, {"v": 2})


async def test_shutdown_cancels_an_update_that_outlasts_the_grace(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    store = triact.MemoryStore()
    errors: list[BaseException] = []
    async with trio.open_nursery() as callers:
        async with open_manager(store=store, shutdown_grace=5.0) as manager:
            session = await manager.create_session()
            await session.update(put("v", 0))

            async def call(seconds: float, value: int) -> None:
                try:
                    await session.update(sleep_then_put(seconds, "v", value))
                except triact.SessionError as exc:
                    errors.append(exc)

            callers.start_soon(call, 60.0, 1)
            await trio.testing.wait_all_tasks_blocked()
            callers.start_soon(call, 0.0, 2)  # queued behind it
            await trio.testing.wait_all_tasks_blocked()
        closed_at = trio.current_time()
    assert closed_at == pytest.approx(5.0)
    assert len(errors) == 2
    assert all(isinstance(e, triact.SessionClosedError) for e in errors)
    assert all(session.id in str(e) for e in errors)
    stored = await store.load(session.id)
    assert stored is not None
    assert (stored.version, stored.data) == (2, {"v": 0})


async def test_shutdown_with_no_grace_cancels_in_flight_updates_at_once(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    errors: list[BaseException] = []
    async with trio.open_nursery() as callers, open_manager(shutdown_grace=0.0) as manager:
        session = await manager.create_session()

        async def call() -> None:
            try:
                await session.update(sleep_then_put(1.0, "v", 1))
            except triact.SessionClosedError as exc:
                errors.append(exc)

        callers.start_soon(call)
        await trio.testing.wait_all_tasks_blocked()
    assert trio.current_time() == 0.0
    assert len(errors) == 1


@pytest.mark.parametrize("store", ["memory", "sqlite"])
@pytest.mark.parametrize(
    ("after", "limit", "refused"),
    [
        (None, -1, "(limit=) must be an int >= 0, got -1"),
        (None, 1.5, "(limit=) must be an int >= 0, got 1.5"),
        (None, True, "(limit=) must be an int >= 0, got True"),
        ("x", 10, "(after=) must be None or the (created_at, id)"),
        ((1.0,), 10, "(after=) must be None or the (created_at, id)"),
        ((None, "id"), 10, "(after=) must be None or the (created_at, id)"),
    ],
)
async def test_list_sessions_refuses_a_page_it_cannot_mean(
    store: str, after: object, limit: object, refused: str, tmp_path: Path
) -> None:
    """A negative limit listed all but the last sessions in memory and every session
    with SQLite; a bad position failed comparing it, or listed from the start."""
    backend = triact.SqliteStore(tmp_path / "s.db") if store == "sqlite" else None
    async with triact.open_session_manager(triact.SessionConfig(store=backend)) as manager:
        for _ in range(3):
            await manager.create_session()
        with pytest.raises(ValueError, match=re.escape(refused)):
            await manager.list_sessions(after, limit)  # type: ignore[arg-type]
        assert len(await manager.list_sessions(None, 2)) == 2
        assert await manager.list_sessions(None, 0) == []


# -- config -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("idle_ttl", 0.0),
        ("idle_ttl", -1.0),
        ("idle_ttl", float("inf")),
        ("max_lifetime", 0.0),
        ("passivate_after", -5.0),
        ("max_sessions", 0),
        ("actors_kept", 0),
        ("mailbox_size", 0),
        ("max_threads", 0),
        ("security_max_failures", 0),
        ("security_window", 0.0),
        ("max_sessions_per_client", 0),
        ("shutdown_grace", -1.0),
        ("schedule_slice", -0.001),
        ("schedule_slice", float("inf")),
        ("schedule_slice", float("nan")),
        # None only where a field is optional: a required one failed later, in the
        # manager, with a TypeError comparing None (and True was taken as 1).
        ("idle_ttl", None),
        ("max_sessions", None),
        ("mailbox_size", None),
        ("max_threads", None),
        ("security_window", None),
        ("max_state_bytes", None),
        ("shutdown_grace", None),
        ("max_threads", True),
        ("max_state_bytes", True),
        ("security_window", True),
        ("idle_ttl", "60"),
        # a deque's maxlen: it raised OverflowError at subscribe()
        ("event_buffer", 2**63),
        # An int past the largest float: OverflowError, or (shutdown_grace) taken, to
        # fail with OverflowError when the manager opened.
        pytest.param("idle_ttl", 10**400, id="idle_ttl-10**400"),
        pytest.param("lease", 10**400, id="lease-10**400"),
        pytest.param("shutdown_grace", 10**400, id="shutdown_grace-10**400"),
        pytest.param("schedule_slice", 10**400, id="schedule_slice-10**400"),
    ],
)
def test_config_refuses_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"SessionConfig.{field}"):
        triact.SessionConfig(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("store", "sqlite:x.db", "must be a SessionStore or None, got str"),
        ("rate_limit", 5, "must be a RateLimit or None, got int"),
        ("wall_clock", 1.5, "must be a function returning seconds, got float"),
        ("secret_key", "hunter2-secret", "must be bytes or None, got str"),
    ],
)
def test_config_refuses_values_of_the_wrong_type(field: str, value: object, expected: str) -> None:
    """They failed once used (AttributeError, or a TypeError from hmac), and a key
    of the wrong type is never quoted back."""
    with pytest.raises(TypeError, match=f"SessionConfig.{field} {expected}") as refused:
        triact.SessionConfig(**{field: value})  # type: ignore[arg-type]
    assert "hunter2" not in str(refused.value)


def test_config_keeps_none_where_a_field_is_optional() -> None:
    config = triact.SessionConfig(
        max_lifetime=None, passivate_after=None, max_sessions_per_client=None, store=None
    )
    assert (config.max_lifetime, config.store) == (None, None)


async def test_subscribe_refuses_a_buffer_no_deque_can_hold() -> None:
    async with triact.open_session_manager() as manager:
        with pytest.raises(ValueError, match="subscribe\\(buffer=\\) must be an int from 1"):
            manager.subscribe(2**63)
        with manager.subscribe(2**63 - 1):
            pass


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_rate_limit_refuses_bad_values(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        triact.RateLimit(rate=rate, burst=burst)


async def test_a_session_actor_that_fails_for_good_ends_its_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Session actors declare no fatal exception; make one so, to drive the path where
    # the actor runtime gives up on an actor past its restart policy (I6).
    from triact.sessions._actor import SessionActor

    monkeypatch.setattr(SessionActor, "fatal_exceptions", (ZeroDivisionError,))

    def crash(state: triact.SessionState) -> triact.SessionState:
        raise ZeroDivisionError("broken state")

    async with triact.open_session_manager() as manager:
        session = await manager.create_session()
        with manager.subscribe() as events:
            for _ in range(4):  # the default policy restarts 3 times
                with pytest.raises(ZeroDivisionError):
                    await session.update(crash)
            with pytest.raises(triact.SessionError, match=f"{session.id}.*failed"):
                await session.snapshot()
            with pytest.raises(triact.SessionNotFoundError):
                await manager.get_session(session.id)
            assert (await manager.stats()).sessions == 0
        assert [e.kind async for e in events] == ["ended"]


async def test_closing_says_when_the_managers_block_has_begun_to_close(
    open_manager: OpenManager,
) -> None:
    seen: list[bool] = []
    started = trio.Event()

    async def wait_for_close(state: triact.SessionState) -> triact.SessionState:
        started.set()
        while not manager.closing:
            await trio.lowlevel.checkpoint()
        seen.append(manager.closing)
        return state

    async with trio.open_nursery() as nursery, open_manager() as manager:
        assert not manager.closing
        session = await manager.create_session()
        nursery.start_soon(session.update, wait_for_close)
        await started.wait()
    assert seen == [True]
    assert manager.closing
