"""ActorRef: an actor's mailbox and the rules for who handles its next message.

An idle actor owns no task (but for a parked spare runner, below). Whoever needs a
message handled runs the handler:

* ``ask`` runs its own message in the asking task. If the actor is idle it does so
  at once (no task switch at all); otherwise it queues and sleeps until the task
  that finishes the message in front of it hands it the actor (the *baton*).
* ``tell``/``send`` messages have no waiting task, and an async reply pays for a
  cancel scope of its own when it runs in its asker's task. So when a told message
  reaches the front of the mailbox, or a handler whose reply was async leaves asks
  queued behind it, a *runner* task is started in the supervisor's
  nursery: it handles what is queued, in order, inside one cancel scope, and
  answers each asker (see :meth:`ActorRef._run`). Once the mailbox is empty it
  parks as the idle actor's *spare*, and the next such work, or the async reply of
  an ask to the idle actor, is handed to it rather than starting a task (or, for
  that reply, entering a scope in its asker's task).

Exactly one task holds the baton at a time (``_holder``), which is what makes
handlers serial (I1, docs/architecture.md) without a lock (I10).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import Context, copy_context
from operator import attrgetter
from time import perf_counter
from types import CoroutineType, coroutine
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import outcome
import trio
from trio.lowlevel import (
    Abort,
    RaiseCancelT,
    Task,
    cancel_shielded_checkpoint,
    checkpoint_if_cancelled,
    current_task,
    reschedule,
    wait_task_rescheduled,
)

from ._actor import Actor, SeeThrough
from ._errors import (
    ActorError,
    ActorFailedError,
    ActorStoppedError,
    MailboxFullError,
    ReentrantCallError,
)

if TYPE_CHECKING:
    from ._supervisor import Crew

M = TypeVar("M")
R = TypeVar("R")

logger = logging.getLogger("triact.actors")

_OPEN = 0  # takes messages
_STOPPING = 1  # intake closed; queued messages are still handled
_STOPPED = 2  # gone

# Marks the baton as taken by a runner task that has been started but not yet run.
_RUNNER: Any = object()
# Marks the baton as taken by the current task, which runs a plain handler in ask:
# such a handler does not yield, so no other task runs until it returns (and ask
# needs no current_task() for it; a reply to await takes the task itself).
_PLAIN: Any = object()
# What a queued asker is woken with when it is its turn to run its own message.
_YOUR_TURN: Any = object()
# No reply yet (see ActorRef._handle).
_UNSET: Any = object()


class _Signal(outcome.Outcome[Any]):
    """An outcome that a queued asker is woken with to be told where its answer is,
    one instance used again and again: ``outcome.Value(reply)``, a frozen attrs
    instance made for each answer (its slots set through ``object.__setattr__``) and
    unwrapped once (which sets a slot so again), costs about a twentieth of an
    awaiting session update (callgrind). The runner leaves a plain reply in the
    asker's :class:`Queued` and wakes it with ``_ANSWERED_SIGNAL``, whose unwrapped
    value (a private marker) ``ask`` tells by identity. Trio only unwraps what a
    task is rescheduled with; sending one into a generator raises."""

    __slots__ = ("_what",)

    def __init__(self, what: object) -> None:
        self._what = what

    def unwrap(self) -> Any:
        return self._what

    def send(self, gen: Any) -> Any:
        raise TypeError("an actor's wake-up signal is not sent into a generator")

    async def asend(self, agen: Any) -> Any:
        raise TypeError("an actor's wake-up signal is not sent into a generator")


#: What a queued asker's wait returns: its answer is in its Queued (``result``).
_ANSWERED: Any = object()
_ANSWERED_SIGNAL = _Signal(_ANSWERED)
#: What a queued asker is woken with when it is its turn to run its own message.
_YOUR_TURN_SIGNAL = _Signal(_YOUR_TURN)
# What a spare runner is woken with: work was handed to it (it holds the baton), or
# it is dismissed (see ActorRef._park).
_WORK: Any = object()
_WORK_SIGNAL = _Signal(_WORK)
_DISMISSED_SIGNAL = _Signal(None)


def _no_abort(raise_cancel: RaiseCancelT) -> Abort:
    """A spare runner's wait is not cancelled: it is woken with work or dismissed
    (its scope is cancelled only by a forced shutdown, which dismisses it)."""
    return Abort.FAILED


class _SeeItThrough:
    """What a queued asker is woken with when the runner handed it the baton and its
    message's reply, to be seen through in the asker's own task."""

    __slots__ = ("reply",)

    def __init__(self, reply: SeeThrough[Any]) -> None:
        self.reply = reply


#: What a runner's driver (:func:`_drive`) yields once the coroutine it was given has
#: returned (its value is then in the driver's list).
_DRIVEN: Any = object()
#: ``Context.run`` unbound: ``_run_in(context, f, x)`` makes no bound method object,
#: where ``context.run`` kept in a local makes one for every async reply.
_run_in = Context.run


@coroutine
def _drive(returned: list[Any]) -> Any:
    """A runner's driver of the async replies it runs: sent a coroutine, run it, step
    by step (each step a ``send`` or ``throw`` of the driver, which yields what the
    coroutine yields to Trio); once it returns, put its value in ``returned`` and
    yield ``_DRIVEN``, ready for the next one. It ends only by the exception of a
    coroutine that raised, which the ``send`` or ``throw`` that ran it raises.

    Why a driver: the coroutine's end is taken by ``yield from``, which gets its
    value without an exception, where a coroutine driven by its own ``send`` ends in
    a ``StopIteration`` (made, given a traceback and a frame object, raised through
    ``Context.run`` and caught): about 2,000 instructions per async reply
    (callgrind), against a few hundred for the steps through this frame. The runner
    runs each step of it in its asker's context (see :meth:`ActorRef._runner`); one
    driver serves a runner's replies in turn.
    """
    while True:
        pending = yield _DRIVEN
        returned[0] = yield from pending
        del pending  # (not held while the driver waits for the next)


class Queued(Generic[M, R]):
    """A message in an actor's mailbox.

    A handler that calls :meth:`ActorRef.take_queued` gets these and must answer each
    one exactly once, with :meth:`reply` or :meth:`fail`, before it returns (any left
    unanswered then fail with :class:`ActorError`).
    """

    __slots__ = (
        "_ref",
        "context",
        "message",
        "raise_cancel",
        "result",
        "running",
        "taken",
        "task",
    )

    #: The plain reply a runner (or :meth:`reply`) leaves here for the asker, whom it
    #: wakes with ``_ANSWERED_SIGNAL``; set only then.
    result: Any

    def __init__(self, ref: ActorRef[M, R], message: M, task: Task | None) -> None:
        # (ActorRef.ask sets these fields itself for a queued ask: keep both alike.)
        self._ref = ref
        #: True from :meth:`ActorRef.take_queued` until it is answered.
        self.taken = False
        self.message = message
        self.task = task  # the asker, sleeping until its turn; None for tell/send
        self.running = False  # True while the runner task handles this ask
        #: The context the runner runs an ask's handler in, if not its asker task's.
        self.context: Context | None = None
        #: Set when the asker was cancelled while the runner handled its message.
        self.raise_cancel: RaiseCancelT | None = None

    @property
    def asked(self) -> bool:
        """True if a caller waits for the reply (``ask``), False for ``tell``/``send``."""
        return self.task is not None

    def reply(self, value: R) -> None:
        """Answer the asker with ``value`` (nothing to do for a told message)."""
        if self.taken:
            self.result = value
        self._answer(_ANSWERED_SIGNAL)

    def fail(self, error: Exception) -> None:
        """Raise ``error`` to the asker; for a told message, report it to ``on_error``."""
        self._answer(outcome.Error(error))

    def __call__(self, raise_cancel: RaiseCancelT) -> Abort:
        """Abort the asker's wait (Trio calls this when the asker is cancelled)."""
        if self.taken:
            if self.running:  # its handler runs in the runner task: cancel it there
                self.raise_cancel = raise_cancel
                self._ref.cancel_runner()
            return Abort.FAILED  # a handler is working on it and will answer
        # Still queued (a task handed the baton was rescheduled, so is never
        # aborted): take the message back out, so it is never handled.
        self._ref.withdraw(self)
        return Abort.SUCCEEDED

    def _answer(self, result: outcome.Outcome[Any]) -> None:
        if not self.taken:
            raise ActorError("this message was already answered, or never taken")
        self.taken = False
        if self.task is not None:
            reschedule(self.task, result)
        elif isinstance(result, outcome.Error):
            self._ref.told_failed(self.message, cast(Exception, result.error))


