"""Several SessionManagers on one shared store, SQLite file or Redis, in one process
(each with its own store object and connection, as separate processes have): the
store decides. Every test runs on both stores."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager, closing
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import triact
from triact.testing import DataChange, HistoryRecorder, check_history, slow_update

from .._redis import RedisPlace, forget, unique_prefix

EPOCH = 1_700_000_000.0

#: Where the managers' sessions live: a SQLite file, or a Redis key prefix.
Place = Path | RedisPlace


@pytest.fixture(params=["sqlite", "redis"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    if request.param == "sqlite":
        return tmp_path / "s.db"
    redis_place: RedisPlace = request.getfixturevalue("redis_place")
    return redis_place


@pytest.fixture
def shared_clock() -> trio.testing.MockClock:
    """Trio's MockClock, jumping only once every task has waited 20 ms of real time.

    Several managers each run a store maintenance loop whose store calls go through
    a worker thread: with ``autojump_threshold=0`` the clock would jump to one
    manager's next round while another's call is in its thread, and time would run
    away. Here a jump waits until the threads are done."""
    return trio.testing.MockClock(autojump_threshold=0.02)


def increment(key: str = "n") -> Callable[[triact.SessionState], triact.SessionState]:
    def fn(state: triact.SessionState) -> triact.SessionState:
        return attrs.evolve(state, data={**state.data, key: state.data.get(key, 0) + 1})

    return fn


def config(place: Place, skew: float = 0.0, **knobs: Any) -> triact.SessionConfig:
    """A manager's settings; its wall clock follows Trio's (``skew`` seconds ahead)."""

    def wall_clock() -> float:
        return EPOCH + skew + trio.current_time()

    store: triact.SharedSessionStore
    if isinstance(place, RedisPlace):
        store = triact.RedisStore(place.url, prefix=place.prefix, clock=wall_clock)
    else:
        store = triact.SqliteStore(place, synchronous="NORMAL")
    return triact.SessionConfig(
        store=store,
        wall_clock=wall_clock,
        secret_key=b"k" * 32,
        **knobs,
    )


async def tick() -> None:
    """Sleep a second at a time, forever: with a MockClock, a store call slower than
    its autojump threshold (a loaded machine) then lets the clock jump at most a
    second, not to the next session's TTL while every manager waits on the store."""
    for _ in itertools.count():
        await trio.sleep(1.0)


@asynccontextmanager
async def managers(
    place: Place, count: int = 2, skews: tuple[float, ...] = (), **knobs: Any
) -> AsyncIterator[list[triact.SessionManager]]:
    async with AsyncExitStack() as stack:
        ticks = await stack.enter_async_context(trio.open_nursery())
        ticks.start_soon(tick)
        stack.callback(ticks.cancel_scope.cancel)
        opened = []
        for i in range(count):
            skew = skews[i] if i < len(skews) else 0.0
            opened.append(
                await stack.enter_async_context(
                    triact.open_session_manager(config(place, skew, **knobs))
                )
            )
        yield opened


async def test_a_session_created_in_one_manager_is_found_in_the_others(place: Place) -> None:
    async with managers(place, 3) as (a, b, c):
        session = await a.create_session(topic="shared")
        for other in (b, c):
            state = await (await other.get_session(session.id)).snapshot()
            assert (state.id, state.topic, state.version) == (session.id, "shared", 1)
        assert await c.count_sessions() == 1
        assert [entry.id for entry in await b.list_sessions()] == [session.id]
        with pytest.raises(triact.SessionNotFoundError, match="no session 'nope'"):
            await b.get_session("nope")


async def test_usable_sessions_lists_every_managers_sessions(place: Place) -> None:
    async with managers(place) as (a, b):
        open_one = await a.create_session(topic="open")
        bound = await b.create_session(topic="bound", bind_client=True)
        assert bound.token is not None
        assert [s.id for s in await b.usable_sessions()] == [open_one.id]
        listed = await a.usable_sessions([bound.token])
        assert [s.id for s in listed] == [open_one.id, bound.id]
        index = await a.usable_index([bound.token])
        assert [(e.id, e.topic, e.version, bool(e.token_hmac)) for e in index] == [
            (open_one.id, "open", 1, False),
            (bound.id, "bound", 1, True),
        ]
        assert [e.id for e in await b.usable_index()] == [open_one.id]


