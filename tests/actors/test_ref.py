"""ActorRef: ask, tell, send, stop, ordering, errors, cancellation."""

from __future__ import annotations

import contextlib
import math
import types
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar, copy_context
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

import triact.actors._ref
from triact.actors import (
    Actor,
    ActorError,
    ActorRef,
    ActorStoppedError,
    MailboxFullError,
    Queued,
    ReentrantCallError,
    open_supervisor,
    see_through,
)


class Recorder(Actor[object, object]):
    """Records every message; replies with how many it has seen."""

    def __init__(self) -> None:
        self.seen: list[object] = []

    def receive(self, message: object) -> object:
        self.seen.append(message)
        return len(self.seen)


class SlowRecorder(Recorder):
    """Async handler that sleeps ``message[1]`` seconds and checks it runs alone."""

    running = 0

    async def receive(self, message: object) -> object:  # type: ignore[override]
        SlowRecorder.running += 1
        try:
            assert SlowRecorder.running == 1, "two handlers ran at once"
            assert isinstance(message, tuple)
            await trio.sleep(message[1])
            self.seen.append(message[0])
            return len(self.seen)
        finally:
            SlowRecorder.running -= 1


class Failing(Actor[object, object]):
    def __init__(self) -> None:
        self.errors_seen: list[tuple[object, Exception]] = []

    def receive(self, message: object) -> object:
        if message == "fail":
            raise ValueError("handler failed")
        return message

    def on_error(self, message: object, error: Exception) -> None:
        self.errors_seen.append((message, error))


async def test_ask_returns_the_handler_reply() -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(Recorder)
        assert await ref.ask("a") == 1
        assert await ref.ask("b") == 2


async def test_async_handler_reply() -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(SlowRecorder)
        assert await ref.ask(("a", 0.1)) == 1


async def test_concurrent_asks_run_one_at_a_time_in_arrival_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(SlowRecorder)
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(ref.ask, (i, 1.0))
                await trio.testing.wait_all_tasks_blocked()
        actor = ref._actor
        assert isinstance(actor, SlowRecorder)
        assert actor.seen == list(range(20))
        assert trio.current_time() == pytest.approx(20.0)


async def test_tells_are_handled_in_order_between_asks() -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(Recorder)
        for i in range(5):
            ref.tell(i)
        assert await ref.ask("last") == 6
        assert ref._actor.seen == [0, 1, 2, 3, 4, "last"]  # type: ignore[attr-defined]


async def test_slow_actor_does_not_delay_another(autojump_clock: trio.testing.MockClock) -> None:
    async with open_supervisor() as sup:
        slow = sup.spawn(SlowRecorder)
        fast = sup.spawn(Recorder)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow.ask, ("x", 100.0))
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            assert await fast.ask("y") == 1
            assert trio.current_time() == start
            nursery.cancel_scope.cancel()


async def test_handler_exception_goes_to_asker_and_actor_keeps_serving() -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(Failing)
        with pytest.raises(ValueError, match="handler failed"):
            await ref.ask("fail")
        assert await ref.ask("ok") == "ok"
        assert ref.errors == 0  # errors counts told messages only


async def test_told_exception_goes_to_on_error_and_is_counted() -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(Failing)
        ref.tell("fail")
        ref.tell("fine")
        ref.tell("fail")
        assert await ref.ask("ok") == "ok"
        assert ref.errors == 2
        actor = ref._actor
        assert isinstance(actor, Failing)
        assert [m for m, _ in actor.errors_seen] == ["fail", "fail"]
        assert all(isinstance(e, ValueError) for _, e in actor.errors_seen)


async def test_default_on_error_logs(caplog: pytest.LogCaptureFixture) -> None:
    class Plain(Actor[object, object]):
        def receive(self, message: object) -> object:
            raise KeyError(message)

    async with open_supervisor() as sup:
        ref = sup.spawn(Plain)
        ref.tell("k")
        await ref.stop()
    assert ref.errors == 1
    assert "Plain failed on a told message 'k'" in caplog.text


async def test_tell_on_full_mailbox_raises_and_queues_nothing() -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(Recorder, mailbox_size=3)
        for i in range(3):
            ref.tell(i)
        with pytest.raises(MailboxFullError, match="3 messages queued"):
            ref.tell("overflow")
        assert ref.queued == 3
        await ref.stop()
        assert ref._actor.seen == [0, 1, 2]  # type: ignore[attr-defined]


async def test_ask_on_full_mailbox_raises(autojump_clock: trio.testing.MockClock) -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(SlowRecorder, mailbox_size=1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ref.ask, ("running", 1.0))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(ref.ask, ("queued", 1.0))
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(MailboxFullError):
                await ref.ask(("refused", 1.0))
        assert ref._actor.seen == ["running", "queued"]  # type: ignore[attr-defined]


async def test_send_waits_for_room(autojump_clock: trio.testing.MockClock) -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(SlowRecorder, mailbox_size=2)
        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(ref.send, (i, 1.0))
                await trio.testing.wait_all_tasks_blocked()
            # one running, two queued, three waiting for room
            assert ref.queued == 2
        await ref.stop()
        assert ref._actor.seen == list(range(6))  # type: ignore[attr-defined]


