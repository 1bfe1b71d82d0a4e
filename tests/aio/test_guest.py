"""The guest run behind triact.aio: cancellation from asyncio follows Trio's rule,
errors keep their types, and leaving the block ends the Trio run (DESIGN I9)."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import attrs
import pytest
import trio

import triact
import triact.aio

from .conftest import RunAio

Update = Callable[[triact.SessionState], Any]


def bump(state: triact.SessionState) -> triact.SessionState:
    return attrs.evolve(state, data={**state.data, "n": state.data.get("n", 0) + 1})


def started_then_forever(started: asyncio.Future[None], seen: list[str] | None = None) -> Update:
    """An async update that tells asyncio it runs, then waits until cancelled.

    It is a Trio coroutine run in a step of the guest run, on the loop's thread, so
    it may resolve an asyncio future directly."""

    async def fn(state: triact.SessionState) -> triact.SessionState:
        started.set_result(None)
        try:
            await trio.sleep_forever()
        finally:
            if seen is not None:
                seen.append("trio side cancelled")
        raise AssertionError("unreachable")

    return fn


async def until_queued(session: triact.aio.Session) -> None:
    """Wait until a call waits in the session's mailbox (a look at the Trio side's
    internals: nothing signals it)."""
    while True:
        ref = session._session._entry.ref
        if ref is not None and ref.queued:
            return
        await asyncio.sleep(0)


# -- cancellation -----------------------------------------------------------------------


def test_cancelling_the_caller_cancels_a_running_async_update(aio_run: RunAio[None]) -> None:
    async def main() -> None:
        async with triact.aio.open_session_manager() as manager:
            session = await manager.create_session()
            started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            seen: list[str] = []
            call = asyncio.create_task(session.update(started_then_forever(started, seen)))
            await started
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert seen == ["trio side cancelled"]
            assert (await session.snapshot()).version == 1  # it did not happen

    aio_run(main)


def test_a_call_cancelled_while_queued_never_runs(aio_run: RunAio[None]) -> None:
    async def main() -> None:
        async with triact.aio.open_session_manager() as manager:
            session = await manager.create_session()
            started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            blocker = asyncio.create_task(session.update(started_then_forever(started)))
            await started
            ran: list[int] = []
            waiting = asyncio.create_task(session.update(lambda s: ran.append(1) or bump(s)))
            await until_queued(session)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            blocker.cancel()
            with pytest.raises(asyncio.CancelledError):
                await blocker
            assert ran == []
            assert (await session.snapshot()).version == 1
            assert (await session.update(bump)).version == 2  # and it still serves

    aio_run(main)


def test_a_call_that_completed_before_the_cancel_arrived_returns_its_result(
    aio_run: RunAio[None],
) -> None:
    async def main() -> None:
        async with triact.aio.open_session_manager() as manager:
            session = await manager.create_session()
            callers: list[asyncio.Task[None]] = []
            seen: list[object] = []

            def bump_and_cancel_my_caller(state: triact.SessionState) -> triact.SessionState:
                callers[0].cancel()  # the cancel arrives while the change commits
                return bump(state)

            async def caller() -> None:
                state = await session.update(bump_and_cancel_my_caller)
                seen.append(state.version)  # it happened, so it is reported
                await asyncio.sleep(0)  # ... and the cancellation is delivered here
                seen.append("not reached")

            callers.append(asyncio.create_task(caller()))
            with pytest.raises(asyncio.CancelledError):
                await callers[0]
            assert seen == [2]
            assert (await session.snapshot()).version == 2

    aio_run(main)


def test_a_late_timeout_withdrawn_on_leaving_its_block_is_not_delivered(
    aio_run: RunAio[None],
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with triact.aio.open_session_manager() as manager:
            session = await manager.create_session()
            async with asyncio.timeout(None) as timeout:

                def bump_and_expire(state: triact.SessionState) -> triact.SessionState:
                    timeout.reschedule(loop.time())  # fires while the change commits
                    return bump(state)

                state = await session.update(bump_and_expire)
            assert timeout.expired()
            await asyncio.sleep(0)  # no stray cancellation left behind
            current = asyncio.current_task()
            assert current is not None
            assert current.cancelling() == 0
            assert state.version == 2 == (await session.snapshot()).version

    aio_run(main)


def test_a_late_timeout_is_delivered_at_the_next_await_in_its_block(
    aio_run: RunAio[None],
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with triact.aio.open_session_manager() as manager:
            session = await manager.create_session()
            seen: list[int] = []
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(None) as timeout:

                    def bump_and_expire(state: triact.SessionState) -> triact.SessionState:
                        timeout.reschedule(loop.time())
                        return bump(state)

                    seen.append((await session.update(bump_and_expire)).version)
                    await asyncio.sleep(0)
                    seen.append(-1)  # not reached
            assert seen == [2]
            assert (await session.snapshot()).version == 2

    aio_run(main)


def test_timeouts_racing_calls_report_exactly_what_happened(aio_run: RunAio[None]) -> None:
    async def main() -> None:
        rng = random.Random(6)
        async with triact.aio.open_session_manager() as manager:
            session = await manager.create_session()
            done = 0
            for _ in range(300):
                try:
                    async with asyncio.timeout(rng.uniform(0, 0.0003)):
                        state = await session.update(bump)
                except TimeoutError:
                    pass
                else:
                    done += 1
                    assert state.data["n"] == done
                await asyncio.sleep(0)  # a late cancellation never leaks out of its block
            assert (await session.snapshot()).data.get("n", 0) == done

    aio_run(main)


def appending(tag: int, awaiting: bool) -> Update:
    def plain(state: triact.SessionState) -> triact.SessionState:
        return state.with_data(log=[*state.data.get("log", []), tag])

    async def async_fn(state: triact.SessionState) -> triact.SessionState:
        await trio.sleep(0.0002 * (tag % 3))
        return plain(state)

    return async_fn if awaiting else plain


@pytest.mark.parametrize("seed", range(3))
def test_tasks_cancelled_every_way_mid_update_report_exactly_what_was_committed(
    aio_run: RunAio[None], seed: int
) -> None:
    """Many tasks, plain and async updates over a few sessions, each call timed out,
    cancelled by task.cancel() or wait_for, or left alone: a session holds exactly
    the updates whose calls returned, once each, at one version per update."""

    async def main() -> None:
        rng = random.Random(seed)
        returned: dict[str, set[int]] = {}
        async with triact.aio.open_session_manager() as manager:
            sessions = [await manager.create_session() for _ in range(3)]

            async def worker(first: int) -> None:
                for tag in range(first, first + 25):
                    session = rng.choice(sessions)
                    call = session.update(appending(tag, awaiting=rng.random() < 0.5))
                    try:
                        match rng.randrange(4):
                            case 0:
                                async with asyncio.timeout(rng.uniform(0, 0.001)):
                                    await call
                            case 1:
                                task = asyncio.ensure_future(call)
                                for _ in range(rng.randrange(4)):
                                    await asyncio.sleep(0)
                                task.cancel()
                                await task
                            case 2:
                                await asyncio.wait_for(call, rng.uniform(0, 0.001))
                            case _:
                                await call
                    except (TimeoutError, asyncio.CancelledError):
                        continue
                    returned.setdefault(session.id, set()).add(tag)

            async with asyncio.TaskGroup() as group:
                for first in range(0, 200, 25):
                    group.create_task(worker(first))
            for session in sessions:
                state = await session.snapshot()
                log = list(state.data.get("log", []))
                assert sorted(log) == sorted(returned.get(session.id, ()))
                assert state.version == 1 + len(log)

    aio_run(main)


def test_cancelled_temporary_session_is_still_removed(aio_run: RunAio[None]) -> None:
    async def main() -> None:
        async with triact.aio.open_session_manager() as manager:
            entered = asyncio.Event()

            async def use() -> None:
                async with manager.session(topic="scratch"):
                    entered.set()
                    await asyncio.Event().wait()

            task = asyncio.create_task(use())
            await entered.wait()
            assert manager.session_count == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert manager.session_count == 0

    aio_run(main)


# -- errors ---------------------------------------------------------------------------


def test_errors_reach_asyncio_callers_with_their_types(aio_run: RunAio[None]) -> None:
    async def main() -> None:
        config = triact.SessionConfig(max_sessions=2)
        async with triact.aio.open_session_manager(config) as manager:
            session = await manager.create_session()
            with pytest.raises(triact.SessionNotFoundError, match="no session 'nope'"):
                await manager.get_session("nope")
            with pytest.raises(triact.SessionConcurrencyError) as stale:
                await session.update(bump, expected_version=7)
            assert (stale.value.expected, stale.value.actual) == (7, 1)
            problem = ValueError("bad input")

            def fail(state: triact.SessionState) -> triact.SessionState:
                raise problem

            with pytest.raises(ValueError, match="bad input") as raised:
                await session.update(fail)
            assert raised.value is problem
            bound = await manager.create_session(bind_client=True)
            with pytest.raises(triact.SessionSecurityError):
                await bound.validate_security("wrong")
            with pytest.raises(triact.SessionLimitError):
                await manager.create_session()
            assert (await session.snapshot()).version == 1

    aio_run(main)


class Escape(BaseException):
    """Neither an Exception nor one of Python's own BaseExceptions."""


