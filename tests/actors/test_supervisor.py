"""Supervisor: spawn, names, restarts, idle reaping, shutdown."""

from __future__ import annotations

from functools import partial

import pytest
import trio
import trio.lowlevel
import trio.testing

from triact.actors import (
    Actor,
    ActorFailedError,
    ActorRef,
    ActorStoppedError,
    RestartPolicy,
    SeeThrough,
    open_supervisor,
    see_through,
)


class Counter(Actor[object, int]):
    instances = 0

    def __init__(self) -> None:
        Counter.instances += 1
        self.n = 0

    def receive(self, message: object) -> int:
        self.n += 1
        return self.n


class Fragile(Counter):
    """Crashes (fatally) on "crash"; replies with its count otherwise."""

    fatal_exceptions = (RuntimeError,)

    def receive(self, message: object) -> int:
        if message == "crash":
            raise RuntimeError("state is broken")
        return super().receive(message)


class Sleeper(Actor[float, float]):
    async def receive(self, message: float) -> float:
        await trio.sleep(message)
        return message


def _tasks_alive() -> int:
    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(t) for n in task.child_nurseries for t in n.child_tasks)

    return count(trio.lowlevel.current_root_task())


async def test_spawn_creates_no_task() -> None:
    async with open_supervisor() as sup:
        before = _tasks_alive()
        refs = [sup.spawn(Counter) for _ in range(100)]
        assert _tasks_alive() == before
        assert len(sup) == 100
        for ref in refs:
            assert await ref.ask(None) == 1
        assert _tasks_alive() == before


async def test_names_are_unique_and_get_finds_them() -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(Counter, name="c")
        assert sup.get("c") is ref
        assert sup.get("missing") is None
        with pytest.raises(ValueError, match="'c' is already running"):
            sup.spawn(Counter, name="c")
        await ref.stop()
        assert sup.get("c") is None
        assert sup.spawn(Counter, name="c") is not ref  # the name is free again


async def test_generated_names_are_distinct() -> None:
    async with open_supervisor() as sup:
        names = {sup.spawn(Counter).name for _ in range(10)}
        assert len(names) == 10
        assert all(name.startswith("Counter-") for name in names)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mailbox_size": 0}, "mailbox_size must be >= 1"),
        ({"idle_timeout": 0}, "idle_timeout must be > 0"),
        ({"idle_timeout": -1.0}, "idle_timeout must be > 0"),
    ],
)
async def test_spawn_rejects_bad_arguments(kwargs: dict[str, float], match: str) -> None:
    async with open_supervisor() as sup:
        with pytest.raises(ValueError, match=match):
            sup.spawn(Counter, **kwargs)  # type: ignore[arg-type]
        assert len(sup) == 0


async def test_factory_must_return_an_actor() -> None:
    async with open_supervisor() as sup:
        with pytest.raises(TypeError, match="not an Actor"):
            sup.spawn(object)  # type: ignore[arg-type]


def test_bad_policy_and_grace_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_restarts must be >= 0"):
        RestartPolicy(max_restarts=-1)

    async def main() -> None:
        with pytest.raises(ValueError, match="shutdown_grace"):
            async with open_supervisor(shutdown_grace=-1):
                pass  # pragma: no cover

    trio.run(main)


async def test_spawn_after_shutdown_is_refused() -> None:
    async with open_supervisor() as sup:
        pass
    with pytest.raises(ActorStoppedError, match="shutting down"):
        sup.spawn(Counter)


async def test_fatal_exception_restarts_from_factory() -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(Fragile)
        assert await ref.ask("a") == 1
        assert await ref.ask("b") == 2
        with pytest.raises(RuntimeError, match="state is broken"):
            await ref.ask("crash")
        assert await ref.ask("c") == 1  # a fresh instance
        assert sup.failures == ()


async def test_non_fatal_exception_keeps_the_instance() -> None:
    class Picky(Counter):
        def receive(self, message: object) -> int:
            if message == "bad":
                raise ValueError("bad message")
            return super().receive(message)

    async with open_supervisor() as sup:
        ref = sup.spawn(Picky)
        await ref.ask("a")
        with pytest.raises(ValueError, match="bad message"):
            await ref.ask("bad")
        assert await ref.ask("b") == 2