async def test_cancelled_send_queues_nothing(autojump_clock: trio.testing.MockClock) -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(SlowRecorder, mailbox_size=1)
        ref.tell(("first", 5.0))
        await trio.testing.wait_all_tasks_blocked()
        ref.tell(("second", 0.0))
        with trio.move_on_after(1.0) as scope:
            await ref.send(("never", 0.0))
        assert scope.cancelled_caught
        await ref.stop()
        assert ref._actor.seen == ["first", "second"]  # type: ignore[attr-defined]


async def test_send_to_stopped_actor_raises() -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(Recorder)
        await ref.stop()
        with pytest.raises(ActorStoppedError, match="is stopped"):
            await ref.send("x")
        with pytest.raises(ActorStoppedError):
            ref.tell("x")
        with pytest.raises(ActorStoppedError):
            await ref.ask("x")


async def test_waiting_sender_is_refused_when_actor_stops(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(SlowRecorder, mailbox_size=1)
        ref.tell(("running", 1.0))
        await trio.testing.wait_all_tasks_blocked()
        ref.tell(("queued", 1.0))
        outcome: list[BaseException] = []

        async def sender() -> None:
            try:
                await ref.send(("waiting", 0.0))
            except ActorStoppedError as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            await trio.testing.wait_all_tasks_blocked()
            ref.stop_soon()
        assert len(outcome) == 1
        await ref.stop()
        assert ref._actor.seen == ["running", "queued"]  # type: ignore[attr-defined]


async def test_cancelled_queued_ask_is_never_handled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(SlowRecorder)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ref.ask, ("running", 2.0))
            await trio.testing.wait_all_tasks_blocked()
            with trio.move_on_after(1.0) as scope:
                await ref.ask(("cancelled", 0.0))
            assert scope.cancelled_caught
            assert ref.queued == 0
        assert await ref.ask(("after", 0.0)) == 2
        assert ref._actor.seen == ["running", "after"]  # type: ignore[attr-defined]


async def test_ask_timeout_raises_too_slow_and_message_is_not_handled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(SlowRecorder)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ref.ask, ("running", 5.0))
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.TooSlowError):
                await ref.ask(("late", 0.0), timeout=1.0)
        assert ref._actor.seen == ["running"]  # type: ignore[attr-defined]