def raising(problem: BaseException, *, awaiting: bool) -> Update:
    def plain(state: triact.SessionState) -> triact.SessionState:
        raise problem

    async def async_fn(state: triact.SessionState) -> triact.SessionState:
        await trio.lowlevel.checkpoint()
        raise problem

    return async_fn if awaiting else plain


@pytest.mark.parametrize("awaiting", [False, True], ids=["plain", "async"])
@pytest.mark.parametrize(
    "make",
    [KeyboardInterrupt, lambda: SystemExit(3), GeneratorExit, lambda: Escape("out")],
    ids=["KeyboardInterrupt", "SystemExit", "GeneratorExit", "BaseException"],
)
def test_a_base_exception_from_an_update_reaches_its_caller_and_nothing_else(
    aio_run: RunAio[None], make: Callable[[], BaseException], awaiting: bool
) -> None:
    """As from Trio: the caller gets it as it is, nothing is committed, and the
    session and the manager go on serving (it ended the guest run, wrapped in an
    exception group, and every call then said the manager had shut down)."""

    async def main() -> None:
        async with triact.aio.open_session_manager() as manager:
            session = await manager.create_session()
            problem = make()
            with pytest.raises(BaseException) as raised:  # noqa: PT011
                await session.update(raising(problem, awaiting=awaiting))
            assert raised.value is problem
            assert (await session.snapshot()).version == 1
            assert (await session.update(bump)).version == 2
            assert (await manager.create_session()).id != session.id
        assert not trio.lowlevel.in_trio_run()

    aio_run(main)