async def test_restarts_past_the_policy_fail_the_actor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_supervisor(restart=RestartPolicy(max_restarts=2, within=10.0)) as sup:
        ref = sup.spawn(Fragile, name="fragile")
        for _ in range(3):
            with pytest.raises(RuntimeError):
                await ref.ask("crash")
        assert ref.stopped
        assert isinstance(ref.failure, RuntimeError)
        with pytest.raises(ActorFailedError, match="'fragile' failed") as info:
            await ref.ask("x")
        assert info.value.__cause__ is ref.failure
        assert sup.get("fragile") is None
        [failure] = sup.failures
        assert failure.name == "fragile"
        assert failure.error is ref.failure


async def test_restart_window_slides(autojump_clock: trio.testing.MockClock) -> None:
    async with open_supervisor(restart=RestartPolicy(max_restarts=2, within=10.0)) as sup:
        ref = sup.spawn(Fragile)
        for _ in range(10):  # two crashes per window: always allowed
            for _ in range(2):
                with pytest.raises(RuntimeError):
                    await ref.ask("crash")
            await trio.sleep(11)
        assert not ref.stopped
        assert await ref.ask("x") == 1


async def test_crash_fails_queued_askers_when_giving_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class SlowFragile(Fragile):
        async def receive(self, message: object) -> int:  # type: ignore[override]
            await trio.sleep(1)
            return Fragile.receive(self, message)

    results: list[object] = []

    async def ask(ref: object, message: str) -> None:
        try:
            results.append(await ref.ask(message))  # type: ignore[attr-defined]
        except Exception as exc:
            results.append(type(exc))

    async with open_supervisor(restart=RestartPolicy(max_restarts=0)) as sup:
        ref = sup.spawn(SlowFragile)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, ref, "crash")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(ask, ref, "queued")
            await trio.testing.wait_all_tasks_blocked()
            ref.tell("told")
    assert results == [RuntimeError, ActorFailedError]


async def test_on_start_crash_restarts_and_then_handles(
    autojump_clock: trio.testing.MockClock,
) -> None:
    attempts = []

    class StartsOnThirdTry(Counter):
        async def on_start(self) -> None:
            attempts.append(True)
            if len(attempts) < 3:
                raise OSError("not yet")

    async with open_supervisor(restart=RestartPolicy(max_restarts=3)) as sup:
        ref = sup.spawn(StartsOnThirdTry)
        assert await ref.ask("x") == 1
        assert len(attempts) == 3


async def test_on_start_crash_past_policy_fails_the_ask() -> None:
    class NeverStarts(Counter):
        def on_start(self) -> None:
            raise OSError("cannot start")

    async with open_supervisor(restart=RestartPolicy(max_restarts=1)) as sup:
        ref = sup.spawn(NeverStarts)
        with pytest.raises(ActorFailedError, match="failed to start") as info:
            await ref.ask("x")
        assert isinstance(info.value.__cause__, OSError)
        ref2 = sup.spawn(NeverStarts)
        ref2.tell("told")  # the drainer reports it the same way
        await trio.testing.wait_all_tasks_blocked()
        assert ref2.stopped
        assert [type(f.error) for f in sup.failures] == [OSError, OSError]


async def test_factory_failing_on_restart_fails_the_actor() -> None:
    made = []

    def factory() -> Fragile:
        if made:
            raise LookupError("no second instance")
        made.append(True)
        return Fragile()

    async with open_supervisor() as sup:
        ref = sup.spawn(factory)
        with pytest.raises(RuntimeError):
            await ref.ask("crash")
        assert ref.stopped
        assert isinstance(ref.failure, LookupError)


async def test_on_stop_failure_is_reported() -> None:
    class BadStop(Counter):
        def on_stop(self) -> None:
            raise OSError("flush failed")

    async with open_supervisor() as sup:
        ref = sup.spawn(BadStop, name="bad-stop")
        await ref.ask(1)
        await ref.stop()
        assert ref.stopped
        [failure] = sup.failures
        assert failure.name == "bad-stop"
        assert isinstance(failure.error, OSError)