async def test_asker_cancels_its_running_async_handler(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(SlowRecorder)
        with pytest.raises(trio.TooSlowError):
            await ref.ask(("slow", 10.0), timeout=1.0)
        assert trio.current_time() == pytest.approx(1.0)
        assert ref._actor.seen == []  # type: ignore[attr-defined]
        assert await ref.ask(("next", 0.0)) == 1


async def test_ask_that_returns_was_handled_exactly_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A sync handler cannot be interrupted: an ask whose turn came returns, even if
    # its caller was cancelled in the meantime.
    async with open_supervisor() as sup:
        ref = sup.spawn(Recorder)
        replies = []
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await ref.ask("cancelled before it started")
        replies.append(await ref.ask("handled"))
        assert replies == [1]
        assert ref._actor.seen == ["handled"]  # type: ignore[attr-defined]


async def test_ask_is_a_checkpoint() -> None:
    async with open_supervisor(schedule_slice=0) as sup:
        ref = sup.spawn(Recorder)
        with trio.testing.assert_checkpoints():
            await ref.ask(1)
        ref.tell(2)
        with trio.testing.assert_checkpoints():
            await ref.ask(3)
        with trio.testing.assert_checkpoints():
            await ref.send(4)


class FakeTime:
    """A stand-in for the perf_counter that times askers' slices."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step  # how far it moves at each reading

    def __call__(self) -> float:
        self.now += self.step
        return self.now


async def count_turns(asks: int, *, slice_: float) -> int:
    """How many turns another runnable task gets while one task asks an idle actor
    ``asks`` times."""
    turns = 0

    async def other() -> None:
        nonlocal turns
        while True:
            turns += 1
            await trio.lowlevel.checkpoint()

    async with open_supervisor(schedule_slice=slice_) as sup, trio.open_nursery() as nursery:
        ref = sup.spawn(Recorder)
        await ref.ask("warm up")  # starts the asking task's slice
        nursery.start_soon(other)  # runnable from now on, at every turn it gets
        for i in range(asks):
            await ref.ask(i)
        seen = turns
        nursery.cancel_scope.cancel()
    return seen


async def test_asks_within_the_slice_cost_no_task_switch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(triact.actors._ref, "perf_counter", FakeTime(step=0.0001))
    assert await count_turns(50, slice_=1.0) == 0


async def test_askers_yield_once_their_slice_is_used_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(triact.actors._ref, "perf_counter", FakeTime(step=0.4))
    # Every third ask yields. (The other task's turn after the last yield comes
    # before or after the asker's, at random: Trio's scheduler picks the order.)
    assert await count_turns(30, slice_=1.0) in (9, 10)
    # With no slice, every ask yields.
    assert await count_turns(30, slice_=0) in (29, 30)


def count_yields(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the asks that yield at their schedule point (in the one-item list)."""
    yields = [0]
    real = triact.actors._ref.cancel_shielded_checkpoint

    async def counted() -> None:
        yields[0] += 1
        await real()

    monkeypatch.setattr(triact.actors._ref, "cancel_shielded_checkpoint", counted)
    return yields


async def wait_a_turn(nursery: trio.Nursery) -> None:
    """Wait (the task is suspended) until another task wakes it."""
    woken = trio.Event()

    async def wake() -> None:
        woken.set()

    nursery.start_soon(wake)
    await woken.wait()


async def test_the_first_ask_after_a_wait_starts_a_slice_instead_of_yielding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A task that comes back from a wait starts a step of its own: the slice counts
    # from there, not from the last yield at an ask (then the first ask of every
    # burst after a pause would yield).
    clock = FakeTime(step=0.0001)
    monkeypatch.setattr(triact.actors._ref, "perf_counter", clock)
    yields = count_yields(monkeypatch)
    async with open_supervisor(schedule_slice=0.001) as sup, trio.open_nursery() as nursery:
        ref = sup.spawn(Recorder)
        await ref.ask("warm up")
        for burst in range(5):
            await wait_a_turn(nursery)
            clock.now += 1.0  # far more than a slice since any ask yielded
            for i in range(5):  # a burst well within a slice
                await ref.ask((burst, i))
    assert yields == [0]


async def test_a_long_run_of_asks_after_a_wait_yields_every_slice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeTime(step=0.4)
    monkeypatch.setattr(triact.actors._ref, "perf_counter", clock)
    yields = count_yields(monkeypatch)
    async with open_supervisor(schedule_slice=1.0) as sup, trio.open_nursery() as nursery:
        ref = sup.spawn(Recorder)
        await wait_a_turn(nursery)
        clock.now += 10.0
        for i in range(30):
            await ref.ask(i)
            if i == 0:
                assert yields == [0]  # the first starts the slice
    # Then one ask in three yields (each yield reads the clock once more, when the
    # task is back: its next slice starts there): asks 3, 6, ..., 27 (0-based 3k).
    assert yields == [9]


async def test_askers_taking_turns_start_a_slice_each_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two tasks asking in turn (each waits for the other between its asks): every
    # ask comes after a wait, so none yields at the slice, however long they run.
    clock = FakeTime(step=0.4)
    monkeypatch.setattr(triact.actors._ref, "perf_counter", clock)
    yields = count_yields(monkeypatch)
    async with open_supervisor(schedule_slice=1.0) as sup, trio.open_nursery() as nursery:
        ref = sup.spawn(Recorder)
        events = [trio.Event(), trio.Event()]

        async def asker(me: int) -> None:
            for i in range(10):
                await events[me].wait()
                events[me] = trio.Event()
                await ref.ask((me, i))
                events[1 - me].set()

        nursery.start_soon(asker, 0)
        nursery.start_soon(asker, 1)
        events[0].set()
    assert len(ref._actor.seen) == 20  # type: ignore[attr-defined]
    assert yields == [0]


async def test_an_ask_within_the_slice_is_still_a_cancel_point() -> None:
    async with open_supervisor(schedule_slice=1000.0) as sup:
        ref = sup.spawn(Recorder)
        await ref.ask("first")
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await ref.ask("never handled")
        assert ref._actor.seen == ["first"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("bad", [-0.1, math.inf, math.nan])
async def test_a_bad_schedule_slice_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="schedule_slice must be a finite number"):
        async with open_supervisor(schedule_slice=bad):
            pass


async def test_ask_self_from_handler_raises_reentrant_error() -> None:
    class Selfish(Actor[str, object]):
        ref: object = None

        async def receive(self, message: str) -> object:
            assert self.ref is not None
            return await self.ref.ask("again")  # type: ignore[attr-defined]

    async with open_supervisor() as sup:
        ref = sup.spawn(Selfish, name="selfish")
        ref._actor.ref = ref  # type: ignore[attr-defined]
        with pytest.raises(ReentrantCallError, match="'selfish' asked itself"):
            await ref.ask("go")
        # told messages run in a drainer task: the same rule holds there
        ref.tell("go")
        await ref.stop()
        assert ref.errors == 1


async def test_stop_from_own_handler_raises_reentrant_error() -> None:
    class Stopper(Actor[str, object]):
        ref: object = None

        async def receive(self, message: str) -> object:
            await self.ref.stop()  # type: ignore[attr-defined]

    async with open_supervisor() as sup:
        ref = sup.spawn(Stopper)
        ref._actor.ref = ref  # type: ignore[attr-defined]
        with pytest.raises(ReentrantCallError, match="stop_soon"):
            await ref.ask("go")


async def test_tell_to_self_from_handler_is_queued() -> None:
    class Echo(Actor[int, object]):
        ref: object = None

        def __init__(self) -> None:
            self.seen: list[int] = []

        def receive(self, message: int) -> object:
            self.seen.append(message)
            if message < 3:
                self.ref.tell(message + 1)  # type: ignore[attr-defined]
            return None

    async with open_supervisor() as sup:
        ref = sup.spawn(Echo)
        ref._actor.ref = ref  # type: ignore[attr-defined]
        await ref.ask(0)
        await trio.testing.wait_all_tasks_blocked()
        assert ref._actor.seen == [0, 1, 2, 3]  # type: ignore[attr-defined]


class Tidy(Actor[str, str]):
    """A plain handler that, asked "tell" or "stop", tells or stops its own actor."""

    ref: Any = None

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.stopped = False

    def receive(self, message: str) -> str:
        self.seen.append(message)
        if message == "tell":
            self.ref.tell("told")
        elif message == "stop":
            self.ref.stop_soon()
        return message

    def on_stop(self) -> None:
        self.stopped = True


# The next three: an ask to an idle actor already started (its handler run in the
# asker's task, then the actor let go there), each in one way its handler or the
# actor's settings leave more to do than going idle.


async def test_a_tell_to_self_from_a_plain_handler_of_an_idle_actor_is_handled() -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(Tidy)
        ref._actor.ref = ref  # type: ignore[attr-defined]
        assert await ref.ask("start") == "start"
        assert not ref.busy
        assert await ref.ask("tell") == "tell"
        await trio.testing.wait_all_tasks_blocked()
        assert ref._actor.seen == ["start", "tell", "told"]  # type: ignore[attr-defined]
        assert not ref.busy


async def test_a_stop_from_a_plain_handler_of_an_idle_actor_stops_it() -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(Tidy, name="tidy")
        ref._actor.ref = ref  # type: ignore[attr-defined]
        assert await ref.ask("start") == "start"
        actor = ref._actor
        assert await ref.ask("stop") == "stop"
        assert ref.stopped
        assert actor.stopped  # type: ignore[attr-defined]
        assert sup.get("tidy") is None


async def test_an_ask_to_an_idle_actor_pushes_its_idle_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(Recorder, idle_timeout=10.0)
        assert await ref.ask("start") == 1  # idle from t = 0: a deadline at 10
        await trio.sleep(9)
        assert await ref.ask("again") == 2  # idle from t = 9: a deadline at 19
        await trio.sleep(9.5)
        assert not ref.stopped
        await trio.sleep(1)
        assert ref.stopped


class Inward(Actor[str, object]):
    """A plain handler that, asked "ask" or "see", replies with an ask of its own
    actor to await (a coroutine, or one to see through), and, asked "take", takes
    and answers the two messages it tells its own actor."""

    ref: Any = None

    def receive(self, message: str) -> object:
        if message == "ask":
            return self.ref.ask("inner")
        if message == "see":
            return see_through(self.ref.ask("inner"))
        if message == "take":
            self.ref.tell("a")
            self.ref.tell("b")
            taken = self.ref.take_queued(10)
            for queued in taken:
                queued.reply(None)
            return [queued.message for queued in taken]
        return message


# An idle actor already started, asked: its plain handler runs in the asker's task,
# which then holds the actor. The handler is its own (take_queued), and a reply to
# await runs in that task (an ask of the actor's own from it cannot run).


async def test_a_plain_handler_of_an_idle_actor_may_take_what_is_queued() -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(Inward)
        ref._actor.ref = ref  # type: ignore[attr-defined]
        assert await ref.ask("start") == "start"
        assert await ref.ask("take") == ["a", "b"]
        assert not ref.busy
        assert ref.errors == 0


@pytest.mark.parametrize("message", ["ask", "see"])
async def test_a_reply_to_await_from_a_plain_handler_of_an_idle_actor_runs_in_its_askers_task(
    message: str,
) -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(Inward, name="inward")
        ref._actor.ref = ref  # type: ignore[attr-defined]
        assert await ref.ask("start") == "start"
        with trio.fail_after(5), pytest.raises(ReentrantCallError, match="'inward' asked itself"):
            await ref.ask(message)
        assert not ref.busy
        assert await ref.ask("after") == "after"


async def test_stop_handles_queued_messages_then_runs_on_stop() -> None:
    events: list[object] = []

    class Hooked(Actor[int, None]):
        async def on_start(self) -> None:
            events.append("start")

        def receive(self, message: int) -> None:
            events.append(message)

        async def on_stop(self) -> None:
            await trio.lowlevel.checkpoint()
            events.append("stop")

    async with open_supervisor() as sup:
        ref = sup.spawn(Hooked, name="hooked")
        for i in range(3):
            ref.tell(i)
        await ref.stop()
        assert ref.stopped
        assert sup.get("hooked") is None
        await ref.stop()  # idempotent
    assert events == ["start", 0, 1, 2, "stop"]


async def test_stop_when_idle_stops_an_idle_actor_at_once() -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(Recorder, name="r")
        assert await ref.ask("a") == 1
        ref.stop_when_idle()
        assert ref.stopped
        assert sup.get("r") is None


async def test_stop_when_idle_keeps_taking_messages_until_the_mailbox_runs_dry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(SlowRecorder, idle_timeout=100.0)
        replies: list[object] = []

        async def ask(message: object) -> None:
            replies.append(await ref.ask(message))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, ("first", 1.0))
            await trio.testing.wait_all_tasks_blocked()
            ref.stop_when_idle()
            assert ref.accepting  # unlike stop_soon, later messages still queue here
            for i in range(3):
                nursery.start_soon(ask, (i, 0.5))
                await trio.testing.wait_all_tasks_blocked()
        assert ref.stopped
        assert replies == [1, 2, 3, 4]
        assert ref._actor.seen == ["first", 0, 1, 2]  # type: ignore[attr-defined]