def test_a_cancelled_raised_by_an_update_itself_is_its_callers_error(
    aio_run: RunAio[None],
) -> None:
    """A trio.Cancelled that no cancellation caused (an update function made it) is
    the function's error, as from Trio: it does not end the guest run."""

    async def main() -> None:
        async with triact.aio.open_session_manager() as manager:
            session = await manager.create_session()
            made = trio.Cancelled._create(source="explicit")
            with pytest.raises(trio.Cancelled) as raised:
                await session.update(raising(made, awaiting=False))
            assert raised.value is made
            assert (await session.update(bump)).version == 2

    aio_run(main)


def test_a_keyboard_interrupt_an_update_raises_leaves_asyncio_run_as_it_is(
    aio_run: RunAio[None],
) -> None:
    async def main() -> None:
        async with triact.aio.open_session_manager() as manager:
            session = await manager.create_session()
            await session.update(raising(KeyboardInterrupt(), awaiting=False))

    with pytest.raises(KeyboardInterrupt):
        aio_run(main)
    assert not trio.lowlevel.in_trio_run()


def test_a_full_mailbox_is_a_busy_error(aio_run: RunAio[None]) -> None:
    async def main() -> None:
        async with triact.aio.open_session_manager(triact.SessionConfig(mailbox_size=1)) as m:
            session = await m.create_session()
            started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            blocker = asyncio.create_task(session.update(started_then_forever(started)))
            await started
            waiting = asyncio.create_task(session.update(bump))
            await until_queued(session)
            with pytest.raises(triact.SessionBusyError):
                await session.update(bump)
            blocker.cancel()
            assert (await waiting).version == 2

    aio_run(main)


