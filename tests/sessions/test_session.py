"""Session: update and its guarantees (I1-I3), the helpers built on it, end()."""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

import triact

from ._helpers import OpenManager, put, sleep_then_put

WALL = 1_700_000_000.25


def without_metrics(state: triact.SessionState) -> triact.SessionState:
    return attrs.evolve(state, metrics=triact.SessionMetrics())


# -- update ---------------------------------------------------------------------------


async def test_update_commits_version_plus_one_and_returns_the_committed_state(
    open_manager: OpenManager,
) -> None:
    async with open_manager() as manager:
        session = await manager.create_session(topic="t")
        committed = await session.update(put("k", 1))
        assert committed.version == 2
        assert committed.data == {"k": 1}
        assert committed.topic == "t"
        assert without_metrics(await session.snapshot()) == without_metrics(committed)
        again = await session.update(put("k", 2))
        assert (again.version, again.data) == (3, {"k": 2})


async def test_update_stamps_last_used_from_the_wall_clock(open_manager: OpenManager) -> None:
    now = [100.0]
    async with open_manager(wall_clock=lambda: now[0]) as manager:
        session = await manager.create_session()
        now[0] = 250.0
        state = await session.update(put("k", 1))
    assert state.created_at == 100.0
    assert state.last_used == 250.0


async def test_an_update_that_returns_the_state_unchanged_still_commits_a_version(
    open_manager: OpenManager,
) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()
        assert (await session.update(lambda state: state)).version == 2


# A state the update function made and let go of is stamped in place (a copy saved);
# one that anything else still refers to is copied, so it never changes.


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_a_state_the_update_keeps_is_never_stamped_in_place(
    store: str, tmp_path: Path
) -> None:
    config = triact.SessionConfig(
        store=triact.SqliteStore(str(tmp_path / "s.db")) if store == "sqlite" else None
    )
    kept: list[triact.SessionState] = []
    closure: list[Callable[[], triact.SessionState]] = []
    refs: list[weakref.ref[triact.SessionState]] = []

    def keep_in_list(state: triact.SessionState) -> triact.SessionState:
        kept.append(state.with_data(n=1))
        return kept[-1]

    def keep_in_closure(state: triact.SessionState) -> triact.SessionState:
        new = state.with_data(n=2)
        closure.append(lambda: new)
        return new

    def keep_weakly(state: triact.SessionState) -> triact.SessionState:
        new = state.with_data(n=3)
        refs.append(weakref.ref(new))
        return new

    async with triact.open_session_manager(config) as manager:
        session = await manager.create_session()
        first = await session.update(keep_in_list)
        assert (first.version, kept[0].version) == (2, 1)  # kept as it was made
        assert first is not kept[0]
        second = await session.update(keep_in_closure)
        assert (second.version, closure[0]().version) == (3, 2)
        third = await session.update(keep_weakly)
        made = refs[0]()
        assert made is None or made.version == 3  # a copy was committed (version 4)
        assert third.version == 4
        assert third is not made
        unchanged = await session.update(lambda state: state)
        assert (unchanged.version, third.version) == (5, 4)
        assert (await session.snapshot()).data == {"n": 3}


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_a_state_the_update_let_go_of_is_committed_itself(store: str, tmp_path: Path) -> None:
    from triact.sessions._actor import _UNSHARED_REFS

    config = triact.SessionConfig(
        store=triact.SqliteStore(str(tmp_path / "s.db")) if store == "sqlite" else None
    )
    made: list[int] = []

    def bump(state: triact.SessionState) -> triact.SessionState:
        new = state.with_data(n=state.data.get("n", 0) + 1)
        made.append(id(new))  # an int: no reference to the state
        return new

    async with triact.open_session_manager(config) as manager:
        session = await manager.create_session()
        committed = await session.update(bump)
        assert (committed.version, committed.data) == (2, {"n": 1})
        assert committed.metrics.operations == 1
        # Stamped in place where CPython's reference counts tell (else copied).
        assert (id(committed) == made[0]) == (_UNSHARED_REFS is not None)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            committed.version = 7  # type: ignore[misc]