async def test_on_stop_not_run_for_an_actor_never_started() -> None:
    stopped = []

    class Hooked(Recorder):
        def on_stop(self) -> None:
            stopped.append(True)

    async with open_supervisor() as sup:
        ref = sup.spawn(Hooked)
        await ref.stop()
    assert stopped == []


async def test_cancelled_stop_still_stops(autojump_clock: trio.testing.MockClock) -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(SlowRecorder)
        ref.tell(("queued", 5.0))
        with trio.move_on_after(1.0):
            await ref.stop()
        assert not ref.stopped
        await trio.sleep(10)
        assert ref.stopped
        assert ref._actor.seen == ["queued"]  # type: ignore[attr-defined]


def test_repr_names_the_actor_and_its_state() -> None:
    async def main() -> None:
        async with open_supervisor() as sup:
            ref = sup.spawn(Recorder, name="r")
            ref.tell(1)
            assert repr(ref) == "<ActorRef 'r' open, 1 queued>"
            await ref.stop()
            assert repr(ref) == "<ActorRef 'r' stopped, 0 queued>"

    trio.run(main)


class Mixed(Actor[object, object]):
    """A plain receive that returns a coroutine for the messages that must wait."""

    def __init__(self) -> None:
        self.seen: list[object] = []

    def receive(self, message: object) -> object:
        if isinstance(message, float):
            return self._slowly(message)
        self.seen.append(message)
        return message

    async def _slowly(self, seconds: float) -> object:
        await trio.sleep(seconds)
        self.seen.append(seconds)
        return seconds