def test_an_update_awaiting_asyncio_directly_fails_and_changes_nothing(
    aio_run: RunAio[None],
) -> None:
    async def main() -> None:
        async with triact.aio.open_session_manager() as manager:
            session = await manager.create_session()

            async def asyncio_code_in_trio(state: triact.SessionState) -> triact.SessionState:
                await asyncio.sleep(0.001)  # an asyncio awaitable in a Trio coroutine
                return bump(state)

            with pytest.raises(TypeError, match="asyncio"):
                await session.update(asyncio_code_in_trio)
            assert (await session.snapshot()).version == 1

    aio_run(main)


# -- lifecycle ------------------------------------------------------------------------


def test_leaving_the_block_ends_the_trio_run_and_refuses_later_calls(
    aio_run: RunAio[None],
) -> None:
    async def main() -> None:
        async with triact.aio.open_session_manager() as manager:
            assert trio.lowlevel.in_trio_run()  # the guest run shares this thread
            session = await manager.create_session()
        assert not trio.lowlevel.in_trio_run()
        assert asyncio.all_tasks() == {asyncio.current_task()}
        with pytest.raises(triact.SessionClosedError):
            await session.snapshot()
        with pytest.raises(triact.SessionClosedError):
            await manager.create_session()

    aio_run(main)


def test_calls_in_flight_at_exit_finish_within_the_grace_period(aio_run: RunAio[None]) -> None:
    async def main() -> None:
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        seen_closing = False

        async def slow_bump(state: triact.SessionState) -> triact.SessionState:
            nonlocal seen_closing
            started.set_result(None)
            while not manager.closing:  # still in flight when the app's exit begins
                await trio.lowlevel.checkpoint()
            seen_closing = True
            return bump(state)

        async with triact.aio.open_session_manager() as manager:
            assert not manager.closing
            session = await manager.create_session()
            call = asyncio.create_task(session.update(slow_bump))
            await started
        assert seen_closing
        assert (await call).version == 2

    aio_run(main)


def test_calls_still_running_after_the_grace_period_get_a_closed_error(
    aio_run: RunAio[None],
) -> None:
    async def main() -> None:
        config = triact.SessionConfig(shutdown_grace=0.01)
        async with triact.aio.open_session_manager(config) as manager:
            session = await manager.create_session()
            started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            call = asyncio.create_task(session.update(started_then_forever(started)))
            await started
        with pytest.raises(triact.SessionClosedError):
            await call

    aio_run(main)


def test_cancelling_the_host_task_shuts_triact_down(aio_run: RunAio[None]) -> None:
    async def main() -> None:
        opened = asyncio.Event()

        async def app() -> None:
            async with triact.aio.open_session_manager() as manager:
                await manager.create_session()
                opened.set()
                await asyncio.Event().wait()

        task = asyncio.create_task(app())
        await opened.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not trio.lowlevel.in_trio_run()

    aio_run(main)


def test_cancelled_while_opening_it_stops_the_run_first(aio_run: RunAio[None]) -> None:
    async def main() -> None:
        async def app() -> None:
            async with triact.aio.open_session_manager():
                raise AssertionError("not reached")

        task = asyncio.create_task(app())
        await asyncio.sleep(0)  # the task has started the guest run and waits for it
        assert trio.lowlevel.in_trio_run()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not trio.lowlevel.in_trio_run()

    aio_run(main)


def test_an_error_opening_the_manager_is_raised_unwrapped(
    aio_run: RunAio[None], tmp_path: Any
) -> None:
    store = triact.SqliteStore(str(tmp_path / "missing" / "sessions.db"))

    async def main() -> None:
        with pytest.raises(triact.SessionStoreError, match="cannot open session store"):
            async with triact.aio.open_session_manager(triact.SessionConfig(store=store)):
                raise AssertionError("not reached")

    aio_run(main)