async def test_async_update_fn_is_awaited_and_committed(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()
        state = await session.update(sleep_then_put(3.0, "k", "v"))
        assert trio.current_time() == pytest.approx(3.0)
        assert (state.version, state.data) == (2, {"k": "v"})


async def test_reads_never_change_the_version(open_manager: OpenManager) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()
        await session.update(put("k", 1))
        for _ in range(3):
            assert (await session.snapshot()).version == 2
            assert (await session.stats()).version == 2
        await session.validate_security(None)  # unbound: a no-op
        # an update that expects the version read before still succeeds
        state = await session.update(put("k", 2), expected_version=2)
        assert state.version == 3


async def test_expected_version_match_commits(open_manager: OpenManager) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()
        state = await session.update(put("k", 1), expected_version=1)
        state = await session.update(put("k", 2), expected_version=state.version)
        assert (state.version, state.data) == (3, {"k": 2})


async def test_expected_version_mismatch_raises_and_changes_nothing(
    open_manager: OpenManager,
) -> None:
    store = triact.MemoryStore()
    async with open_manager(store=store) as manager:
        session = await manager.create_session()
        before = await session.update(put("k", 1))
        with pytest.raises(triact.SessionConcurrencyError) as info:
            await session.update(put("k", 2), expected_version=1)
        assert (info.value.expected, info.value.actual) == (1, 2)
        assert session.id in str(info.value)
        after = await session.snapshot()
        assert without_metrics(after) == without_metrics(before)
        stored = await store.load(session.id)
        assert stored is not None
        assert (stored.version, stored.data) == (2, {"k": 1})


async def test_expected_version_mismatch_does_not_call_the_update_fn(
    open_manager: OpenManager,
) -> None:
    calls: list[int] = []

    def fn(state: triact.SessionState) -> triact.SessionState:
        calls.append(state.version)
        return state

    async with open_manager() as manager:
        session = await manager.create_session()
        with pytest.raises(triact.SessionConcurrencyError):
            await session.update(fn, expected_version=7)
    assert calls == []


async def test_update_fn_that_raises_changes_nothing_and_the_session_keeps_serving(
    open_manager: OpenManager,
) -> None:
    class Refused(Exception):
        pass

    def fail(state: triact.SessionState) -> triact.SessionState:
        raise Refused(state.id)

    async with open_manager() as manager:
        session = await manager.create_session()
        before = await session.update(put("k", 1))
        with pytest.raises(Refused):
            await session.update(fail)
        after = await session.snapshot()
        assert without_metrics(after) == without_metrics(before)
        assert after.metrics.errors == 1
        state = await session.update(put("k", 2), expected_version=2)
        assert (state.version, state.data) == (3, {"k": 2})


async def test_async_update_fn_that_raises_after_awaiting_changes_nothing(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async def fail(state: triact.SessionState) -> triact.SessionState:
        await trio.sleep(1.0)
        raise KeyError("late")

    async with open_manager() as manager:
        session = await manager.create_session()
        with pytest.raises(KeyError, match="late"):
            await session.update(fail)
        state = await session.snapshot()
        assert (state.version, state.data) == (1, {})
        assert (await session.update(put("k", 1))).version == 2


async def test_update_fn_mutating_the_data_dict_in_place_then_raising(
    open_manager: OpenManager,
) -> None:
    # A state's mappings are read-only views: a fn cannot write into the committed
    # state and then raise, leaving its change behind (I2).
    def sneaky(state: triact.SessionState) -> triact.SessionState:
        state.data["leaked"] = True  # type: ignore[index]
        raise RuntimeError("oops")

    async with open_manager() as manager:
        session = await manager.create_session()
        with pytest.raises(TypeError, match="does not support item assignment"):
            await session.update(sneaky)
        assert (await session.snapshot()).data == {}


async def test_mutating_a_snapshot_does_not_change_the_session(
    open_manager: OpenManager,
) -> None:
    async with open_manager() as manager:
        session = await manager.create_session(metadata={"m": 1})
        await session.update(put("k", 1))
        snapshot = await session.snapshot()
        with pytest.raises(TypeError):
            snapshot.data["k"] = "changed outside the actor"  # type: ignore[index]
        with pytest.raises(TypeError):
            snapshot.metadata["m"] = 2  # type: ignore[index]
        state = await session.snapshot()
        assert (state.version, state.data, state.metadata) == (2, {"k": 1}, {"m": 1})


async def test_cancelled_async_update_commits_nothing(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    store = triact.MemoryStore()
    async with open_manager(store=store) as manager:
        session = await manager.create_session()
        with trio.move_on_after(1.0) as scope:
            await session.update(sleep_then_put(10.0, "k", "never"))
        assert scope.cancelled_caught
        assert trio.current_time() == pytest.approx(1.0)
        state = await session.snapshot()
        assert (state.version, state.data) == (1, {})
        stored = await store.load(session.id)
        assert stored is not None
        assert stored.version == 1
        # and it keeps serving, at once
        assert (await session.update(put("k", 1), expected_version=1)).version == 2
        assert trio.current_time() == pytest.approx(1.0)


async def test_cancelled_queued_update_is_never_applied(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    calls: list[str] = []

    def record(name: str) -> Callable[[triact.SessionState], triact.SessionState]:
        def fn(state: triact.SessionState) -> triact.SessionState:
            calls.append(name)
            return state

        return fn

    async with open_manager() as manager:
        session = await manager.create_session()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.update, sleep_then_put(5.0, "k", 1))
            await trio.testing.wait_all_tasks_blocked()
            with trio.move_on_after(1.0):
                await session.update(record("cancelled"))
        await session.update(record("after"))
        assert calls == ["after"]
        assert (await session.snapshot()).version == 3


async def test_update_returning_a_non_state_raises_type_error(
    open_manager: OpenManager,
) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()
        with pytest.raises(TypeError, match="dict, not a SessionState"):
            await session.update(lambda state: {"data": {}})
        with pytest.raises(TypeError, match="NoneType"):
            await session.update(lambda state: None)
        assert (await session.snapshot()).version == 1


async def test_update_changing_the_id_raises_value_error(open_manager: OpenManager) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()
        with pytest.raises(ValueError, match="may not change its id"):
            await session.update(lambda state: attrs.evolve(state, id="other"))
        state = await session.snapshot()
        assert (state.id, state.version) == (session.id, 1)


async def test_update_cannot_set_the_version(open_manager: OpenManager) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()
        state = await session.update(lambda state: attrs.evolve(state, version=100))
        assert state.version == 2


async def test_concurrent_updates_run_one_at_a_time_in_arrival_order(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    running = 0
    overlaps = 0

    def append(i: int) -> Callable[[triact.SessionState], object]:
        async def fn(state: triact.SessionState) -> triact.SessionState:
            nonlocal running, overlaps
            running += 1
            overlaps += running > 1
            try:
                await trio.sleep(1.0)
                return attrs.evolve(state, data={"order": [*state.data["order"], i]})
            finally:
                running -= 1

        return fn

    async with open_manager() as manager:
        session = await manager.create_session()
        await session.update(put("order", []))
        versions: dict[int, int] = {}

        async def call(i: int) -> None:
            versions[i] = (await session.update(append(i))).version

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(call, i)
                await trio.testing.wait_all_tasks_blocked()
        state = await session.snapshot()
    assert overlaps == 0
    assert state.data["order"] == list(range(50))
    assert state.version == 52
    assert versions == {i: i + 3 for i in range(50)}
    assert trio.current_time() == pytest.approx(50.0)


async def test_plain_and_async_updates_interleave_in_arrival_order(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async def slow_append(state: triact.SessionState) -> triact.SessionState:
        await trio.sleep(1.0)
        return attrs.evolve(state, data={"log": [*state.data.get("log", []), "slow"]})

    def fast_append(state: triact.SessionState) -> triact.SessionState:
        return attrs.evolve(state, data={"log": [*state.data.get("log", []), "fast"]})

    async with open_manager() as manager:
        session = await manager.create_session()
        async with trio.open_nursery() as nursery:
            for fn in (slow_append, fast_append, slow_append, fast_append):
                nursery.start_soon(session.update, fn)
                await trio.testing.wait_all_tasks_blocked()
        assert (await session.snapshot()).data["log"] == ["slow", "fast", "slow", "fast"]


async def test_a_slow_session_does_not_delay_another(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager() as manager:
        slow = await manager.create_session()
        fast = await manager.create_session()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow.update, sleep_then_put(100.0, "k", 1))
            await trio.testing.wait_all_tasks_blocked()
            await fast.update(put("k", 1))
            assert trio.current_time() == 0.0
            nursery.cancel_scope.cancel()


# -- re-entrancy ---------------------------------------------------------------------


async def test_update_fn_reading_its_own_session_raises_reentrancy_error(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()

        async def reads_itself(state: triact.SessionState) -> triact.SessionState:
            await session.snapshot()
            return state

        with trio.fail_after(5.0):
            with pytest.raises(triact.SessionReentrancyError, match=session.id):
                await session.update(reads_itself)
        state = await session.update(put("k", 1))
        assert state.version == 2


async def test_update_fn_updating_its_own_session_raises_reentrancy_error(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()
        other_handle = await manager.get_session(session.id)

        async def updates_itself(state: triact.SessionState) -> triact.SessionState:
            await other_handle.update(put("inner", 1))
            return attrs.evolve(state, data={"outer": 1})

        with trio.fail_after(5.0):
            with pytest.raises(triact.SessionReentrancyError, match=session.id):
                await session.update(updates_itself)
        state = await session.snapshot()
        assert (state.version, state.data) == (1, {})


async def test_plain_update_fn_returning_a_call_to_its_own_session_raises_reentrancy_error(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()
        with trio.fail_after(5.0):
            with pytest.raises(triact.SessionReentrancyError, match=session.id):
                await session.update(lambda state: session.end())
        assert manager.session_count == 1


async def test_reentrancy_through_another_session_is_detected(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_manager() as manager:
        a = await manager.create_session()
        b = await manager.create_session()

        async def b_reads_a(state: triact.SessionState) -> triact.SessionState:
            await a.snapshot()
            return state

        async def a_updates_b(state: triact.SessionState) -> triact.SessionState:
            await b.update(b_reads_a)
            return state

        with trio.fail_after(5.0):
            with pytest.raises(triact.SessionReentrancyError, match=a.id):
                await a.update(a_updates_b)
        assert (await a.snapshot()).version == 1
        assert (await b.snapshot()).version == 1


async def test_update_fn_may_call_another_session(open_manager: OpenManager) -> None:
    async with open_manager() as manager:
        a = await manager.create_session()
        b = await manager.create_session()
        await b.update(put("x", 41))

        async def copy_from_b(state: triact.SessionState) -> triact.SessionState:
            other = await b.snapshot()
            return attrs.evolve(state, data={"x": other.data["x"] + 1})

        assert (await a.update(copy_from_b)).data == {"x": 42}


# -- working directory -----------------------------------------------------------------


async def test_set_working_directory_accepts_an_absolute_existing_directory(
    open_manager: OpenManager, tmp_path: Path
) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    async with open_manager() as manager:
        session = await manager.create_session(working_directory=tmp_path)
        state = await session.set_working_directory(sub)
        assert (state.working_directory, state.version) == (str(sub), 2)
        state = await session.set_working_directory(str(tmp_path / "sub" / ".." / "sub"))
        assert state.working_directory == str(sub)  # normalised


@pytest.mark.parametrize(
    ("make_path", "message"),
    [
        (lambda tmp: "relative/path", "absolute path"),
        (lambda tmp: str(tmp / "missing"), "does not exist"),
        (lambda tmp: str(tmp / "file.txt"), "not a directory"),
    ],
    ids=["relative", "missing", "file"],
)
async def test_set_working_directory_refuses_bad_paths(
    open_manager: OpenManager,
    tmp_path: Path,
    make_path: Callable[[Path], str],
    message: str,
) -> None:
    (tmp_path / "file.txt").write_text("x")
    path = make_path(tmp_path)
    async with open_manager() as manager:
        session = await manager.create_session(working_directory=tmp_path)
        with pytest.raises(ValueError, match=message) as info:
            await session.set_working_directory(path)
        assert path in str(info.value)
        state = await session.snapshot()
        assert (state.working_directory, state.version) == (str(tmp_path), 1)


# -- threads ---------------------------------------------------------------------------


async def test_add_thread_and_messages(open_manager: OpenManager) -> None:
    async with open_manager(wall_clock=lambda: WALL) as manager:
        session = await manager.create_session()
        state = await session.add_thread("critic", system_prompt="Be harsh.")
        assert state.version == 2
        assert [t.name for t in state.threads] == ["critic"]
        thread = state.thread("critic")
        assert thread is not None
        assert (thread.system_prompt, thread.created_at, thread.messages) == ("Be harsh.", WALL, ())
        await session.add_thread("fan")
        await session.add_thread_message("critic", "user", "hello")
        state = await session.add_thread_message("critic", "assistant", "meh")
        critic, fan = state.threads
        assert [(m.role, m.content, m.at) for m in critic.messages] == [
            ("user", "hello", WALL),
            ("assistant", "meh", WALL),
        ]
        assert fan.messages == ()
        assert state.version == 5


async def test_add_thread_with_a_taken_name_raises_and_changes_nothing(
    open_manager: OpenManager,
) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()
        await session.add_thread("critic", system_prompt="first")
        with pytest.raises(ValueError, match="'critic'") as info:
            await session.add_thread("critic", system_prompt="second")
        assert session.id in str(info.value)
        state = await session.snapshot()
        assert state.version == 2
        assert [(t.name, t.system_prompt) for t in state.threads] == [("critic", "first")]


@pytest.mark.parametrize("name", ["", "   "])
async def test_add_thread_with_an_empty_name_is_refused(
    open_manager: OpenManager, name: str
) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()
        with pytest.raises(ValueError, match="non-empty"):
            await session.add_thread(name)


async def test_add_thread_message_to_an_unknown_thread_raises(open_manager: OpenManager) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()
        with pytest.raises(ValueError, match="no thread named 'ghost'"):
            await session.add_thread_message("ghost", "user", "hi")
        assert (await session.snapshot()).version == 1


async def test_threads_are_bounded_keeping_the_newest(open_manager: OpenManager) -> None:
    async with open_manager(max_threads=3) as manager:
        session = await manager.create_session()
        for i in range(5):
            state = await session.add_thread(f"t{i}")
        assert [t.name for t in state.threads] == ["t2", "t3", "t4"]


async def test_thread_messages_are_bounded_keeping_the_newest(
    open_manager: OpenManager,
) -> None:
    async with open_manager(max_thread_messages=2) as manager:
        session = await manager.create_session()
        await session.add_thread("a")
        await session.add_thread("b")
        for i in range(4):
            state = await session.add_thread_message("a", "user", f"m{i}")
        await session.add_thread_message("b", "user", "only")
        state = await session.snapshot()
        a, b = state.threads
        assert [m.content for m in a.messages] == ["m2", "m3"]
        assert [m.content for m in b.messages] == ["only"]


# -- analyses ----------------------------------------------------------------------------


async def test_record_analysis_with_named_responses(open_manager: OpenManager) -> None:
    async with open_manager(wall_clock=lambda: WALL) as manager:
        session = await manager.create_session()
        state = await session.record_analysis(
            "why?", {"optimist": "because", "pessimist": "no reason"}, response_time=1.5
        )
        assert state.version == 2
        (analysis,) = state.analyses
        assert analysis.prompt == "why?"
        assert analysis.responses == {"optimist": "because", "pessimist": "no reason"}
        assert analysis.response_time == 1.5
        assert analysis.timestamp == WALL


async def test_record_analysis_with_a_list_of_responses(open_manager: OpenManager) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()
        state = await session.record_analysis("why?", ["one", "two"])
        (analysis,) = state.analyses
        assert analysis.responses == {"response_1": "one", "response_2": "two"}
        assert analysis.response_time is None


async def test_record_analysis_refuses_a_negative_response_time(
    open_manager: OpenManager,
) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()
        with pytest.raises(ValueError, match=r"-0\.5"):
            await session.record_analysis("p", ["r"], response_time=-0.5)
        with pytest.raises(ValueError, match="nan"):
            await session.record_analysis("p", ["r"], response_time=float("nan"))
        assert (await session.snapshot()).analyses == ()


async def test_record_analysis_refuses_a_string_as_responses(open_manager: OpenManager) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()
        with pytest.raises(TypeError, match="mapping or a list"):
            await session.record_analysis("p", "just one string")  # type: ignore[arg-type]


async def test_analyses_are_bounded_keeping_the_newest(open_manager: OpenManager) -> None:
    async with open_manager(max_analyses=2) as manager:
        session = await manager.create_session()
        for i in range(5):
            state = await session.record_analysis(f"p{i}", [f"r{i}"])
        assert [a.prompt for a in state.analyses] == ["p3", "p4"]


# -- requests ----------------------------------------------------------------------------


async def test_begin_request_id_has_five_parts(open_manager: OpenManager) -> None:
    async with open_manager(wall_clock=lambda: WALL) as manager:
        session = await manager.create_session()
        record = await session.begin_request("conv1", tool_name="session_get")
        parts = record.id.split(":")
        assert len(parts) == 5
        sid, conversation, counter, timestamp, random = parts
        assert (sid, conversation, counter) == (session.id, "conv1", "1")
        assert timestamp == str(int(WALL * 1000))
        assert len(random) >= 8
        assert (record.conversation_id, record.status, record.tool_name) == (
            "conv1",
            "active",
            "session_get",
        )
        assert record.started_at == WALL
        state = await session.snapshot()
        assert state.active_requests == (record,)
        assert state.request_counter == 1


async def test_begin_request_counter_increments_and_ids_differ(
    open_manager: OpenManager,
) -> None:
    async with open_manager(wall_clock=lambda: WALL) as manager:
        session = await manager.create_session()
        records = [await session.begin_request() for _ in range(3)]
        other = await manager.create_session()
        other_record = await other.begin_request()
    assert [r.id.split(":")[2] for r in records] == ["1", "2", "3"]
    assert [r.id.split(":")[1] for r in records] == ["default"] * 3
    assert len({r.id for r in records}) == 3
    assert other_record.id.split(":")[:3] == [other.id, "default", "1"]


@pytest.mark.parametrize("conversation", ["", "a:b"])
async def test_begin_request_refuses_a_conversation_id_that_breaks_the_format(
    open_manager: OpenManager, conversation: str
) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()
        with pytest.raises(ValueError, match="conversation_id"):
            await session.begin_request(conversation)


async def test_complete_and_fail_request_move_it_to_completed(
    open_manager: OpenManager,
) -> None:
    now = [WALL]
    async with open_manager(wall_clock=lambda: now[0]) as manager:
        session = await manager.create_session()
        ok = await session.begin_request()
        bad = await session.begin_request()
        still = await session.begin_request()
        now[0] = WALL + 2
        await session.complete_request(ok.id)
        state = await session.fail_request(bad.id, "timed out")
        assert [r.id for r in state.active_requests] == [still.id]
        done, failed = state.completed_requests
        assert (done.id, done.status, done.error, done.finished_at) == (
            ok.id,
            "completed",
            None,
            WALL + 2,
        )
        assert (failed.id, failed.status, failed.error) == (bad.id, "failed", "timed out")
        stats = await session.stats()
        assert (stats.active_requests, stats.completed_requests, stats.failed_requests) == (1, 1, 1)


async def test_finishing_an_unknown_or_finished_request_raises(
    open_manager: OpenManager,
) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()
        with pytest.raises(triact.RequestNotFoundError, match="'nope'"):
            await session.complete_request("nope")
        with pytest.raises(triact.RequestNotFoundError) as long:
            await session.complete_request("x" * 100_000)
        assert str(long.value).endswith(f"request {'x' * 40!r}... (100000 characters)")
        record = await session.begin_request()
        await session.complete_request(record.id)
        with pytest.raises(triact.RequestNotFoundError, match=session.id):
            await session.fail_request(record.id, "again")
        state = await session.snapshot()
        assert len(state.completed_requests) == 1
        assert state.version == 3
    assert issubclass(triact.RequestNotFoundError, triact.SessionError)


async def test_completed_requests_are_bounded_keeping_the_newest(
    open_manager: OpenManager,
) -> None:
    async with open_manager(max_completed_requests=2) as manager:
        session = await manager.create_session()
        ids = []
        for _ in range(4):
            record = await session.begin_request()
            ids.append(record.id)
            state = await session.complete_request(record.id)
        assert [r.id for r in state.completed_requests] == ids[2:]
        assert state.request_counter == 4
        # The stats count the records kept, as documented: not every request finished.
        stats = await session.stats()
        assert (stats.active_requests, stats.completed_requests, stats.failed_requests) == (0, 2, 0)


async def test_active_requests_are_bounded_and_the_one_past_it_begins_nothing(
    open_manager: OpenManager,
) -> None:
    async with open_manager(max_active_requests=3) as manager:
        session = await manager.create_session()
        records = [await session.begin_request("c") for _ in range(3)]
        before = await session.snapshot()
        with pytest.raises(triact.SessionLimitError, match="max_active_requests") as caught:
            await session.begin_request("c")
        assert caught.value.code == "limit_exceeded"
        after = await session.snapshot()
        assert after.version == before.version
        assert after.request_counter == 3
        assert after.active_requests == before.active_requests
        # Finishing one makes room for one more.
        await session.fail_request(records[0].id, "gave up")
        fourth = await session.begin_request("c")
        state = await session.snapshot()
        assert [r.id for r in state.active_requests] == [records[1].id, records[2].id, fourth.id]
        assert state.request_counter == 4
        stats = await session.stats()
        assert (stats.active_requests, stats.completed_requests, stats.failed_requests) == (3, 0, 1)


# -- stats --------------------------------------------------------------------------------


async def test_session_stats(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    def fail(state: triact.SessionState) -> triact.SessionState:
        raise RuntimeError("no")

    async with open_manager() as manager:
        session = await manager.create_session()
        other = await manager.create_session()
        await other.update(put("k", 1))  # not counted here
        await session.update(sleep_then_put(4.0, "k", 1))
        await session.add_thread("t")
        await session.record_analysis("p", ["r"])
        with pytest.raises(RuntimeError):
            await session.update(fail)
        stats = await session.stats()
    assert stats.session_id == session.id
    assert stats.version == 4
    assert (stats.operations, stats.errors) == (4, 1)
    assert stats.error_rate == pytest.approx(0.25)
    assert stats.latency.max == pytest.approx(4.0)
    assert (stats.threads, stats.analyses) == (1, 1)


async def test_session_stats_of_a_fresh_session(open_manager: OpenManager) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()
        stats = await session.stats()
    assert (stats.version, stats.operations, stats.errors, stats.error_rate) == (1, 0, 0, 0.0)
    assert (stats.active_requests, stats.completed_requests, stats.failed_requests) == (0, 0, 0)


async def test_snapshot_metrics_count_calls(open_manager: OpenManager) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()
        await session.update(put("k", 1))
        with pytest.raises(triact.SessionConcurrencyError):
            await session.update(put("k", 2), expected_version=9)
        metrics = (await session.snapshot()).metrics
    assert (metrics.operations, metrics.errors) == (2, 1)


# -- end ----------------------------------------------------------------------------------


async def test_end_returns_the_final_state_and_the_session_is_gone(
    open_manager: OpenManager,
) -> None:
    store = triact.MemoryStore()
    async with open_manager(store=store) as manager:
        session = await manager.create_session(topic="t")
        await session.update(put("k", 1))
        final = await session.end()
        assert (final.id, final.version, final.topic, final.data) == (
            session.id,
            2,
            "t",
            {"k": 1},
        )
        assert manager.session_count == 0
        assert len(store) == 0
        with pytest.raises(triact.SessionNotFoundError, match=session.id):
            await manager.get_session(session.id)
        with pytest.raises(triact.SessionNotFoundError, match=session.id):
            await session.snapshot()
        with pytest.raises(triact.SessionNotFoundError):
            await session.end()
        assert await manager.remove_session(session.id) is False
        assert (await manager.stats()).ended == 1


async def test_end_of_a_session_never_called_before(open_manager: OpenManager) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()
        final = await session.end()
        assert final.version == 1
        assert manager.session_count == 0


async def test_calls_queued_behind_end_get_closed_error(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    outcomes: dict[str, object] = {}

    async def call(name: str, fn: Callable[[], object]) -> None:
        try:
            outcomes[name] = await fn()  # type: ignore[misc]
        except triact.SessionError as exc:
            outcomes[name] = exc

    async with open_manager() as manager:
        session = await manager.create_session()
        async with trio.open_nursery() as nursery:
            calls: list[tuple[str, Callable[[], object]]] = [
                ("running", lambda: session.update(sleep_then_put(2.0, "k", "running"))),
                ("before", lambda: session.update(put("k", "before"))),
                ("end", session.end),
                ("after-update", lambda: session.update(put("k", "after"))),
                ("after-read", session.snapshot),
            ]
            for name, fn in calls:
                nursery.start_soon(call, name, fn)
                await trio.testing.wait_all_tasks_blocked()
    final = outcomes["end"]
    assert isinstance(final, triact.SessionState)
    assert (final.version, final.data) == (3, {"k": "before"})
    for name in ("after-update", "after-read"):
        error = outcomes[name]
        assert isinstance(error, triact.SessionClosedError), name
        assert session.id in str(error)
        assert "ended" in str(error)


async def test_session_stats_counts_the_calls_queued_ahead(
    open_manager: OpenManager, autojump_clock: trio.testing.MockClock
) -> None:
    async def slow(state: triact.SessionState) -> triact.SessionState:
        await trio.sleep(1)
        return state

    async with open_manager() as manager:
        session = await manager.create_session()
        async with trio.open_nursery() as nursery:
            for _ in range(3):  # one runs, two wait
                nursery.start_soon(session.update, slow)
                await trio.testing.wait_all_tasks_blocked()
            stats = await session.stats()
        assert stats.queued == 2
        assert (await session.stats()).queued == 0


async def turns_during_updates(open_manager: OpenManager, schedule_slice: float) -> int:
    """How many turns another runnable task gets during 20 in-memory updates."""
    turns = 0

    async def other() -> None:
        nonlocal turns
        while True:
            turns += 1
            await trio.lowlevel.checkpoint()

    async with open_manager(schedule_slice=schedule_slice) as manager:
        session = await manager.create_session()
        await session.update(put("n", 0))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            for _ in range(20):
                await session.update(put("n", 1))
            seen = turns
            nursery.cancel_scope.cancel()
    return seen


async def test_updates_yield_within_the_schedule_slice_only(open_manager: OpenManager) -> None:
    # A long slice: 20 quick updates run without a task switch (each is still a
    # cancel point). No slice: each one yields.
    assert await turns_during_updates(open_manager, 1000.0) == 0
    assert await turns_during_updates(open_manager, 0.0) >= 19


async def test_request_tracking_refuses_arguments_of_the_wrong_type_naming_them(
    open_manager: OpenManager,
) -> None:
    async with open_manager() as manager:
        session = await manager.create_session()
        with pytest.raises(TypeError, match=r"^conversation_id must be a string, got int"):
            await session.begin_request(5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^tool_name must be a string or None, got int"):
            await session.begin_request("c", 7)  # type: ignore[arg-type]
        with pytest.raises(triact.SessionArgumentError, match=r"\.\.\. \(100000 characters\)$"):
            await session.begin_request(":" * 100_000)
        with pytest.raises(TypeError, match=r"^request_id must be a string, got int"):
            await session.complete_request(5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^request_id must be a string, got int"):
            await session.fail_request(5, "boom")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^response_time must be a number of seconds"):
            await session.record_analysis("p", ["a"], "3")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^response_time must be a number of seconds"):
            await session.record_analysis("p", ["a"], True)
        for bad in (-1, math.inf, math.nan, 10**400):  # (10**400: OverflowError at commit)
            with pytest.raises(triact.SessionArgumentError, match=r"^response_time must be >= 0"):
                await session.record_analysis("p", ["a"], bad)
        with pytest.raises(triact.SessionNotFoundError, match=r"^no session 5:"):
            await manager.get_session(5)  # type: ignore[arg-type]
        state = await session.snapshot()
        assert (state.version, state.active_requests, state.analyses) == (1, (), ())