async def test_plain_receive_may_return_a_coroutine(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(Mixed)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ref.ask, 2.0)
            await trio.testing.wait_all_tasks_blocked()
            assert await ref.ask("after") == "after"
        assert ref._actor.seen == [2.0, "after"]  # type: ignore[attr-defined]
        with pytest.raises(trio.TooSlowError):
            await ref.ask(5.0, timeout=1.0)  # the asker can cancel the coroutine part


# -- asks queued behind an async reply: the runner task ----------------------------

CALLER: ContextVar[str] = ContextVar("CALLER", default="nobody")


class ContextReader(Actor[str, tuple[str, trio.lowlevel.Task]]):
    """Sleeps a second, then replies with the caller's context variable and the task
    it ran in, and sets the variable (as a handler may)."""

    async def receive(self, message: str) -> tuple[str, trio.lowlevel.Task]:
        await trio.sleep(1)
        seen = CALLER.get()
        CALLER.set(f"set by the handler of {message}")
        return seen, trio.lowlevel.current_task()


async def test_queued_async_handlers_run_in_their_askers_context(
    autojump_clock: trio.testing.MockClock,
) -> None:
    results: dict[str, tuple[str, bool, str]] = {}

    async def ask(ref: object, name: str) -> None:
        CALLER.set(name)
        seen, task = await ref.ask(name)  # type: ignore[attr-defined]
        results[name] = (seen, task is trio.lowlevel.current_task(), CALLER.get())

    async with open_supervisor() as sup:
        ref = sup.spawn(ContextReader)
        async with trio.open_nursery() as nursery:
            for name in ("first", "second", "third"):
                nursery.start_soon(ask, ref, name)
                await trio.testing.wait_all_tasks_blocked()
    assert trio.current_time() == pytest.approx(3.0)  # one at a time
    # Each saw its own asker's variable, and its asker sees what it set, as if the
    # handler had run in the asker's task; the queued ones ran in the runner task.
    assert results == {
        "first": ("first", True, "set by the handler of first"),
        "second": ("second", False, "set by the handler of second"),
        "third": ("third", False, "set by the handler of third"),
    }


async def test_a_queued_askers_cancellation_cancels_its_handler_in_the_runner(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outcomes: dict[str, object] = {}

    async def ask(ref: object, message: tuple[str, float], timeout: float | None) -> None:
        try:
            outcomes[message[0]] = await ref.ask(message, timeout=timeout)  # type: ignore[attr-defined]
        except trio.TooSlowError:
            outcomes[message[0]] = "too slow"

    async with open_supervisor() as sup:
        ref = sup.spawn(SlowRecorder)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, ref, ("first", 1.0), None)
            await trio.testing.wait_all_tasks_blocked()
            # Queued at 0; its handler starts at 1 in the runner; its deadline is 3.
            nursery.start_soon(ask, ref, ("cancelled", 10.0), 3.0)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(ask, ref, ("third", 1.0), None)
        assert trio.current_time() == pytest.approx(4.0)  # "third" ran from 3 to 4
        assert outcomes == {"first": 1, "cancelled": "too slow", "third": 2}
        assert ref._actor.seen == ["first", "third"]  # type: ignore[attr-defined]
        assert await ref.ask(("after", 0.0)) == 3  # and the actor serves on


class Echo(Actor[float, str]):
    """Sleeps ``message`` seconds, then replies with the caller's context variable."""

    async def receive(self, message: float) -> str:
        await trio.sleep(message)
        return CALLER.get()


class Nesting(Actor[str, str]):
    """Sleeps a second, then asks ``inner`` for the message "nested"."""

    def __init__(self, inner: ActorRef[float, str]) -> None:
        self.inner = inner

    async def receive(self, message: str) -> str:
        await trio.sleep(1)
        if message == "nested":
            return await self.inner.ask(0.0)
        return message