def spoil(place: Place, session_id: str, field: str, value: str) -> None:
    """Edit a session's stored record by hand: its state (``"state"``) or its version
    (``"version"``), in its SQLite row or its Redis hash."""
    if isinstance(place, RedisPlace):
        with place.client() as client:
            client.hset(
                f"{place.prefix}{{{session_id}}}", {"state": "s", "version": "v"}[field], value
            )
        return
    with closing(sqlite3.connect(place, isolation_level=None)) as conn:
        conn.execute(f"UPDATE sessions SET {field} = ? WHERE id = ?", (value, session_id))


@pytest.mark.parametrize(("field", "value"), [("state", "{not json"), ("version", "abc")])
async def test_a_listing_leaves_out_a_record_spoilt_by_hand_and_lists_the_others(
    place: Place, field: str, value: str
) -> None:
    async with managers(place) as (a, b):
        first = await a.create_session(topic="first")
        spoilt = await a.create_session(topic="spoilt")
        last = await a.create_session(topic="last")
        spoil(place, spoilt.id, field, value)
        # Every manager, including one that never held the session, lists the others
        # (one unreadable record failed the whole listing, for every client).
        for manager in (a, b):
            assert [e.id for e in await manager.usable_index()] == [first.id, last.id]
        with pytest.raises(triact.SessionDataError):
            await (await b.get_session(spoilt.id)).snapshot()
        assert (await (await b.get_session(last.id)).snapshot()).topic == "last"


async def test_concurrent_increments_from_every_manager_add_up(place: Place) -> None:
    async with managers(place, 3) as group:
        ids = [(await group[0].create_session()).id for _ in range(2)]
        handles = [await m.get_session(i) for m in group for i in ids]

        async def bump(handle: triact.Session) -> None:
            applied = 0
            while applied < 20:  # never a conflict: no expected_version
                try:
                    await handle.update(increment())
                except triact.SessionContendedError:
                    # Outrun by the other managers at each replay (a loaded machine):
                    # not applied, so trying again is safe; the totals below say so.
                    continue
                applied += 1

        async with trio.open_nursery() as nursery:
            for handle in handles:
                for _ in range(3):  # pipelined: several calls queued per session
                    nursery.start_soon(bump, handle)
        for manager in group:
            for session_id in ids:
                state = await (await manager.get_session(session_id)).snapshot()
                assert state.data["n"] == 3 * 3 * 20
                assert state.version == 1 + 3 * 3 * 20


async def test_a_stale_expected_version_is_a_conflict_across_managers(place: Place) -> None:
    async with managers(place) as (a, b):
        session = await a.create_session()
        seen = (await session.snapshot()).version
        await (await b.get_session(session.id)).update(increment())
        with pytest.raises(triact.SessionConcurrencyError) as info:
            await session.update(increment(), expected_version=seen)
        assert (info.value.expected, info.value.actual) == (seen, seen + 1)
        state = await session.update(increment(), expected_version=seen + 1)
        assert (state.version, state.data["n"]) == (seen + 2, 2)


async def test_an_owner_read_sees_what_another_manager_committed(place: Place) -> None:
    async with managers(place) as (a, b):
        session = await a.create_session()
        await session.update(increment())  # a caches version 2
        await (await b.get_session(session.id)).update(increment())
        state = await session.snapshot()
        assert (state.version, state.data["n"]) == (3, 2)


async def test_ending_with_a_stale_cache_ends_the_latest_state(place: Place) -> None:
    async with managers(place) as (a, b):
        session = await a.create_session()
        await session.snapshot()
        await (await b.get_session(session.id)).update(increment())
        final = await session.end()
        assert (final.version, final.data["n"]) == (2, 1)
        with pytest.raises(triact.SessionNotFoundError):
            await (await b.get_session(session.id)).snapshot()
        with pytest.raises(triact.SessionNotFoundError):
            await b.get_session(session.id)