def test_one_manager_per_thread(aio_run: RunAio[None]) -> None:
    async def main() -> None:
        async with triact.aio.open_session_manager():
            with pytest.raises(RuntimeError, match="one run per thread"):
                async with triact.aio.open_session_manager():
                    raise AssertionError("not reached")

    aio_run(main)


def test_a_handle_used_from_another_threads_loop_is_refused_and_changes_nothing(
    aio_run: RunAio[None],
) -> None:
    """It ran the update and told its caller it failed (a future of another loop)."""

    async def main() -> None:
        async with triact.aio.open_session_manager() as manager:
            session = await manager.create_session()
            loop = asyncio.get_running_loop()

            def elsewhere() -> int:
                with pytest.raises(RuntimeError, match="outside the asyncio event loop"):
                    asyncio.run(session.update(bump))
                # The way that works: hand the call to the manager's loop.
                return asyncio.run_coroutine_threadsafe(session.update(bump), loop).result().version

            assert await asyncio.to_thread(elsewhere) == 2
            assert (await session.snapshot()).data["n"] == 1

    aio_run(main)


def test_an_asyncio_handle_called_from_an_async_update_is_refused_and_not_made(
    aio_run: RunAio[None],
) -> None:
    """The call was started, then failed to await in Trio with a TypeError: its
    caller was told it failed, and it was committed all the same."""

    async def main() -> None:
        async with triact.aio.open_session_manager() as manager:
            first, other = await manager.create_session(), await manager.create_session()

            async def calls_the_other(state: triact.SessionState) -> triact.SessionState:
                await other.update(bump)  # an asyncio awaitable, in Trio code
                return bump(state)

            with pytest.raises(RuntimeError, match="called from Trio code"):
                await first.update(calls_the_other)
            # (A call made anyway was queued first: calls start in the order made.)
            assert (await other.snapshot()).version == 1
            assert (await first.snapshot()).version == 1

    aio_run(main)


# A host that keeps Python's SIGINT handler (no asyncio.run), where Trio handles Ctrl-C.
CTRL_C_HOST = """
import asyncio, os, signal, sys
import triact.aio

def interrupted(state):
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while an update runs
    return state.with_data(n=1)

async def main():
    async with triact.aio.open_session_manager() as manager:
        session = await manager.create_session()
        if sys.argv[1] == "update":
            await session.update(interrupted)
            return  # the manager shuts down with the Ctrl-C pending
        print("ready", flush=True)
        await asyncio.sleep(60)  # a server, serving until Ctrl-C

try:
    asyncio.new_event_loop().run_until_complete(main())
except KeyboardInterrupt:
    print("interrupted", flush=True)
except BaseException as exc:
    print("raised", type(exc).__name__, flush=True)
"""


def test_ctrl_c_in_a_host_with_pythons_handler_leaves_the_block_at_once() -> None:
    """The KeyboardInterrupt is raised from the async with when Ctrl-C comes, not
    once the block ends on its own (the manager had closed and the block went on,
    every call refused)."""
    with subprocess.Popen(
        [sys.executable, "-c", CTRL_C_HOST, "serve"], stdout=subprocess.PIPE, text=True
    ) as host:
        assert host.stdout is not None
        assert host.stdout.readline() == "ready\n"
        host.send_signal(signal.SIGINT)
        try:
            out, _ = host.communicate(timeout=20)
        finally:
            host.kill()
    assert (out, host.returncode) == ("interrupted\n", 0)


def test_ctrl_c_during_the_shutdown_is_a_keyboard_interrupt_not_a_group() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CTRL_C_HOST, "update"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (done.stdout, done.returncode) == ("interrupted\n", 0), done.stderr


def test_an_error_in_the_block_propagates_as_it_is(aio_run: RunAio[None]) -> None:
    async def main() -> None:
        with pytest.raises(KeyError, match="mine"):
            async with triact.aio.open_session_manager():
                raise KeyError("mine")
        assert not trio.lowlevel.in_trio_run()

    aio_run(main)
