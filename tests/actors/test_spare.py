"""The spare runner: a runner whose mailbox ran dry stays, parked, as its idle
actor's spare; the next async reply of an ask to the idle actor, or the next told
message, is handed to it (see ActorRef._run, docs/actors.md)."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
import trio.testing

import triact.actors._supervisor
from triact.actors import Actor, ActorRef, ActorStoppedError, open_supervisor


class Tasks(Actor[str, object]):
    """Replies with the task that ran its handler; ``"wait"`` waits for ``gate``,
    ``"forever"`` sleeps until cancelled (and records that it was)."""

    def __init__(self) -> None:
        self.gate = trio.Event()
        self.cancelled = 0
        self.finished = 0
        self.told: list[trio.lowlevel.Task] = []
        self.stopped = False

    async def receive(self, message: str) -> object:
        task = trio.lowlevel.current_task()
        if message == "told":
            self.told.append(task)
            return None
        try:
            if message == "wait":
                await self.gate.wait()
            elif message == "forever":
                await trio.sleep_forever()
            else:
                await trio.lowlevel.checkpoint()
        except trio.Cancelled:
            self.cancelled += 1
            raise
        self.finished += 1
        return task

    def on_stop(self) -> None:
        self.stopped = True


async def _queue_behind_a_wait(ref: ActorRef[str, object], messages: list[str]) -> list[object]:
    """Ask ``ref`` ``"wait"`` (it runs in its own task and holds the actor), queue
    ``messages`` behind it (a runner will serve them), let it go, and return the
    replies, in order, once everything is blocked again."""
    actor = ref._actor
    assert isinstance(actor, Tasks)
    replies: list[object] = []

    async def ask(message: str) -> None:
        replies.append(await ref.ask(message))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask, "wait")
        await trio.testing.wait_all_tasks_blocked()
        for message in messages:
            nursery.start_soon(ask, message)
            await trio.testing.wait_all_tasks_blocked()
        actor.gate.set()
    await trio.testing.wait_all_tasks_blocked()
    return replies


async def _runner_then_idle(ref: ActorRef[str, object], asks: int = 2) -> trio.lowlevel.Task:
    """Have a runner serve ``ref`` (``asks`` asks queued behind an async reply), let
    its mailbox run dry, and return the runner task, now the idle actor's spare (if
    it handled more than one ask)."""
    replies = await _queue_behind_a_wait(ref, ["x"] * asks)
    runner = replies[1]
    assert isinstance(runner, trio.lowlevel.Task)
    assert replies[1:] == [runner] * asks
    if asks > 1:
        assert ref._spare is runner
    assert not ref.busy  # idle: the spare holds no baton
    return runner


async def test_an_async_reply_to_the_idle_actor_runs_in_its_spare_runner() -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(Tasks)
        spare = await _runner_then_idle(ref)
        # The actor is idle: this ask takes it at once, and hands its async reply to
        # the spare, which runs it (no new task, no scope of the asker's own).
        assert await ref.ask("x") is spare
        assert await ref.ask("x") is spare  # parked again, and used again
        assert ref._spare is spare


async def test_a_runner_that_handled_one_ask_does_not_stay() -> None:
    """A runner parks only once it has handled more than one ask: one started for a
    single message (a tell to an actor rarely told) would likely be dismissed before
    any use, and pay a wake-up for nothing."""
    async with open_supervisor() as sup:
        ref = sup.spawn(Tasks)
        runner = await _runner_then_idle(ref, asks=1)
        assert ref._spare is None
        assert runner.coro.cr_frame is None  # it ended
        assert await ref.ask("x") is trio.lowlevel.current_task()  # in its asker, as before


async def test_a_told_message_to_the_idle_actor_goes_to_its_spare_runner() -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(Tasks)
        spare = await _runner_then_idle(ref)
        ref.tell("told")
        await trio.testing.wait_all_tasks_blocked()
        actor = ref._actor
        assert isinstance(actor, Tasks)
        assert actor.told == [spare]
        assert ref._spare is spare


async def test_a_plain_reply_to_the_idle_actor_still_runs_in_its_asker() -> None:
    class Plain(Tasks):
        def receive(self, message: str) -> object:  # type: ignore[override]
            if message == "plain":
                return trio.lowlevel.current_task()
            return super().receive(message)

    async with open_supervisor() as sup:
        ref = sup.spawn(Plain)
        spare = await _runner_then_idle(ref)
        assert await ref.ask("plain") is trio.lowlevel.current_task()
        assert ref._spare is spare  # not woken for it


async def test_forced_shutdown_cancels_an_async_reply_run_by_the_spare(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outcomes: list[BaseException] = []
    async with trio.open_nursery() as nursery, open_supervisor(shutdown_grace=1.0) as sup:
        ref = sup.spawn(Tasks)
        await _runner_then_idle(ref)
        actor = ref._actor
        assert isinstance(actor, Tasks)

        async def ask() -> None:
            try:
                await ref.ask("forever")
            except ActorStoppedError as exc:
                outcomes.append(exc)

        nursery.start_soon(ask)  # (outside the supervisor, which cancels its own)
        await trio.testing.wait_all_tasks_blocked()
        assert ref._spare is None  # it was handed the reply
        assert ref.busy
    # The grace period expired with the handler asleep: cancelled, its asker told.
    assert actor.cancelled == 1
    assert actor.finished == 3  # (_runner_then_idle's three asks)
    assert len(outcomes) == 1
    assert "grace period expired" in str(outcomes[0])


async def test_an_asker_cancelled_cancels_its_reply_in_the_spare_which_serves_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(Tasks)
        spare = await _runner_then_idle(ref)
        actor = ref._actor
        assert isinstance(actor, Tasks)
        with trio.move_on_after(1.0) as scope:
            await ref.ask("forever")
        assert scope.cancelled_caught
        assert actor.cancelled == 1
        # The spare answered it and parks again (in a fresh scope); it serves on.
        await trio.testing.wait_all_tasks_blocked()
        assert ref._spare is spare
        assert await ref.ask("x") is spare


async def test_an_asker_cancelled_before_the_spare_ran_its_reply_gets_cancelled() -> None:
    scope = trio.CancelScope()

    class CancelsItsAsker(Tasks):
        def receive(self, message: str) -> object:  # type: ignore[override]
            if message == "cancel me":
                # Cancelled after the handler began (in the asker's task) and before
                # the spare runs the rest: the reply is cancelled at its first
                # checkpoint, and the asker's ask raises Cancelled.
                scope.cancel()
                return super().receive("x")
            return super().receive(message)

    async with open_supervisor() as sup:
        ref = sup.spawn(CancelsItsAsker)
        spare = await _runner_then_idle(ref)
        actor = ref._actor
        assert isinstance(actor, Tasks)
        with scope:
            await ref.ask("cancel me")
        assert scope.cancelled_caught
        assert actor.cancelled == 1
        assert actor.finished == 3  # only _runner_then_idle's three
        await trio.testing.wait_all_tasks_blocked()
        assert await ref.ask("x") is spare  # the actor serves on


async def test_stopping_an_idle_actor_dismisses_its_spare() -> None:
    async with open_supervisor() as sup:
        ref = sup.spawn(Tasks)
        spare = await _runner_then_idle(ref)
        await ref.stop()
        assert ref._spare is None
        await trio.testing.wait_all_tasks_blocked()
        assert spare.coro.cr_frame is None  # it ended
        actor = ref._actor
        assert isinstance(actor, Tasks)
        assert actor.stopped


async def test_the_supervisor_keeps_only_so_many_spares(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(triact.actors._supervisor, "_SPARES_KEPT", 1)
    async with open_supervisor() as sup:
        first = sup.spawn(Tasks)
        first_spare = await _runner_then_idle(first)
        second = sup.spawn(Tasks)
        await _runner_then_idle(second)
        # The first actor's spare was dismissed when the second's parked.
        assert first._spare is None
        await trio.testing.wait_all_tasks_blocked()
        assert first_spare.coro.cr_frame is None
        # The first actor serves as before: its next async reply runs in its asker.
        assert await first.ask("x") is trio.lowlevel.current_task()


async def test_a_parked_spare_keeps_nothing_of_its_last_ask_alive() -> None:
    """A spare is parked for an unknown while: it holds neither its last reply nor
    its last asker's context (which may hold anything the asker set)."""
    import weakref

    class Reply:
        pass

    class Replies(Tasks):
        async def receive(self, message: str) -> object:
            await trio.lowlevel.checkpoint()
            if message == "reply":
                return Reply()
            return await super().receive(message)

    async with open_supervisor() as sup:
        ref = sup.spawn(Replies)
        # The runner's last ask replies a Reply.
        replies = await _queue_behind_a_wait(ref, ["x", "reply"])
        assert ref._spare is not None
        last = weakref.ref(replies[-1])
        assert isinstance(last(), Reply)
        replies.clear()
        assert last() is None  # the parked spare does not hold it