async def test_max_sessions_counts_every_managers_sessions(place: Place) -> None:
    async with managers(place, max_sessions=2, max_sessions_per_client=1) as (a, b):
        await a.create_session(client_id="c1")
        with pytest.raises(triact.SessionLimitError, match="client 'c1'"):
            await b.create_session(client_id="c1")
        await b.create_session(client_id="c2")
        with pytest.raises(triact.SessionLimitError, match="limit of 2 sessions"):
            await a.create_session()


async def test_an_exclusive_update_takes_over_and_fences_the_old_owner(
    place: Place, shared_clock: trio.testing.MockClock
) -> None:
    async with managers(place) as (a, b):
        session = await a.create_session()  # a owns it
        other = await b.get_session(session.id)
        outcome: list[object] = []

        async def slow_in_a() -> None:
            try:
                outcome.append(await session.update(slow_update(increment("a"), 5.0)))
            except triact.SessionError as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_in_a)
            await trio.sleep(1.0)  # a's async update is running under a's lease
            taken = await other.update(slow_update(increment("b"), 1.0))  # takes over
        assert taken.data == {"b": 1}
        assert isinstance(outcome[0], triact.SessionConcurrencyError)
        assert "nothing was saved" in str(outcome[0])
        state = await session.snapshot()
        assert (state.version, state.data) == (2, {"b": 1})  # a's never committed
        state = await session.update(increment("a"))  # a goes on (as a guest)
        assert (state.version, state.data) == (3, {"a": 1, "b": 1})


async def test_a_session_busy_in_one_manager_is_never_expired_by_another(
    place: Place, shared_clock: trio.testing.MockClock
) -> None:
    async with managers(place, idle_ttl=3.0, lease=1.0) as (a, b):
        session = await a.create_session()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.update, slow_update(increment(), 20.0))
            await trio.sleep(19.0)  # b sweeps every second meanwhile
            assert await b.count_sessions() == 1
            await (await b.get_session(session.id)).snapshot()
        assert (await session.snapshot()).data["n"] == 1


async def test_an_expiry_is_counted_once_though_a_handle_finds_it_later(
    place: Place, shared_clock: trio.testing.MockClock
) -> None:
    """The manager drops an idle session from memory, the store's sweep expires it,
    then a call through a handle kept from before finds it gone: one expiry, one
    event."""
    async with managers(place, count=1, idle_ttl=3.0, lease=1.0) as (a,):
        events = a.subscribe()
        session = await a.create_session()
        await trio.sleep(6.0)  # dropped here at 3 s, swept from the store by 5 s
        assert (await a.stats()).expired == 1
        with pytest.raises(triact.SessionNotFoundError):
            await session.snapshot()
        assert (await a.stats()).expired == 1
        events.close()
        kinds = [event.kind async for event in events]
    assert kinds == ["created", "expired"]


async def test_an_idle_session_expires_in_the_store_for_every_manager(
    place: Place, shared_clock: trio.testing.MockClock
) -> None:
    async with managers(place, idle_ttl=3.0, lease=1.0) as (a, b):
        events = [a.subscribe(), b.subscribe()]
        session = await a.create_session()
        await (await b.get_session(session.id)).update(increment())
        await trio.sleep(2.0)
        await session.snapshot()  # a read is use too
        await trio.sleep(2.5)
        assert await b.count_sessions() == 1
        await trio.sleep(5.0)
        assert await a.count_sessions() == 0
        with pytest.raises(triact.SessionNotFoundError):
            await b.get_session(session.id)
        with pytest.raises(triact.SessionNotFoundError):
            await session.snapshot()
        for subscription in events:
            subscription.close()
        # Each process publishes what it commits or sees: the expiry by whichever
        # swept it, and by one that found it gone.
        kinds = [[event.kind async for event in subscription] for subscription in events]
    assert kinds[0][0] == "created"
    # b's own update; with Redis, b also hears of a's creation, which travels through
    # Redis and so may come after b's own update (no one order across processes).
    own = [kind for kind in kinds[1] if kind != "created"]
    assert own[0] == "updated"
    assert kinds[1].count("created") == (0 if isinstance(place, Path) else 1)
    assert "expired" in kinds[0] + kinds[1]