async def test_idle_actor_is_stopped_after_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(Counter, name="idle", idle_timeout=10.0)
        await trio.sleep(9)
        assert await ref.ask(None) == 1  # activity pushes the deadline out
        await trio.sleep(9)
        assert not ref.stopped
        await trio.sleep(1.5)
        assert ref.stopped
        assert sup.get("idle") is None


async def test_busy_actor_is_not_reaped(autojump_clock: trio.testing.MockClock) -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(Sleeper, idle_timeout=1.0)
        assert await ref.ask(30.0) == 30.0  # busy far past the timeout
        assert not ref.stopped
        await trio.sleep(1.5)
        assert ref.stopped


async def test_idle_reaping_stops_only_the_idle_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_supervisor() as sup:
        keep = [sup.spawn(Counter, idle_timeout=1000.0) for _ in range(200)]
        go = [sup.spawn(Counter, idle_timeout=1.0) for _ in range(10)]
        await trio.sleep(2)
        assert len(sup) == 200
        assert all(ref.stopped for ref in go)
        assert not any(ref.stopped for ref in keep)


async def test_shutdown_lets_in_flight_and_queued_work_finish(
    autojump_clock: trio.testing.MockClock,
) -> None:
    replies: list[float] = []

    async def ask(ref: object, seconds: float) -> None:
        replies.append(await ref.ask(seconds))  # type: ignore[attr-defined]

    async with trio.open_nursery() as nursery:
        async with open_supervisor(shutdown_grace=10.0) as sup:
            ref = sup.spawn(Sleeper)
            nursery.start_soon(ask, ref, 2.0)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(ask, ref, 3.0)
            await trio.testing.wait_all_tasks_blocked()
            ref.tell(1.0)
        assert trio.current_time() == pytest.approx(6.0)
        assert ref.stopped
    assert replies == [2.0, 3.0]


async def ask_recording(results: list[object], ref: ActorRef[float, float], seconds: float) -> None:
    """Ask ``ref`` to sleep ``seconds``; keep its reply, or the text of its refusal."""
    try:
        results.append(await ref.ask(seconds))
    except ActorStoppedError as exc:
        results.append(str(exc))


async def test_shutdown_past_grace_stops_what_is_left(
    autojump_clock: trio.testing.MockClock,
) -> None:
    results: list[object] = []
    ask = partial(ask_recording, results)

    async with trio.open_nursery() as nursery:
        async with open_supervisor(shutdown_grace=5.0) as sup:
            ref = sup.spawn(Sleeper)
            told = sup.spawn(Sleeper)
            told.tell(100.0)
            nursery.start_soon(ask, ref, 100.0)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(ask, ref, 1.0)
            await trio.testing.wait_all_tasks_blocked()
        assert trio.current_time() == pytest.approx(5.0)
        assert ref.stopped
        assert told.stopped
    assert len(results) == 2
    assert all("shut down" in str(r) for r in results), results


async def test_shutdown_past_grace_cancels_a_handler_in_the_runner(
    autojump_clock: trio.testing.MockClock,
) -> None:
    results: list[object] = []
    ask = partial(ask_recording, results)

    async with trio.open_nursery() as nursery:
        async with open_supervisor(shutdown_grace=5.0) as sup:
            ref = sup.spawn(Sleeper)
            nursery.start_soon(ask, ref, 1.0)  # runs in its asker's task
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(ask, ref, 100.0)  # queued behind it: runs in the runner
            await trio.testing.wait_all_tasks_blocked()
        assert trio.current_time() == pytest.approx(5.0)
        assert ref.stopped
    assert results == [
        1.0,
        "the supervisor of actor 'Sleeper-1' shut down (grace period expired) while "
        "this message was being handled",
    ]


class Writer(Actor[float, float]):
    """Replies after sleeping ``message`` seconds, in a reply seen through."""

    def __init__(self) -> None:
        self.finished: list[float] = []

    def receive(self, message: float) -> SeeThrough[float]:
        return see_through(self._write(message))

    async def _write(self, seconds: float) -> float:
        await trio.sleep(seconds)
        self.finished.append(seconds)
        return seconds


