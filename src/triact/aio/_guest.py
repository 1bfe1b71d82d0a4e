"""A Trio run hosted by the running asyncio loop (Trio's guest mode), and the calls
that asyncio tasks make into it.

The Trio run and the asyncio loop share one thread: every Trio step runs as a
callback of the loop, so the two sides never run at the same time and hand work to
each other through ``TrioToken.run_sync_soon`` (asyncio to Trio) and plain asyncio
futures (Trio to asyncio). Each call runs in a task of its own in the guest run.

Cancellation keeps Trio's rule on the asyncio side. A call that raises
:class:`asyncio.CancelledError` did not happen: the Trio side was cancelled before
it took effect. A call that returns (or raises anything else) happened exactly
once, even if its caller was cancelled meanwhile: the cancellation came too late
to stop it, so the result is reported and the cancellation is delivered at the
caller's next ``await`` instead, unless it was withdrawn by then (an
``asyncio.timeout`` block that the caller left at once).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, suppress
from typing import Any, Final, Generic, TypeVar

import outcome
import trio

from ..sessions import SessionClosedError

T = TypeVar("T")
R = TypeVar("R")

#: The asyncio loop that hosts the current guest run, if it is one (see run_asyncio).
HOST_LOOP: Final[trio.lowlevel.RunVar[asyncio.AbstractEventLoop | None]] = trio.lowlevel.RunVar(
    "triact.aio.host_loop", default=None
)


class _Withdrawn:
    """The result of a call that was cancelled at its caller's request: it did not
    happen."""


_WITHDRAWN: Final = _Withdrawn()


class _Call(Generic[T]):
    """One call from an asyncio task into the guest run."""

    __slots__ = ("args", "cancel_requested", "fn", "result", "scope", "waiter")

    def __init__(
        self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], waiter: asyncio.Future[None]
    ) -> None:
        self.fn = fn
        self.args = args
        self.waiter = waiter  # resolved when ``result`` is set
        self.result: outcome.Outcome[T] | _Withdrawn | None = None
        self.cancel_requested = False
        self.scope: trio.CancelScope | None = None  # while the call runs on the Trio side

    @property
    def cancelling(self) -> bool:
        """Whether the caller asked to cancel. ``waiter.cancelled()`` says so as soon
        as asyncio cancels the caller, before the caller's task runs again."""
        return self.cancel_requested or self.waiter.cancelled()