async def test_a_read_before_a_clean_restart_keeps_the_session_alive_after_it(
    place: Place, shared_clock: trio.testing.MockClock
) -> None:
    path = place
    async with managers(path, count=1, idle_ttl=3.0, lease=1.0) as (a,):
        session = await a.create_session()
        await trio.sleep(2.5)
        await session.snapshot()  # its last use: the stored deadline moves to 5.5
    await trio.sleep(1.0)  # restarted 3.5 s after the last write, 1 s after the read
    async with managers(path, count=1, idle_ttl=3.0, lease=1.0) as (b,):
        assert (await (await b.get_session(session.id)).snapshot()).id == session.id
        await trio.sleep(5.0)
        with pytest.raises(triact.SessionNotFoundError):
            await b.get_session(session.id)


def set_label(value: object) -> Callable[[triact.SessionState], triact.SessionState]:
    def fn(state: triact.SessionState) -> triact.SessionState:
        return attrs.evolve(state, data={**state.data, "label": value})

    return fn


def increment_label(state: triact.SessionState) -> triact.SessionState:
    label = state.data["label"]
    if type(label) is not int:
        raise ValueError(f"label holds {label!r}, not a number")
    return set_label(label + 1)(state)


async def test_an_update_that_fails_on_a_stale_copy_runs_again_on_the_stored_state(
    place: Place, shared_clock: trio.testing.MockClock
) -> None:
    async with managers(place) as (a, b):
        session = await a.create_session()
        await session.update(set_label("s"))  # a caches the label "s"
        await (await b.get_session(session.id)).update(set_label(1))
        assert (await session.update(increment_label)).data["label"] == 2
        await (await b.get_session(session.id)).update(set_label("t"))
        with pytest.raises(ValueError, match="'t'"):  # a real refusal stays one
            await session.update(increment_label)
        await (await b.get_session(session.id)).end()
        with pytest.raises(triact.SessionNotFoundError):
            await session.update(increment_label)


class HeldVersionStore(triact.SqliteStore):
    """A SqliteStore whose version checks, while ``hold`` is set, answer what they read
    only once the test lets them (so that another process can act in between)."""

    hold: trio.Event | None = None
    #: Set once a held version check has read the store (its thread is done).
    read: trio.Event | None = None

    async def version(self, session_id: str, *, now: float | None = None) -> int | None:
        version = await super().version(session_id, now=now)
        if self.hold is not None:
            if self.read is not None:
                self.read.set()
            await self.hold.wait()
        return version


async def test_a_group_whose_session_another_process_ended_answers_every_caller(
    tmp_path: Path, shared_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "s.db"
    held = HeldVersionStore(path, synchronous="NORMAL")
    async with (
        triact.open_session_manager(attrs.evolve(config(path), store=held)) as a,
        managers(path, count=1) as (b,),
    ):
        session = await a.create_session()
        await session.update(increment())  # a owns it and caches it
        held.hold, held.read = trio.Event(), trio.Event()
        outcomes: list[str] = []

        async def call(fn: Callable[[], Any]) -> None:
            try:
                await fn()
                outcomes.append("ok")
            except triact.SessionError as exc:
                outcomes.append(type(exc).__name__)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, session.snapshot)  # a checks the stored version...
            # (read, not only started: a task waiting on the store's thread counts as
            # blocked, and a check still reading when b ends the session reads nothing)
            await held.read.wait()
            for _ in range(3):  # ...while three changes queue behind it, to commit as one
                nursery.start_soon(call, lambda: session.update(increment()))
            await trio.testing.wait_all_tasks_blocked()
            await (await b.get_session(session.id)).end()  # b ends it meanwhile
            held.hold.set()
        assert outcomes == ["ok"] + ["SessionNotFoundError"] * 3


# -- property: random programs over several managers, checked per session ------------


@attrs.frozen
class Op:
    manager: int
    session: int
    kind: str  # increment | cas | read | exclusive
    pause: float