class _Asked(Queued[M, R]):
    """A :class:`Queued` made by ``ask`` (and ``_hand_to_spare``) as ``_Asked()``,
    with ``object``'s ``__init__``, its fields then set where it is made: a type call
    with no frame of Python, where ``object.__new__(Queued)`` checks its argument
    against the type (about 400 instructions more per queued ask, callgrind)."""

    __slots__ = ()
    __init__ = object.__init__


async def _slice_up(crew: Crew, now: float) -> None:
    """The supervisor's askers have gone ``crew.slice`` seconds without a schedule
    point (read at ``now``): yield, unless the asking task has been back to the
    scheduler since the slice began (it waited, or it is another task): then its
    slice starts now. So the first ask after a wait costs no switch, and a task
    asks for at most about two slices between schedule points. A slice of 0: every
    ask yields."""
    task = current_task()
    # Trio counts each task's schedule points (what trio.testing.assert_checkpoints
    # reads); without that count, every slice that is up yields, as it used to.
    points = getattr(task, "_schedule_points", None)
    if crew.slice and (task is not crew.slicing or points != crew.slicing_points):
        crew.yielded_at = now
        crew.slicing = task
        crew.slicing_points = points
        return
    await cancel_shielded_checkpoint()
    # The slice starts again once the task is back (other tasks may have run meanwhile).
    crew.yielded_at = perf_counter()
    crew.slicing = task
    crew.slicing_points = getattr(task, "_schedule_points", None)