async def test_an_ask_from_a_handler_in_the_runner_carries_that_handlers_context(
    autojump_clock: trio.testing.MockClock,
) -> None:
    replies: dict[str, str] = {}

    async def ask(ref: ActorRef[Any, str], name: str, message: Any) -> None:
        CALLER.set(name)
        replies[name] = await ref.ask(message)

    async with open_supervisor() as sup:
        inner = sup.spawn(Echo)
        outer = sup.spawn(lambda: Nesting(inner))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, inner, "blocker", 10.0)  # inner busy until 10
            nursery.start_soon(ask, outer, "first", "first")  # outer busy until 1
            await trio.testing.wait_all_tasks_blocked()
            # Runs in outer's runner from 1, and at 2 asks inner, which is busy: that
            # ask queues from the runner task, and inner's handler sees this context.
            nursery.start_soon(ask, outer, "nested asker", "nested")
    assert replies == {"blocker": "blocker", "first": "first", "nested asker": "nested asker"}
    assert trio.current_time() == pytest.approx(10.0)


class Moody(Actor[object, object]):
    """An async handler that fails, or catches its cancellation and raises."""

    async def receive(self, message: object) -> object:
        if message == "fail":
            await trio.lowlevel.checkpoint()
            raise ValueError("handler failed")
        if message == "fail when cancelled":
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                raise KeyError("cancelled, and failed") from None
        await trio.sleep(1)
        return message