ops = st.builds(
    Op,
    st.integers(0, 2),
    st.integers(0, 1),
    st.sampled_from(["increment", "increment", "cas", "read", "exclusive"]),
    st.sampled_from([0.0, 0.0, 0.5, 3.0]),
)


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
@settings(max_examples=15, deadline=None)
@given(
    tasks=st.lists(st.lists(ops, min_size=1, max_size=6), min_size=2, max_size=5),
    skew=st.sampled_from([0.0, 10.0]),
)
def test_random_programs_over_three_managers_are_linearizable(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    kind: str,
    tasks: list[list[Op]],
    skew: float,
) -> None:
    """Per-session histories from three managers (one with a clock ``skew`` seconds
    ahead, so that it takes leases over early) pass the history checker: no fork, no
    lost acknowledged write, versions in real-time order, reads linearizable; and all
    managers agree at the end."""
    path: Place = tmp_path_factory.mktemp("shared") / "s.db"
    if kind == "redis":
        path = RedisPlace(request.getfixturevalue("redis_url"), unique_prefix())
    recorder = HistoryRecorder()

    async def main() -> None:
        async with managers(path, 3, skews=(0.0, 0.0, skew), lease=2.0) as group:
            ids = []
            for i in range(2):
                with recorder.call("setup", None, "create") as call:
                    created = await group[0].create_session(topic=f"t{i}")
                    call.ok(created)
                ids.append(created.id)
            handles = [[await m.get_session(i) for i in ids] for m in group]

            async def client(task: int, program: list[Op]) -> None:
                seen: dict[int, int] = {}
                for index, op in enumerate(program):
                    await trio.sleep(op.pause)
                    handle = recorder.session(handles[op.manager][op.session], f"c{task}")
                    change = DataChange(set={"by": f"{task}.{index}"}, increment={"n": 1})
                    try:
                        if op.kind == "read":
                            state = await handle.snapshot()
                        elif op.kind == "exclusive":
                            state = await handle.update(slow_update(change, 0.5))
                        else:
                            expected = seen.get(op.session, 1) if op.kind == "cas" else None
                            state = await handle.update(change, expected)
                        seen[op.session] = state.version
                    except triact.SessionError:
                        pass  # recorded; judged by the checker

            async with trio.open_nursery() as nursery:
                for task, program in enumerate(tasks):
                    nursery.start_soon(client, task, program)
            finals = []
            for m, manager in enumerate(group):
                for session_id in ids:
                    session = recorder.session(await manager.get_session(session_id), f"f{m}")
                    finals.append(await session.snapshot())
            for session_id in ids:
                mine = {(s.version, s.data.get("n")) for s in finals if s.id == session_id}
                assert len(mine) == 1, f"managers disagree on {session_id}: {mine}"

    try:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0.02))
    finally:
        if isinstance(path, RedisPlace):
            forget(path)
    check_history(recorder)