class ActorRef(Generic[M, R]):
    """The handle to a running actor: the only way to reach it.

    Every message goes through the actor's bounded mailbox and is handled once, in
    the order it was accepted, one at a time.
    """

    __slots__ = (
        "_accepting",
        "_actor",
        "_armed",
        "_crew",
        "_factory",
        "_failure",
        "_fatal",
        "_handoff",
        "_holder",
        "_idle_deadline",
        "_idle_timeout",
        "_mailbox",
        "_mailbox_size",
        "_restarts",
        "_room",
        "_scope",
        "_spare",
        "_started",
        "_state",
        "_stopped",
        "_taken",
        "errors",
        "name",
    )

    def __init__(
        self,
        crew: Crew,
        name: str,
        factory: Callable[[], Actor[M, R]],
        mailbox_size: int,
        idle_timeout: float | None,
    ) -> None:
        self.name = name
        #: How many told messages raised in their handler.
        self.errors = 0
        self._crew = crew
        self._factory = factory
        self._actor: Actor[M, R] = factory()
        self._adopt(self._actor)
        self._started = False
        self._state = _OPEN
        self._accepting = True
        self._holder: Task | None = None
        self._mailbox: deque[Queued[M, R]] | None = None  # allocated on first queueing
        self._taken: list[Queued[M, R]] | None = None  # see take_queued
        self._mailbox_size = mailbox_size
        self._room: trio.lowlevel.ParkingLot | None = None  # senders waiting for room
        self._scope: trio.CancelScope | None = None  # what a forced shutdown cancels
        self._spare: Task | None = None  # the idle actor's parked runner (see _run)
        self._handoff: Queued[M, R] | None = None  # an async reply handed to it
        self._stopped: trio.Event | None = None
        self._idle_timeout = idle_timeout
        self._idle_deadline = 0.0
        self._armed = False
        self._restarts: deque[float] | None = None
        self._failure: BaseException | None = None
        if idle_timeout is not None:
            self._went_idle(idle_timeout)

    def __repr__(self) -> str:
        state = ("open", "stopping", "stopped")[self._state]
        return f"<ActorRef {self.name!r} {state}, {self.queued} queued>"

    @property
    def queued(self) -> int:
        """Messages accepted but not yet being handled."""
        return len(self._mailbox) if self._mailbox else 0

    #: True while the actor takes new messages (not stopping or stopped). Read through
    #: ``operator.attrgetter``, a getter with no Python frame (``Session.update``
    #: reads it at every update); ``_accepting`` is cleared wherever ``_state``
    #: leaves ``_OPEN``, which it never goes back to.
    accepting: bool = property(  # type: ignore[assignment]
        attrgetter("_accepting"),
        doc="True while the actor takes new messages (not stopping or stopped).",
    )

    @property
    def busy(self) -> bool:
        """True while a message is being handled or waits in the mailbox."""
        return self._holder is not None or bool(self._mailbox)

    @property
    def stopped(self) -> bool:
        """True once the actor has stopped for good (normally or by failure)."""
        return self._state == _STOPPED

    @property
    def failure(self) -> BaseException | None:
        """The crash that made the actor give up, if it failed."""
        return self._failure

    # -- sending -------------------------------------------------------------------

    def tell(self, message: M) -> None:
        """Queue ``message`` and return at once; nobody waits for the reply.

        Raises :class:`MailboxFullError` if the mailbox is full and
        :class:`ActorStoppedError` if the actor takes no more messages. If the
        handler raises, the actor's :meth:`Actor.on_error` hook gets the exception
        and :attr:`errors` counts it.
        """
        self._check_open()
        self._enqueue(Queued(self, message, None))
        if self._holder is None:
            self._start_runner()

    async def send(self, message: M) -> None:
        """Like :meth:`tell`, but wait for room when the mailbox is full.

        If cancelled, the message was not queued.
        """
        task = current_task()
        await checkpoint_if_cancelled()
        while True:
            self._check_open()
            if self.queued < self._mailbox_size:
                self.tell(message)
                await cancel_shielded_checkpoint()
                return
            if self._holder is task:
                raise ReentrantCallError(
                    f"actor {self.name!r} sent to its own full mailbox from its handler"
                )
            if self._room is None:
                self._room = trio.lowlevel.ParkingLot()
            await self._room.park()

    async def ask(self, message: M, *, timeout: float | None = None) -> R:
        """Have ``message`` handled and return the handler's reply.

        The handler's exception, if it raises, is raised here. Cancellation follows
        Trio's rule: if this raises :class:`trio.Cancelled` (or
        :class:`trio.TooSlowError` after ``timeout`` seconds) before the handler
        started, the message was taken back out of the mailbox and never handled;
        an async handler that had started is cancelled with the asker. If it
        returns, the message was handled exactly once.

        Raises :class:`MailboxFullError` at once if the mailbox is full (use
        :meth:`send` for backpressure), :class:`ActorStoppedError` if the actor takes
        no more messages, and :class:`ReentrantCallError` if called from the actor's
        own handler.
        """
        if timeout is not None:
            with trio.fail_after(timeout):
                return await self.ask(message)
        # Both branches spelled out in this one coroutine (no _ask below it): a
        # coroutine less to make, and to pass through when a queued asker wakes.
        # (_accepting is _state == _OPEN as a bool: a test without a comparison.)
        if self._holder is None and not self._mailbox and self._accepting:
            # An ask to an idle actor, the common case: it runs in this task.
            await checkpoint_if_cancelled()  # does not yield unless it raises
            if not self._started:
                self._holder = current_task()
                return await self._handle(message, schedule_point=True)
            # _handle's plain reply, spelled out: no coroutine of its own for the
            # commonest ask of all (an idle actor, a plain handler).
            self._holder = _PLAIN
            try:
                reply = self._actor.receive(message)
            except BaseException as exc:
                if isinstance(exc, self._fatal):
                    self._crash(exc)
                self._release(exc)
                raise
            shape = type(reply)
            if shape is CoroutineType or shape is SeeThrough:
                self._holder = current_task()
                return await self._handle(message, schedule_point=True, reply=reply)
            if self._mailbox is None and self._accepting and self._idle_timeout is None:
                # _release's commonest case, spelled out (a frame less): the handler
                # queued nothing (so it took nothing either: take_queued takes from
                # the mailbox) and stopped nothing, and the actor has no idle deadline
                # to arm. It goes idle.
                self._holder = None
            else:
                self._release()
            crew = self._crew  # the schedule point, as in _handle
            now = perf_counter()
            if now - crew.yielded_at >= crew.slice:
                await _slice_up(crew, now)
            return reply  # type: ignore[return-value]  # (cast() would be a call per ask)
        if self._state != _OPEN:
            self._check_open()
        task = current_task()
        if self._holder is task:
            raise ReentrantCallError(
                f"actor {self.name!r} asked itself from its own handler; that ask could never run"
            )
        # Queued(self, message, task) without the call of its __init__ (a frame per
        # queued ask): the same fields, set here.
        queued: Queued[M, R] = _Asked()
        queued._ref = self  # noqa: SLF001 (this module's own class)
        queued.taken = queued.running = False
        queued.message = message
        queued.task = task
        queued.raise_cancel = None
        # Asked from a handler that a runner runs: the context that handler runs in.
        queued.context = copy_context() if task.coro.cr_code is _RUN_CODE else None
        mailbox = self._mailbox
        if mailbox is not None and len(mailbox) < self._mailbox_size:
            mailbox.append(queued)  # _enqueue's common case, spelled out
        else:
            self._enqueue(queued)
        # The queued message is its asker's abort function (Queued.__call__): no
        # closure and cells to allocate, and keep alive while the asker waits.
        answer = await wait_task_rescheduled(queued)
        if answer is _ANSWERED:  # the runner's plain reply (returned as it is: cast()
            return queued.result  # type: ignore[no-any-return]  # would be a call per ask)
        if answer is _YOUR_TURN:
            return await self._handle(message)
        if type(answer) is _SeeItThrough:
            return await self._see_through(answer.reply)
        return answer  # type: ignore[no-any-return]  # (Queued._answer's value)

    async def _handle(self, message: M, *, schedule_point: bool = False, reply: Any = _UNSET) -> R:
        """Run ``message`` in the current task, which holds the baton; then, with
        ``schedule_point``, let the other tasks run before returning. With ``reply``,
        the handler has run already (in :meth:`ask`) and this is what it returned."""
        run = False  # whether the asks queued behind this one go to a runner task
        handed: Queued[M, R] | None = None  # an async reply handed to the spare runner
        try:
            if reply is _UNSET:
                if not self._started:
                    await self._start()
                reply = self._actor.receive(message)
            if type(reply) is CoroutineType and self._spare is not None:
                # The idle actor's spare runner runs it, in its scope: no scope to
                # make here, and the asks that queue meanwhile follow it there.
                handed = self._hand_to_spare(message, reply)
            elif type(reply) is CoroutineType:
                run = True
                # An async reply runs in a scope that a forced shutdown can cancel
                # (stop_now). Awaited here rather than in a coroutine of its own: a
                # frame less to create, and to pass through at every suspension.
                with trio.CancelScope() as scope:
                    self._scope = scope
                    reply = await reply
                self._scope = None
                if scope.cancelled_caught:
                    raise ActorStoppedError(
                        f"the supervisor of actor {self.name!r} shut down (grace period "
                        "expired) while this message was being handled"
                    )
            elif type(reply) is SeeThrough:
                reply = await reply.coroutine
                schedule_point = False  # a reply seen through is a checkpoint itself
        except BaseException as exc:
            self._scope = None
            if isinstance(exc, self._fatal):
                self._crash(exc)
            self._release(exc, run=run)
            raise
        if handed is not None:  # its answer, as a queued asker gets the runner's:
            await wait_task_rescheduled(handed)  # _ANSWERED_SIGNAL, or the error raised
            return handed.result  # type: ignore[no-any-return]
        self._release(run=run)
        if schedule_point:
            # Yield only if the supervisor's askers have gone a slice without (see
            # open_supervisor): a plain handler of an idle actor then costs no switch.
            crew = self._crew
            now = perf_counter()
            if now - crew.yielded_at >= crew.slice:
                await _slice_up(crew, now)
        return reply  # type: ignore[no-any-return]  # (cast() would be a call per ask)

    async def _see_through(self, reply: SeeThrough[R]) -> R:
        """Await ``reply``, which the runner task handed over with the baton, in the
        current task (see :meth:`_run`)."""
        try:
            value = await reply.coroutine
        except BaseException as exc:
            if isinstance(exc, self._fatal):
                self._crash(exc)
            self._release(exc)
            raise
        self._release()
        return value

    async def stop(self) -> None:
        """Stop taking messages, handle those already queued, then stop.

        Runs :meth:`Actor.on_stop` once the mailbox is empty and returns when the
        actor is gone. Safe to call several times; if cancelled, the actor still
        stops, only the wait is abandoned.
        """
        if self._holder is current_task():
            raise ReentrantCallError(
                f"actor {self.name!r} awaited its own stop from its handler; "
                "call tell-style stop_soon() instead"
            )
        self.stop_soon()
        if self._state == _STOPPED:
            await trio.lowlevel.checkpoint()
            return
        if self._stopped is None:
            self._stopped = trio.Event()
        await self._stopped.wait()

    def stop_when_idle(self) -> None:
        """Stop as soon as the actor has nothing to do: now if it is idle, else once
        the message it handles and those queued behind it are handled (messages keep
        being taken until then). Unlike :meth:`stop_soon`, a message sent meanwhile is
        still handled by this actor, in order."""
        if self._holder is None and not self._mailbox:
            self.stop_soon()
        else:
            self._idle_timeout = 0.0  # read by _release as "stop now"
            self._armed = True  # an idle deadline armed earlier no longer re-arms

    def stop_soon(self) -> None:
        """Close the mailbox now; the actor stops once what is queued is handled."""
        if self._state != _OPEN:
            return
        self._state = _STOPPING
        self._accepting = False
        if self._room is not None:
            self._room.unpark_all()  # waiting senders now get ActorStoppedError
        if self._holder is None and not self._mailbox:
            self._finish()

    # -- internals -----------------------------------------------------------------

    def _adopt(self, actor: Actor[M, R]) -> None:
        if not isinstance(actor, Actor):
            raise TypeError(
                f"actor factory for {self.name!r} returned {type(actor).__name__}, "
                "not an Actor subclass instance"
            )
        self._fatal = type(actor).fatal_exceptions

    def _check_open(self) -> None:
        if self._state != _OPEN:
            if self._failure is not None:
                raise ActorFailedError(
                    f"actor {self.name!r} failed and was stopped: {self._failure!r}"
                ) from self._failure
            raise ActorStoppedError(f"actor {self.name!r} is stopped; message refused")

    def _enqueue(self, queued: Queued[M, R]) -> None:
        mailbox = self._mailbox
        if mailbox is None:
            mailbox = self._mailbox = deque()
        elif len(mailbox) >= self._mailbox_size:
            raise MailboxFullError(
                f"actor {self.name!r} has {self._mailbox_size} messages queued "
                "(mailbox_size); retry later or use send() to wait for room"
            )
        mailbox.append(queued)

    def _wake_sender(self) -> None:
        if self._room:
            self._room.unpark()

    def _start_runner(self) -> None:
        spare = self._spare
        if spare is not None:  # the idle actor's spare runner: the baton goes to it
            self._spare = None
            self._holder = spare
            reschedule(spare, _WORK_SIGNAL)
            return
        self._holder = _RUNNER
        self._crew.start_soon(self._run)

    def _hand_to_spare(self, message: M, reply: Any) -> Queued[M, R]:
        """Hand ``reply``, the async reply that the current task's ask to the idle
        actor got, and the baton to the actor's spare runner, which runs it as it
        runs a queued ask (taken already: its asker can no longer withdraw it)."""
        task = current_task()
        queued: Queued[M, R] = _Asked()
        queued._ref = self  # noqa: SLF001 (this module's own class)
        queued.taken = queued.running = True
        queued.message = message
        queued.task = task
        queued.raise_cancel = None
        # Asked from a handler that a runner runs: the context that handler runs in.
        queued.context = copy_context() if task.coro.cr_code is _RUN_CODE else None
        queued.result = reply
        self._handoff = queued
        self._start_runner()
        return queued

    def dismiss_spare(self, task: Task) -> None:
        """Let ``task`` go if it is still this actor's spare runner (its supervisor
        keeps only so many: see :meth:`Crew.spare_parked`)."""
        if self._spare is task:
            self._spare = None
            reschedule(task, _DISMISSED_SIGNAL)

    def cancel_runner(self) -> None:
        """Cancel the handler that the runner task runs (:class:`Queued` calls this
        when that handler's asker is cancelled)."""
        if self._scope is not None:
            self._scope.cancel()

    def take_queued(
        self, limit: int, *, while_: Callable[[M], bool] | None = None
    ) -> list[Queued[M, R]]:
        """Take up to ``limit`` messages from the front of the mailbox, stopping at
        the first one for which ``while_(message)`` is false, if given.

        Only the actor's own handler may call this, while it handles a message: it
        lets a handler work on several messages at once (to commit them in one
        write, say). The handler must answer every message it took (see
        :class:`Queued`); they leave the mailbox in order, and their askers can no
        longer withdraw them by cancelling.
        """
        holder = self._holder
        if holder is not _PLAIN and holder is not current_task():
            raise ActorError(f"take_queued() on actor {self.name!r} outside its own handler")
        mailbox = self._mailbox
        taken: list[Queued[M, R]] = []
        while mailbox and len(taken) < limit:
            if while_ is not None and not while_(mailbox[0].message):
                break
            queued = mailbox.popleft()
            queued.taken = True
            taken.append(queued)
            self._wake_sender()
        if taken:
            if self._taken is None:
                self._taken = taken
            else:
                self._taken.extend(taken)
        return taken

    def _answer_left_over(self, error: BaseException | None) -> None:
        """Fail what a handler took with take_queued() and did not answer."""
        taken, self._taken = self._taken, None
        for queued in taken or ():
            if queued.taken:
                failure = ActorError(
                    f"the handler of actor {self.name!r} that took this message "
                    f"ended without answering it ({error!r})"
                )
                failure.__cause__ = error
                queued.fail(failure)

    def withdraw(self, queued: Queued[M, R]) -> None:
        """Take ``queued``, whose asker was cancelled while it waited, out of the
        mailbox: it is never handled (:class:`Queued` calls this)."""
        assert self._mailbox is not None
        self._mailbox.remove(queued)
        self._wake_sender()

    def told_failed(self, message: M, exc: Exception) -> None:
        """Count a told message whose handling failed and pass it to the actor's
        :meth:`Actor.on_error` (:meth:`Queued.fail` of a told message does this)."""
        self.errors += 1
        try:
            self._actor.on_error(message, exc)
        except Exception:
            logger.exception("on_error of actor %r raised", self.name)

    def _release(self, error: BaseException | None = None, *, run: bool = False) -> None:
        """Hand the baton to whoever owns the next message, or go idle. With ``run``
        (the reply just handled was async), queued asks go to a runner task too."""
        if self._taken is not None:
            self._answer_left_over(error)
        mailbox = self._mailbox
        if mailbox:
            task = mailbox[0].task
            if task is None or run:
                self._start_runner()
                return
            mailbox.popleft()
            self._wake_sender()
            self._holder = task
            reschedule(task, _YOUR_TURN_SIGNAL)
            return
        self._holder = None
        self._mailbox = None  # an idle actor keeps no deque (about 700 bytes)
        if self._state == _STOPPING:
            self._finish()
        elif self._idle_timeout is not None:
            if self._idle_timeout:
                self._went_idle(self._idle_timeout)
            else:  # see stop_when_idle
                self.stop_soon()

    def _went_idle(self, idle_timeout: float) -> None:
        self._idle_deadline = trio.current_time() + idle_timeout
        if not self._armed:
            self._armed = True
            self._crew.arm_idle(self, self._idle_deadline)

    async def _run(self) -> None:
        """The runner task: :meth:`_runner`, as a coroutine for Trio to run (Trio
        starts only coroutines; ``ask`` tells a runner task by this one's code)."""
        await self._runner()

    @coroutine
    def _runner(self) -> Any:
        """Handle the messages at the front of the mailbox, in order, until it is
        empty (the runner task; see the module's docstring for when one starts).

        A told message is handled with no one to answer. An asked one is handled
        for its asker, which sleeps meanwhile: a plain or async reply is sent to it
        (both run in the asker's contextvars context, below), and a reply to see
        through is handed to it with the baton, to be awaited in its own
        task (which ends the runner). It all runs inside one shielded cancel scope,
        which a forced shutdown cancels (:meth:`stop_now`), and so does the
        cancellation of an asker whose handler runs (:meth:`Queued.__call__`): the
        runner then answers that asker and goes on in a fresh scope. One scope for a
        runner's life instead of one per async reply is most of what this task saves.

        Once the mailbox is empty the runner lets the actor go idle and, if it has
        handled more than one ask (one started for a single message is likely to be
        dismissed unused), stays, parked inside its scope, as the actor's *spare*
        (see :meth:`_park`): the next async reply of an ask to the idle actor, or the
        next told message, is handed to it rather than paying for a scope of its own
        or a new task.

        An async reply runs in its asker's contextvars context rather than the
        runner's (Trio enters a task's own context around each step of it, and the
        runner is one task for many askers): each of its steps is a ``send`` of the
        runner's driver (:func:`_drive`) inside ``Context.run``, and what the step
        yields for Trio this generator yields itself. That is why the runner is a
        generator-based coroutine (``yield from`` for its awaits), not an ``async
        def``: an ``async def`` cannot yield, and would await a generator made for each
        async reply to do it (its making, its ``await`` and its release cost about
        1,200 instructions per awaiting session update, callgrind).
        """
        task = self._holder = current_task()
        slice_ = self._crew.slice
        holding = True  # whether this task holds the baton
        handled = 0  # the asks it has handled
        reply: Any
        answer: outcome.Outcome[Any]
        scope: trio.CancelScope | None = None
        # The driver of its async replies (see _drive), made at the first one, and
        # where it leaves the value of each.
        drive: Any = None
        drive_send: Any = None
        returned: list[Any] = [None]
        try:
            while holding:
                running: Queued[M, R] | None = None  # the ask whose handler runs now
                passed: BaseException | None = None  # what its cancelled scope let out
                try:
                    with trio.CancelScope(shield=True) as scope:
                        self._scope = scope
                        since = 0.0  # when handlers began to run without yielding
                        while True:
                            queued = self._handoff
                            if queued is None:
                                mailbox = self._mailbox
                                if not mailbox or self._state == _STOPPED:
                                    holding = False  # (_park_ready releases the actor)
                                    # A parked spare keeps nothing of its last ask alive
                                    # (its asker's context, its reply, what Trio
                                    # last sent it: an error's traceback).
                                    queued = asker = context = reply = answer = _UNSET
                                    signal = value = returned[0] = None
                                    if self._park_ready(handled) and (yield from self._park(task)):
                                        holding = True  # work was handed to it
                                        continue
                                    break
                                queued = mailbox.popleft()
                                if self._room:  # _wake_sender, spelled out
                                    self._room.unpark()
                                asker = queued.task
                                if asker is None:
                                    yield from self._handle_told(queued.message)
                                    # Fairness between messages (awaited: yield from).
                                    yield from trio.lowlevel.checkpoint()  # noqa: ASYNC105
                                    since = 0.0
                                    continue
                                queued.taken = queued.running = True  # its asker can't withdraw it
                                reply = _UNSET
                            else:  # an ask to the idle actor whose reply was async
                                self._handoff = None
                                asker = cast(Task, queued.task)  # (an ask's)
                                reply = queued.result  # (taken and running already)
                            running = queued
                            handled += 1
                            yielded = False
                            try:
                                context = queued.context or asker.context
                                if reply is _UNSET:
                                    if not self._started:
                                        yield from self._start()
                                    reply = context.run(self._actor.receive, queued.message)
                                if type(reply) is CoroutineType:
                                    if drive is None:  # (the first, or the last raised)
                                        drive = _drive(returned)
                                        drive_send = drive.send
                                        drive_send(None)
                                    signal = _run_in(context, drive_send, reply)
                                    if signal is not _DRIVEN:
                                        yielded = True
                                        # Its other steps, each run in its asker's
                                        # context: what it yields goes to Trio from here.
                                        while signal is not _DRIVEN:
                                            try:
                                                value = yield signal
                                            except BaseException as thrown:  # passed on, never kept
                                                signal = _run_in(context, drive.throw, thrown)
                                            else:
                                                signal = _run_in(context, drive_send, value)
                                    reply = returned[0]
                                elif type(reply) is SeeThrough:
                                    running = None
                                    queued.taken = queued.running = False
                                    self._holder = asker
                                    holding = False
                                    reschedule(asker, outcome.Value(_SeeItThrough(reply)))
                                    return
                                queued.result = reply
                                answer = _ANSWERED_SIGNAL  # (no outcome.Value to make)
                            except BaseException as exc:
                                drive = None  # (ended, if the exception came through it)
                                if scope.cancel_called:
                                    raise  # for the scope to take its cancellation (below)
                                if isinstance(exc, self._fatal):
                                    self._crash(exc)
                                answer = outcome.Error(exc)
                            running = None
                            # _answer_ask, spelled out (a call less per ask).
                            queued.taken = queued.running = False
                            if self._taken is not None:
                                self._answer_left_over(
                                    answer.error if type(answer) is outcome.Error else None
                                )
                            reschedule(asker, answer)
                            if queued.raise_cancel is not None:
                                break  # its asker cancelled the scope: a fresh one for the rest
                            # A schedule point once handlers that did not yield have
                            # run for the supervisor's slice (see open_supervisor).
                            if yielded:
                                since = 0.0
                            elif not since:
                                since = perf_counter()
                            elif perf_counter() - since >= slice_:
                                since = 0.0
                                yield from cancel_shielded_checkpoint()  # noqa: ASYNC105
                except BaseException as exc:
                    if running is None:
                        raise
                    passed = exc
                if running is not None:  # the scope was cancelled while its handler ran
                    if passed is not None:  # it raised something else than Cancelled
                        answer = outcome.Error(passed)
                    elif running.raise_cancel is not None:  # its asker was cancelled
                        answer = outcome.capture(running.raise_cancel)
                    else:  # a forced shutdown (stop_now)
                        answer = outcome.Error(
                            ActorStoppedError(
                                f"the supervisor of actor {self.name!r} shut down (grace "
                                "period expired) while this message was being handled"
                            )
                        )
                    self._answer_ask(running, answer)
        finally:
            if self._scope is scope:
                self._scope = None
            if holding:
                self._release()

    def _park_ready(self, handled: int) -> bool:
        """Let the actor go idle (its mailbox is empty), and say whether this
        runner, which has handled ``handled`` asks, may stay as its spare."""
        self._release()
        return handled > 1 and self._state == _OPEN and self._holder is None and self._spare is None

    async def _park(self, task: Task) -> bool:
        """Wait, as the idle actor's spare runner, until work is handed to this
        task (True: it holds the baton again) or it is dismissed (False)."""
        self._spare = task
        self._crew.spare_parked(self, task)
        return await wait_task_rescheduled(_no_abort) is _WORK

    def _answer_ask(self, queued: Queued[M, R], answer: outcome.Outcome[Any]) -> None:
        """Wake the asker of ``queued``, whose message the runner handled, with
        ``answer``, after failing what its handler took and left unanswered."""
        queued.taken = queued.running = False
        if self._taken is not None:
            self._answer_left_over(answer.error if type(answer) is outcome.Error else None)
        assert queued.task is not None
        reschedule(queued.task, answer)

    async def _handle_told(self, message: M) -> None:
        error: Exception | None = None
        try:
            if not self._started:
                await self._start()
            reply = self._actor.receive(message)
            if type(reply) is CoroutineType:
                await reply
            elif type(reply) is SeeThrough:
                with trio.CancelScope(shield=True):  # from the runner's scope
                    await reply.coroutine
        except ActorFailedError:
            return
        except Exception as exc:
            error = exc
            self.told_failed(message, exc)
            if isinstance(exc, self._fatal):
                self._crash(exc)
        finally:
            if self._taken is not None:
                self._answer_left_over(error)

    async def _start(self) -> None:
        while True:
            try:
                started = self._actor.on_start()
                if started is not None:
                    await started
            except Exception as exc:
                self._crash(exc)
                if self._state == _STOPPED:
                    raise ActorFailedError(
                        f"actor {self.name!r} failed to start and was stopped: {exc!r}"
                    ) from exc
                continue
            self._started = True
            return

    def _crash(self, exc: BaseException) -> None:
        """Replace the broken instance with a fresh one, or give up."""
        self._started = False
        restarts = self._restarts
        if restarts is None:
            restarts = self._restarts = deque()
        if not self._crew.may_restart(restarts):
            self._fail(exc)
            return
        logger.warning("actor %r crashed (%r); restarting", self.name, exc)
        try:
            actor = self._factory()
            self._adopt(actor)
        except Exception as factory_exc:
            factory_exc.__context__ = exc
            self._fail(factory_exc)
            return
        self._actor = actor

    def _fail(self, exc: BaseException) -> None:
        self._failure = exc
        self._crew.record_failure(self.name, exc)
        self.stop_now(
            lambda: ActorFailedError(
                f"actor {self.name!r} failed and was stopped before handling this message: {exc!r}"
            )
        )

    # -- the refs' side of the seam with the supervisor (see Crew) ----------------

    def reap_if_idle(self, now: float) -> float | None:
        """Stop the actor if it has been idle since its idle deadline, which is
        ``now`` or earlier (its supervisor's idle queue calls this). Returns the
        later deadline to re-arm at if it was busy since, else None."""
        if self._state == _OPEN and self._holder is None and not self._mailbox:
            if self._idle_deadline > now:
                return self._idle_deadline  # it was busy since: re-arm, lazily
            self.stop_soon()
        self._armed = False  # a busy actor re-arms when it next goes idle
        return None

    def stop_now(self, error: Callable[[], ActorError]) -> None:
        """Stop at once (the supervisor's shutdown, past its grace period, or a
        failure): fail queued asks with ``error()``, drop told messages, cancel an
        async handler or ``on_stop`` that is running."""
        self._state = _STOPPED
        self._accepting = False
        mailbox, self._mailbox = self._mailbox, None
        dropped = 0
        for envelope in mailbox or ():
            if envelope.task is None:
                dropped += 1
            else:
                reschedule(envelope.task, outcome.Error(error()))
        if mailbox is not None:
            mailbox.clear()
        if dropped:
            logger.error("actor %r stopped with %d told messages unhandled", self.name, dropped)
        if self._room is not None:
            self._room.unpark_all()
        if self._scope is not None:
            self._scope.cancel()
        self._gone()

    def _finish(self) -> None:
        """Idle and stopping: run on_stop, then go."""
        if not self._started:
            self._gone()
            return
        try:
            stopping = self._actor.on_stop()
        except Exception as exc:
            self._crew.record_failure(self.name, exc)
            self._gone()
            return
        if stopping is None:
            self._gone()
        else:
            self._holder = _RUNNER
            self._crew.start_soon(self._await_stop, stopping)

    async def _await_stop(self, stopping: Awaitable[None]) -> None:
        self._holder = current_task()
        if self._state == _STOPPED:  # closed by a forced shutdown before we ran
            cast(Coroutine[Any, Any, None], stopping).close()
            self._holder = None
            return
        try:
            with trio.CancelScope(shield=True) as scope:
                self._scope = scope
                await stopping
        except Exception as exc:
            self._crew.record_failure(self.name, exc)
        finally:
            self._scope = None
            self._holder = None
            self._gone()

    def _gone(self) -> None:
        self._state = _STOPPED
        self._accepting = False
        if self._spare is not None:
            self.dismiss_spare(self._spare)
        self._crew.forget(self)
        if self._stopped is not None:
            self._stopped.set()


# The code of a runner task's coroutine (how ask tells that it runs in one).
_RUN_CODE = ActorRef._run.__code__  # noqa: SLF001 (this module's own class)