async def test_a_reply_seen_through_outlasts_a_forced_shutdown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    writer = Writer()
    replies: list[float] = []

    async def ask(ref: object) -> None:
        replies.append(await ref.ask(20.0))  # type: ignore[attr-defined]

    async with trio.open_nursery() as nursery:
        async with open_supervisor(shutdown_grace=5.0) as sup:
            ref = sup.spawn(lambda: writer)
            nursery.start_soon(ask, ref)
            await trio.testing.wait_all_tasks_blocked()
        # The supervisor stopped the actor at the end of its grace, without
        # cancelling the reply or waiting for it.
        assert trio.current_time() == pytest.approx(5.0)
        assert ref.stopped
        assert replies == []
    assert replies == [20.0]  # it finished in its asker's task
    assert trio.current_time() == pytest.approx(20.0)


async def test_a_told_reply_seen_through_is_waited_for(
    autojump_clock: trio.testing.MockClock,
) -> None:
    writer = Writer()
    async with open_supervisor(shutdown_grace=5.0) as sup:
        sup.spawn(lambda: writer).tell(20.0)
        await trio.testing.wait_all_tasks_blocked()
    assert writer.finished == [20.0]
    assert trio.current_time() == pytest.approx(20.0)


async def test_the_askers_own_cancellation_reaches_a_reply_seen_through(
    autojump_clock: trio.testing.MockClock,
) -> None:
    writer = Writer()
    async with open_supervisor() as sup:
        ref = sup.spawn(lambda: writer)
        with pytest.raises(trio.TooSlowError):
            await ref.ask(20.0, timeout=1.0)
        assert writer.finished == []
        assert await ref.ask(0.5) == 0.5  # and the actor serves on
        assert await see_through(writer._write(0.25)) == 0.25  # awaitable as it is
        with trio.testing.assert_checkpoints():  # the reply's own checkpoint
            await ref.ask(0.0)


async def test_shutdown_leaves_no_task_behind(autojump_clock: trio.testing.MockClock) -> None:
    before = _tasks_alive()
    async with open_supervisor(shutdown_grace=1.0) as sup:
        for _ in range(10):
            sup.spawn(Sleeper).tell(50.0)
        sup.spawn(Counter, idle_timeout=5)
        assert _tasks_alive() > before
    assert _tasks_alive() == before


async def test_shutdown_runs_on_stop_hooks() -> None:
    stopped: list[str] = []

    class Hooked(Counter):
        async def on_stop(self) -> None:
            await trio.lowlevel.checkpoint()
            stopped.append("async")

    class SyncHooked(Counter):
        def on_stop(self) -> None:
            stopped.append("sync")

    async with open_supervisor() as sup:
        await sup.spawn(Hooked).ask(1)
        await sup.spawn(SyncHooked).ask(1)
    assert sorted(stopped) == ["async", "sync"]


async def test_body_exception_propagates_unwrapped() -> None:
    with pytest.raises(KeyError, match="from the body"):
        async with open_supervisor() as sup:
            await sup.spawn(Counter).ask(1)
            raise KeyError("from the body")


async def test_outer_cancellation_still_gets_the_grace_period(
    autojump_clock: trio.testing.MockClock,
) -> None:
    replies: list[float] = []
    with trio.move_on_after(1.0):
        async with open_supervisor(shutdown_grace=10.0) as sup:
            ref = sup.spawn(Sleeper)
            ref.tell(3.0)  # runs in the supervisor's drainer, which has the grace period
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep_forever()
    assert trio.current_time() == pytest.approx(3.0)
    assert ref.stopped
    assert replies == []


async def test_start_soon_runs_a_task_and_is_refused_once_closing() -> None:
    ran = trio.Event()

    async def task() -> None:
        ran.set()

    async with open_supervisor() as sup:
        sup.start_soon(task)
        await ran.wait()
    with pytest.raises(ActorStoppedError, match="shutting down"):
        sup.start_soon(task)