class _EventsLostTwice(triact.SqliteStore):
    """A real SQLite store whose following of other processes' events fails twice (a
    lost connection, as to a restarted Redis), then delivers one event."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, synchronous="NORMAL")
        self.follows: list[float] = []

    async def follow(self, deliver: Callable[[str, str, int], None]) -> None:
        self.follows.append(trio.current_time())
        await trio.sleep(1.0)
        if len(self.follows) <= 2:
            raise triact.SessionStoreError("the events connection was lost")
        deliver("updated", "elsewhere", 7)
        await trio.sleep_forever()


async def test_events_are_followed_again_after_following_them_failed(
    tmp_path: Path, shared_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = _EventsLostTwice(tmp_path / "s.db")
    config = triact.SessionConfig(store=store, secret_key=b"k" * 32)
    async with triact.open_session_manager(config) as manager:
        with manager.subscribe() as events, trio.fail_after(60):
            event = await events.__anext__()
    assert (event.kind, event.session_id, event.version) == ("updated", "elsewhere", 7)
    # Each failure after a second of following; pauses of 0.5 s, then 1 s.
    assert [round(at - store.follows[0], 1) for at in store.follows] == [0.0, 1.5, 3.5]
    said = [r.getMessage() for r in caplog.records if "following its events" in r.getMessage()]
    assert len(said) == 2, said  # the loss once, the recovery once
    assert "failed" in said[0]
    assert "again" in said[1]


async def test_a_removal_is_counted_once_though_a_handle_kept_from_before_finds_it_gone(
    place: Place, shared_clock: trio.testing.MockClock
) -> None:
    """A drops a session it no longer uses from memory while B keeps it alive, then
    removes it by id: a handle that A kept from before finds it removed, and A counts
    one removal, not an expiry as well."""
    async with managers(place, count=2, idle_ttl=3.0, lease=1.0) as (a, b):
        session = await a.create_session()
        other = await b.get_session(session.id)
        for _ in range(6):  # B's reads keep it in the store; A drops it at 3 s
            await trio.sleep(1.0)
            await other.snapshot()
        assert session.id not in a.session_ids()
        events = a.subscribe()
        assert await a.remove_session(session.id)
        with pytest.raises(triact.SessionNotFoundError, match="removed"):
            await session.snapshot()
        stats = await a.stats()
        events.close()
        kinds = [event.kind async for event in events]
    assert (stats.created, stats.removed, stats.expired, stats.sessions) == (1, 1, 0, 0)
    assert kinds == ["removed"]


async def test_removing_a_session_past_its_deadline_finds_none(
    place: Place, shared_clock: trio.testing.MockClock
) -> None:
    """A session past its deadline is gone for every call before a sweep deletes it:
    remove_session finds none there, as get_session does, and counts no removal (B's
    clock is ahead, so the session A has just created is past its deadline for B)."""
    async with managers(place, count=2, skews=(0.0, 10.0), idle_ttl=3.0) as (a, b):
        session = await a.create_session()
        events = b.subscribe()
        with pytest.raises(triact.SessionNotFoundError):
            await b.get_session(session.id)
        assert not await b.remove_session(session.id)
        stats = await b.stats()
        events.close()
        kinds = [event.kind async for event in events]
    assert stats.removed == 0
    assert "removed" not in kinds


async def test_a_session_removed_while_a_get_session_looked_it_up_is_not_found(
    place: Place,
) -> None:
    """A get_session that found the session in the store before this process removed
    it (its actor still loading it) hands out a record whose call finds it gone,
    once that actor has gone, where the call failed with ValueError (an actor of that
    name was still running)."""
    async with managers(place, count=2) as (a, b):
        created = await b.create_session()
        store: Any = a.store
        real_version, real_activate = store.version, store.activate
        reached, found, loaded = trio.Event(), trio.Event(), trio.Event()
        first = True

        async def version(session_id: str, *, now: float | None = None) -> int | None:
            nonlocal first
            gated, first = first, False
            answer = await real_version(session_id, now=now)
            if gated:  # found before the removal, returned after it
                reached.set()
                await found.wait()
            return answer  # type: ignore[no-any-return]

        async def activate(session_id: str, **kwargs: Any) -> Any:
            answer = await real_activate(session_id, **kwargs)
            await loaded.wait()
            return answer

        store.version, store.activate = version, activate
        late: list[triact.Session] = []
        async with trio.open_nursery() as nursery:

            async def late_get() -> None:
                late.append(await a.get_session(created.id))

            async def removed_meanwhile(session: triact.Session) -> None:
                with pytest.raises(triact.SessionError):  # not found, or closed
                    await session.update(increment())

            async def late_call() -> None:
                with pytest.raises(triact.SessionNotFoundError):
                    await late[0].snapshot()

            nursery.start_soon(late_get)
            await reached.wait()
            nursery.start_soon(removed_meanwhile, await a.get_session(created.id))
            await trio.testing.wait_all_tasks_blocked()  # its actor loads it
            assert await a.remove_session(created.id)
            found.set()
            await trio.testing.wait_all_tasks_blocked()
            assert late
            nursery.start_soon(late_call)
            await trio.testing.wait_all_tasks_blocked()
            loaded.set()