class GuestRun(Generic[T]):
    """One Trio run, a guest of the running asyncio loop, that holds one Trio async
    context manager open (a session manager) and serves calls from asyncio tasks."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop = trio.Event()
        self._calls: trio.Nursery | None = None
        self._submitted: deque[_Call[Any]] = deque()  # not yet started in the run
        self._pending: set[_Call[Any]] = set()  # not yet answered
        self._closing = False
        self._holder: asyncio.Task[Any] | None = None  # the task that entered
        self._entered: asyncio.Future[outcome.Outcome[T]] = loop.create_future()
        self._finished: asyncio.Future[outcome.Outcome[None]] = loop.create_future()

    @property
    def closing(self) -> bool:
        """True once the run was asked to stop (or has ended): calls are refused."""
        return self._closing

    # -- lifecycle (asyncio side) -------------------------------------------------

    async def enter(self, open_cm: Callable[[], AbstractAsyncContextManager[T]]) -> T:
        """Start the guest run, enter ``open_cm()`` in it and return what it yields.

        If entering fails, its exception is raised here once the run has ended. If
        the caller is cancelled meanwhile, the run is stopped and waited for first.
        """
        if trio.lowlevel.in_trio_run():
            raise RuntimeError(
                "a Trio run is already active in this thread (another triact.aio "
                "session manager, or trio.run): Trio allows one run per thread. "
                "Share one manager, or use triact.open_session_manager from Trio code"
            )
        trio.lowlevel.start_guest_run(
            self._main,
            open_cm,
            run_sync_soon_threadsafe=self._loop.call_soon_threadsafe,
            run_sync_soon_not_threadsafe=self._loop.call_soon,
            done_callback=self._done,
            # The host owns signals: asyncio (or uvicorn) may use set_wakeup_fd.
            host_uses_signal_set_wakeup_fd=True,
        )
        self._token = trio.lowlevel.current_trio_token()
        self._holder = asyncio.current_task()
        try:
            entered = await asyncio.shield(self._entered)
        except asyncio.CancelledError:
            self._request_stop()
            await self._wait_finished()
            raise
        if isinstance(entered, outcome.Error):
            await self._wait_finished()
        return entered.unwrap()

    async def close(self) -> None:
        """Exit the context manager and wait until the guest run has ended (it leaves
        no task behind). Raises what the run raised on the way out, if anything.

        Cancelling this does not interrupt it: it still waits for the run to end,
        then raises :class:`asyncio.CancelledError`.
        """
        self._request_stop()
        interrupted = await self._wait_finished()
        if interrupted is not None:
            raise interrupted
        # An error on the way in was raised by enter(); one on the way out is raised here.
        if isinstance(self._entered.result(), outcome.Value):
            self._finished.result().unwrap()

    def _request_stop(self) -> None:
        if self._closing:
            return
        self._closing = True
        self.run_sync_soon(self._stop.set)

    async def _wait_finished(self) -> asyncio.CancelledError | None:
        """Wait for the run to end, absorbing cancellation; return the first one."""
        interrupted = None
        while not self._finished.done():
            try:
                await asyncio.shield(self._finished)
            except asyncio.CancelledError as exc:
                interrupted = interrupted or exc
        return interrupted

    # -- lifecycle (Trio side) ----------------------------------------------------

    async def _main(self, open_cm: Callable[[], AbstractAsyncContextManager[T]]) -> None:
        HOST_LOOP.set(self._loop)
        try:
            async with trio.open_nursery() as calls:
                self._calls = calls
                # Captured, so that an error from the manager is raised as it is, not
                # wrapped in the nursery's exception group.
                held = await outcome.acapture(self._hold, open_cm)
            held.unwrap()
        except BaseExceptionGroup as group:
            # Where Trio handles Ctrl-C, it raises KeyboardInterrupt in this task
            # wherever it waits, a nursery's exit included (this one's, or the
            # manager's as it shuts down), which wraps it in a group.
            interrupts, others = group.split(KeyboardInterrupt)
            if interrupts is None or others is not None:
                raise
            raise _first_leaf(interrupts) from None

    async def _hold(self, open_cm: Callable[[], AbstractAsyncContextManager[T]]) -> None:
        async with open_cm() as value:
            self._entered.set_result(outcome.Value(value))
            await self._stop.wait()
        # The manager is closed: calls still arriving are refused by it, and the
        # call tasks left finish promptly, so the calls nursery closes after them.

    def _done(self, result: outcome.Outcome[None]) -> None:
        """The guest run has ended (called on the loop, by Trio)."""
        if not self._closing and self._entered.done() and self._holder is not None:
            # It ended on its own (a Ctrl-C that Trio handled): the task in the block
            # is cancelled, so that the block exits and raises why (see close).
            self._holder.cancel()
        self._closing = True
        self._submitted.clear()
        for call in list(self._pending):
            self._settle(call, outcome.Error(_closed("the Trio run hosting it ended")))
        if not self._entered.done():
            if isinstance(result, outcome.Error):
                self._entered.set_result(outcome.Error(result.error))
            else:
                self._entered.set_result(outcome.Error(_closed("it ended before it opened")))
        self._finished.set_result(result)

    # -- calls --------------------------------------------------------------------

    async def call(self, fn: Callable[..., Awaitable[R]], *args: Any, shield: bool = False) -> R:
        """``await fn(*args)`` in a new task of the guest run; return its result or
        raise its exception.

        If the calling asyncio task is cancelled, the Trio task is cancelled too
        (unless ``shield``) and waited for: :class:`asyncio.CancelledError` is
        raised only if the call did not happen (see the module docstring).
        """
        if trio.lowlevel.in_trio_task():
            # The call would be started, then awaiting its asyncio future fail in
            # Trio: it would take effect while its caller was told it failed.
            raise RuntimeError(
                "a triact.aio handle was called from Trio code (an async update "
                "function, say), where its asyncio awaitables cannot be awaited; the "
                "call was not made. Work on the state you are given, or make the call "
                "from asyncio before or after the update"
            )
        if _running_loop() is not self._loop:
            # Its futures and its queue of calls are the loop's: used from another
            # thread, the call would run and its caller be told it failed.
            raise RuntimeError(
                "a triact.aio handle was used outside the asyncio event loop that opened "
                "its session manager (another thread, or another loop); call it from that "
                "loop, e.g. with asyncio.run_coroutine_threadsafe(coro, loop)"
            )
        if self._closing:
            raise _closed("call refused")
        assert self._token is not None
        call: _Call[R] = _Call(fn, args, self._loop.create_future())
        if not self._submitted:  # else the callback that starts them is on its way
            try:
                self._token.run_sync_soon(self._start_calls)
            except trio.RunFinishedError:
                raise _closed("call refused") from None
        self._submitted.append(call)
        self._pending.add(call)
        task = asyncio.current_task()
        base = task.cancelling() if task is not None else 0
        interrupted: asyncio.CancelledError | None = None
        while call.result is None:
            try:
                await call.waiter
            except asyncio.CancelledError as exc:
                if interrupted is None:
                    interrupted = exc
                    if not shield:
                        self._cancel(call)
                if call.result is None:
                    call.waiter = self._loop.create_future()
        result = call.result
        if isinstance(result, _Withdrawn):
            assert interrupted is not None
            raise interrupted
        if interrupted is not None and task is not None:
            self._loop.call_soon(_redeliver, task, base)
        return result.unwrap()

    def run_sync_soon(self, fn: Callable[[], object]) -> None:
        """Run ``fn()`` in the guest run soon, if it is still running."""
        assert self._token is not None
        with suppress(trio.RunFinishedError):  # it has ended already
            self._token.run_sync_soon(fn)

    def _cancel(self, call: _Call[Any]) -> None:
        call.cancel_requested = True
        self.run_sync_soon(lambda: _cancel_scope(call))

    def _settle(self, call: _Call[R], result: outcome.Outcome[R] | _Withdrawn) -> None:
        # On the loop's thread: in a Trio step, or in _done.
        self._pending.discard(call)
        if call.result is None:
            call.result = result
            if not call.waiter.done():
                call.waiter.set_result(None)

    def _start_calls(self) -> None:
        assert self._calls is not None
        submitted = self._submitted
        while submitted:
            call = submitted.popleft()
            try:
                self._calls.start_soon(self._run_call, call)
            except RuntimeError:  # the calls nursery has closed: the run is ending
                self._settle(call, outcome.Error(_closed("call refused")))

    async def _run_call(self, call: _Call[Any]) -> None:
        result: outcome.Outcome[Any] | _Withdrawn | None = None
        try:
            with trio.CancelScope() as scope:
                call.scope = scope
                if call.cancelling:
                    scope.cancel()
                try:
                    result = outcome.Value(await call.fn(*call.args))
                except trio.Cancelled as exc:
                    if trio.current_effective_deadline() == -math.inf:
                        raise  # this call, or the run, was cancelled: it did not happen
                    result = outcome.Error(exc)  # raised by the call's own code, not a cancel
                except BaseException as exc:
                    # The caller's, as from Trio (a KeyboardInterrupt or SystemExit an
                    # update raised included): the run and the other calls go on.
                    result = outcome.Error(exc)
        finally:
            call.scope = None
            if result is None:  # cancelled, so it did not happen (Trio's rule)
                if call.cancelling:
                    result = _WITHDRAWN
                else:
                    result = outcome.Error(_closed("the call was cancelled by the shutdown"))
            self._settle(call, result)
        if not self._pending:
            # One more step before the run goes idle: a caller that calls again as
            # soon as it has its answer (the common case) then finds the run awake
            # instead of paying the wake-up of the thread an idle guest waits in.
            await trio.lowlevel.checkpoint()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # none: not called from a coroutine of a running loop
        return None


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _cancel_scope(call: _Call[Any]) -> None:
    if call.scope is not None:
        call.scope.cancel()


def _redeliver(task: asyncio.Task[Any], base: int) -> None:
    """Deliver a cancellation that came too late to stop a call, at the task's next
    ``await``, unless it was withdrawn (``uncancel``) or is already on its way."""
    if task.done() or task.cancelling() <= base:
        return
    waiter = getattr(task, "_fut_waiter", None)
    if getattr(task, "_must_cancel", False) or (waiter is not None and waiter.cancelled()):
        return  # another cancellation is on its way (anyio, say, re-delivers its own)
    task.uncancel()  # cancel() counts again what was already counted
    task.cancel()


def _closed(what: str) -> SessionClosedError:
    return SessionClosedError(
        f"the triact.aio session manager is closed or closing: {what}; "
        "open a new one with triact.aio.open_session_manager"
    )