async def test_the_runner_gives_each_asker_its_handlers_exception(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outcomes: dict[str, object] = {}

    async def ask(ref: object, message: str, timeout: float | None = None) -> None:
        try:
            outcomes[message] = await ref.ask(message, timeout=timeout)  # type: ignore[attr-defined]
        except Exception as exc:
            outcomes[message] = type(exc).__name__

    async with open_supervisor() as sup:
        ref = sup.spawn(Moody)
        async with trio.open_nursery() as nursery:
            for message, timeout in [
                ("first", None),
                ("fail", None),
                ("fail when cancelled", 5.0),
                ("last", None),
            ]:
                nursery.start_soon(ask, ref, message, timeout)
                await trio.testing.wait_all_tasks_blocked()
    assert outcomes == {
        "first": "first",
        "fail": "ValueError",
        "fail when cancelled": "KeyError",  # what the cancelled handler raised
        "last": "last",
    }


class Steps(Actor[str, object]):
    """Async replies that end every way a runner must tell apart: at once, after a
    wait, raising at once or after a wait, or cancelled; each records the task it ran
    in, and replies with its message and its asker's context variable."""

    def __init__(self) -> None:
        self.gate = trio.Event()
        self.tasks: dict[str, trio.lowlevel.Task] = {}

    async def receive(self, message: str) -> object:
        self.tasks[message] = trio.lowlevel.current_task()
        if message == "hold":
            await self.gate.wait()
        elif message.startswith("raise at once"):
            raise ValueError(message)
        elif message != "at once":
            await trio.lowlevel.checkpoint()
        if message.startswith("raise after"):
            raise KeyError(message)
        if message == "cancelled":
            await trio.sleep_forever()
        return message, CALLER.get()


async def test_one_runner_answers_each_async_reply_however_it_ended(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The runner drives the async replies it runs one after another (one driver
    for them all, made again after one raised): each asker gets its own reply, or
    its own handler's exception, seen in its own context."""
    messages = [
        "at once",
        "wait",
        "raise at once",
        "wait 2",
        "raise after",
        "at once",
        "cancelled",
        "wait 3",
        "raise after 2",
        "raise at once 2",
        "wait 4",
    ]
    outcomes: dict[int, object] = {}

    async def ask(ref: ActorRef[str, object], i: int, message: str) -> None:
        CALLER.set(f"asker {i}")
        try:
            with trio.fail_after(5) if message == "cancelled" else contextlib.nullcontext():
                outcomes[i] = await ref.ask(message)
        except (ValueError, KeyError, trio.TooSlowError) as exc:
            outcomes[i] = type(exc).__name__

    async with open_supervisor() as sup:
        ref = sup.spawn(Steps)
        actor = ref._actor
        assert isinstance(actor, Steps)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, ref, -1, "hold")
            await trio.testing.wait_all_tasks_blocked()
            for i, message in enumerate(messages):
                nursery.start_soon(ask, ref, i, message)
                await trio.testing.wait_all_tasks_blocked()
            actor.gate.set()
    assert outcomes == {
        -1: ("hold", "asker -1"),
        0: ("at once", "asker 0"),
        1: ("wait", "asker 1"),
        2: "ValueError",
        3: ("wait 2", "asker 3"),
        4: "KeyError",
        5: ("at once", "asker 5"),
        6: "TooSlowError",
        7: ("wait 3", "asker 7"),
        8: "KeyError",
        9: "ValueError",
        10: ("wait 4", "asker 10"),
    }
    runners = {task for message, task in actor.tasks.items() if message != "hold"}
    assert len(runners) == 1  # one runner served them all
    assert actor.tasks["hold"] not in runners


def test_the_runners_driver_passes_what_is_thrown_in_on_to_its_coroutine() -> None:
    """Trio sends a task its outcomes, but what is thrown into a runner at a reply's
    wait (a ``throw`` of its coroutine) goes on to the reply, in the reply's context,
    as the runner passes it (``_run_in(context, drive.throw, thrown)``); the driver
    then serves the next reply."""
    from triact.actors._ref import _DRIVEN, _drive, _run_in

    @types.coroutine
    def trap() -> Iterator[str]:
        yield "to trio"

    seen: list[str] = []

    async def recovers() -> str:
        try:
            await trap()
        except KeyError:
            seen.append(CALLER.get())
            return "recovered"
        return "not thrown"

    async def at_once() -> str:
        return "at once"

    context = copy_context()
    context.run(CALLER.set, "the asker")
    returned: list[object] = [None]
    drive = _drive(returned)
    assert drive.send(None) is _DRIVEN
    assert _run_in(context, drive.send, recovers()) == "to trio"
    assert _run_in(context, drive.throw, KeyError("thrown in")) is _DRIVEN
    assert (returned, seen) == (["recovered"], ["the asker"])
    assert _run_in(context, drive.send, at_once()) is _DRIVEN
    assert returned == ["at once"]


class SeesThrough(Actor[object, object]):
    """Async replies for floats, replies seen through for strings (which record the
    task that awaited them)."""

    def __init__(self) -> None:
        self.tasks: list[trio.lowlevel.Task] = []

    def receive(self, message: object) -> object:
        if isinstance(message, float):
            return self._sleep(message)
        return see_through(self._record())

    async def _sleep(self, seconds: float) -> float:
        await trio.sleep(seconds)
        return seconds

    async def _record(self) -> str:
        await trio.lowlevel.checkpoint()
        self.tasks.append(trio.lowlevel.current_task())
        return "seen through"


async def test_a_reply_seen_through_behind_an_async_one_runs_in_its_askers_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    askers: list[trio.lowlevel.Task] = []
    replies: list[object] = []

    async def ask(ref: object, message: object) -> None:
        askers.append(trio.lowlevel.current_task())
        replies.append(await ref.ask(message))  # type: ignore[attr-defined]

    async with open_supervisor() as sup:
        actor = SeesThrough()
        ref = sup.spawn(lambda: actor)
        async with trio.open_nursery() as nursery:
            for message in (1.0, 1.0, "a", 1.0, "b"):
                nursery.start_soon(ask, ref, message)
                await trio.testing.wait_all_tasks_blocked()
        assert replies == [1.0, 1.0, "seen through", 1.0, "seen through"]
        assert actor.tasks == [askers[2], askers[4]]
        assert not ref.busy


class Batcher(Actor[object, object]):
    """Takes everything queued behind its message and answers it as one batch."""

    def __init__(self) -> None:
        self.batches: list[list[object]] = []
        self.kinds: list[list[tuple[bool, bool]]] = []  # (a Queued, asked) of each taken
        self.answer = True

    async def receive(self, message: object) -> object:
        await trio.sleep(1)
        taken = self.ref.take_queued(100)  # type: ignore[attr-defined]
        self.batches.append([message, *(q.message for q in taken)])
        self.kinds.append([(isinstance(q, Queued), q.asked) for q in taken])
        await trio.sleep(1)  # the "group commit"
        for q in taken:
            if not self.answer:
                continue
            if q.message == "bad":
                q.fail(ValueError("bad in batch"))
            else:
                q.reply((q.message, len(self.batches)))
        return (message, len(self.batches))


async def _spawn_batcher(sup: object) -> object:
    ref = sup.spawn(Batcher)  # type: ignore[attr-defined]
    ref._actor.ref = ref
    return ref


async def test_take_queued_answers_a_batch(autojump_clock: trio.testing.MockClock) -> None:
    results: dict[object, object] = {}

    async def ask(ref: object, message: object) -> None:
        try:
            results[message] = await ref.ask(message)  # type: ignore[attr-defined]
        except ValueError as exc:
            results[message] = str(exc)

    async with open_supervisor() as sup:
        ref = await _spawn_batcher(sup)
        async with trio.open_nursery() as nursery:
            for message in ["first", "a", "bad", "b"]:
                nursery.start_soon(ask, ref, message)
                await trio.testing.wait_all_tasks_blocked()
        assert ref._actor.batches == [["first", "a", "bad", "b"]]  # type: ignore[attr-defined]
        # Queued asks (made as ask makes them, without Queued's __init__) are Queued.
        assert ref._actor.kinds == [[(True, True)] * 3]  # type: ignore[attr-defined]
        assert results == {
            "first": ("first", 1),
            "a": ("a", 1),
            "bad": "bad in batch",
            "b": ("b", 1),
        }
        assert trio.current_time() == pytest.approx(2.0)


async def test_taken_ask_is_answered_even_if_its_asker_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_supervisor() as sup:
        ref = await _spawn_batcher(sup)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ref.ask, "first")  # type: ignore[attr-defined]
            await trio.testing.wait_all_tasks_blocked()
            # taken at t=1, answered at t=2: the timeout at t=1.5 cannot withdraw it
            reply = await ref.ask("second", timeout=1.5)  # type: ignore[attr-defined]
        assert reply == ("second", 1)


async def test_unanswered_taken_messages_fail(autojump_clock: trio.testing.MockClock) -> None:
    async with open_supervisor() as sup:
        ref = await _spawn_batcher(sup)
        ref._actor.answer = False  # type: ignore[attr-defined]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ref.ask, "first")  # type: ignore[attr-defined]
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(ActorError, match="ended without answering"):
                await ref.ask("second")  # type: ignore[attr-defined]


async def test_told_messages_in_a_batch_report_failures(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_supervisor() as sup:
        ref = await _spawn_batcher(sup)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ref.ask, "first")  # type: ignore[attr-defined]
            await trio.testing.wait_all_tasks_blocked()
            ref.tell("bad")  # type: ignore[attr-defined]
            ref.tell("fine")  # type: ignore[attr-defined]
        assert ref.errors == 1  # type: ignore[attr-defined]
        assert ref._actor.kinds == [[(True, False)] * 2]  # type: ignore[attr-defined]


async def test_take_queued_outside_the_handler_is_refused() -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(Recorder, name="r")
        with pytest.raises(ActorError, match="outside its own handler"):
            ref.take_queued(1)


async def test_answering_twice_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    errors: list[Exception] = []

    class Twice(Actor[object, object]):
        async def receive(self, message: object) -> object:
            await trio.sleep(1)
            for q in ref.take_queued(10):
                q.reply(1)
                try:
                    q.reply(2)
                except ActorError as exc:
                    errors.append(exc)
            return 0

    async with open_supervisor() as sup:
        ref = sup.spawn(Twice)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ref.ask, "first")
            await trio.testing.wait_all_tasks_blocked()
            assert await ref.ask("second") == 1
    assert len(errors) == 1
    assert "already answered" in str(errors[0])


async def test_take_queued_stops_at_the_first_message_while_rejects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    batches: list[list[object]] = []

    class Picky(Actor[object, object]):
        async def receive(self, message: object) -> object:
            await trio.sleep(1)
            taken = ref.take_queued(10, while_=lambda m: isinstance(m, int))
            batches.append([message, *(q.message for q in taken)])
            for q in taken:
                q.reply(q.message)
            return message

    async with open_supervisor() as sup:
        ref = sup.spawn(Picky)
        async with trio.open_nursery() as nursery:
            for message in ["first", 1, 2, "stop", 3]:
                nursery.start_soon(ref.ask, message)
                await trio.testing.wait_all_tasks_blocked()
    assert batches == [["first", 1, 2], ["stop", 3]]


async def test_busy_and_accepting_follow_the_actor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(SlowRecorder)
        assert ref.accepting
        assert not ref.busy
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ref.ask, ("x", 1.0))
            await trio.testing.wait_all_tasks_blocked()
            assert ref.busy
        assert not ref.busy
        await ref.stop()
        assert not ref.accepting


# The runner (and Queued.reply) wakes an asker with one reusable outcome, the
# reply left in its Queued (_ref._ANSWERED_SIGNAL), not an outcome.Value per answer.


def test_the_answered_signal_unwraps_to_its_marker_every_time() -> None:
    import outcome

    from triact.actors._ref import _ANSWERED, _ANSWERED_SIGNAL

    assert isinstance(_ANSWERED_SIGNAL, outcome.Outcome)
    assert _ANSWERED_SIGNAL.unwrap() is _ANSWERED
    assert _ANSWERED_SIGNAL.unwrap() is _ANSWERED  # used again: never "already used"


async def test_the_answered_signal_is_never_sent_into_a_generator() -> None:
    from triact.actors._ref import _ANSWERED_SIGNAL

    def gen() -> Iterator[None]:
        yield

    async def agen() -> AsyncIterator[None]:
        yield

    with pytest.raises(TypeError, match="not sent into a generator"):
        _ANSWERED_SIGNAL.send(gen())
    with pytest.raises(TypeError, match="not sent into a generator"):
        await _ANSWERED_SIGNAL.asend(agen())


async def test_queued_asks_get_the_runners_replies_each_their_own() -> None:
    """Asks queued behind an async reply are answered by the runner: each gets its
    own reply (each read from its own Queued), in order."""

    class Echo(Actor[int, int]):
        async def receive(self, message: int) -> int:
            await trio.lowlevel.checkpoint()
            return message * 10

    got: dict[int, int] = {}
    async with open_supervisor() as sup:
        ref = sup.spawn(Echo)

        async def ask(i: int) -> None:
            got[i] = await ref.ask(i)

        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(ask, i)
    assert got == {i: i * 10 for i in range(6)}


async def test_accepting_follows_every_way_an_actor_stops_taking_messages(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``accepting`` is a slot read without a Python frame, cleared wherever the
    actor's state leaves open: stop_soon (stopping), its end, and stop_now."""
    async with open_supervisor() as sup:
        assert ActorRef.accepting.__doc__ is not None
        busy = sup.spawn(SlowRecorder)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(busy.ask, ("x", 1.0))
            await trio.testing.wait_all_tasks_blocked()
            assert busy.accepting
            busy.stop_soon()
            assert not busy.accepting
            assert not busy.stopped
        await busy.stop()
        assert not busy.accepting
        assert busy.stopped
        forced = sup.spawn(Recorder)
        assert forced.accepting
        forced.stop_now(lambda: ActorStoppedError("stopped"))
        assert not forced.accepting
        assert forced.stopped
