"""The supervisor: spawns actors, restarts crashed ones, reaps idle ones, shuts down."""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import trio
from trio.lowlevel import Task

from ._actor import Actor
from ._deadlines import DeadlineQueue
from ._errors import ActorStoppedError
from ._ref import ActorRef

M = TypeVar("M")
R = TypeVar("R")

logger = logging.getLogger("triact.actors")

_FAILURES_KEPT = 1000
# How many spare runners a supervisor's idle actors keep, at most (see Crew.spare_parked).
_SPARES_KEPT = 256


def _non_negative(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ValueError(f"RestartPolicy.{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen
class RestartPolicy:
    """How often an actor may crash before its supervisor gives up on it (OTP's
    restart intensity): more than ``max_restarts`` crashes within ``within`` seconds
    stops the actor with :class:`ActorFailedError`."""

    max_restarts: int = attrs.field(default=3, validator=_non_negative)
    within: float = attrs.field(default=5.0, validator=_non_negative)


#: How long askers may go without a schedule point, by default (see open_supervisor).
DEFAULT_SCHEDULE_SLICE = 0.001


@attrs.frozen
class ActorFailure:
    """A report of an actor that failed, or whose ``on_stop`` hook raised."""

    name: str
    error: BaseException
    at: float  #: Trio clock time


class Crew:
    """The supervisor's side of the seam between a supervisor and its actors (the
    state they share, as ``trio/_channel.py``'s channels share one state object).

    Every :class:`ActorRef` holds its supervisor's crew and reaches the supervisor
    only through it: its pacing of askers' schedule points (``yielded_at`` and
    ``slice``, read on every ask of an idle actor, so plain attributes; ``slicing``
    and ``slicing_points``, read once a slice is up), and the
    named calls below. The refs' side is :meth:`ActorRef.reap_if_idle` and
    :meth:`ActorRef.stop_now`. :class:`Supervisor` is the public face of a crew.
    """

    __slots__ = (
        "actors",
        "all_gone",
        "closing",
        "failures",
        "grace",
        "idle",
        "nursery",
        "restart",
        "slice",
        "slicing",
        "slicing_points",
        "spares",
        "yielded_at",
    )

    def __init__(
        self,
        nursery: trio.Nursery,
        restart: RestartPolicy,
        shutdown_grace: float,
        schedule_slice: float,
    ) -> None:
        self.nursery = nursery
        self.restart = restart
        self.grace = shutdown_grace
        #: How long askers may go without a schedule point (see open_supervisor).
        self.slice = schedule_slice
        #: When the current slice began: when an ask of this supervisor last yielded
        #: at its schedule point, or an asker came back from the scheduler (time.
        #: perf_counter: CPU time that passed, whatever Trio's clock says).
        self.yielded_at = -math.inf
        #: The task whose asks the current slice times, and its count of schedule
        #: points then (Trio's ``Task._schedule_points``; None where there is none):
        #: if either has changed once the slice is up, the asker has been back to
        #: the scheduler since, and its slice starts again instead of yielding.
        self.slicing: object = None
        self.slicing_points: int | None = None
        self.actors: dict[str, ActorRef[Any, Any]] = {}
        #: Idle actors by the deadline they are reaped at (see ActorRef.reap_if_idle).
        self.idle: DeadlineQueue[ActorRef[Any, Any]] = DeadlineQueue()
        self.failures: deque[ActorFailure] = deque(maxlen=_FAILURES_KEPT)
        self.closing = False
        self.all_gone: trio.Event | None = None
        #: Runners parked as their idle actors' spares, oldest first, with entries
        #: of those used since (see spare_parked).
        self.spares: deque[tuple[ActorRef[Any, Any], Task]] = deque()

    # -- called by ActorRef --------------------------------------------------------

    def spare_parked(self, ref: ActorRef[Any, Any], task: Task) -> None:
        """``task``, ``ref``'s runner, has parked as its idle actor's spare. Past
        ``_SPARES_KEPT`` parked since, the oldest is dismissed (if it is still a spare:
        an entry whose runner was used since dismisses nothing), so that at most that
        many idle actors of a supervisor keep a task."""
        spares = self.spares
        spares.append((ref, task))
        if len(spares) > _SPARES_KEPT:
            old, old_task = spares.popleft()
            old.dismiss_spare(old_task)

    def start_soon(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run an actor's background task (a runner, an ``on_stop``) in the nursery."""
        self.nursery.start_soon(fn, *args)

    def arm_idle(self, ref: ActorRef[Any, Any], deadline: float) -> None:
        """Have ``ref.reap_if_idle`` called at ``deadline``."""
        self.idle.push(deadline, ref)

    def may_restart(self, restarts: deque[float]) -> bool:
        """Whether an actor that crashed, with these past restart times, may restart
        (the crash is then added to them)."""
        policy = self.restart
        now = trio.current_time()
        while restarts and restarts[0] <= now - policy.within:
            restarts.popleft()
        if len(restarts) >= policy.max_restarts:
            return False
        restarts.append(now)
        return True

    def record_failure(self, name: str, error: BaseException) -> None:
        """Log and keep the failure of actor ``name`` (see Supervisor.failures)."""
        logger.error("actor %r failed: %r", name, error, exc_info=error)
        self.failures.append(ActorFailure(name, error, trio.current_time()))

    def forget(self, ref: ActorRef[Any, Any]) -> None:
        """``ref`` is gone: it no longer counts as running."""
        if self.actors.get(ref.name) is ref:
            del self.actors[ref.name]
        if not self.actors and self.all_gone is not None:
            self.all_gone.set()

    # -- the supervisor's own work -------------------------------------------------

    async def shutdown(self) -> None:
        """Stop every actor, gracefully for up to ``grace`` seconds, then at once;
        then cancel what is left in the nursery."""
        self.closing = True
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + self.grace
            for i, ref in enumerate(list(self.actors.values())):
                ref.stop_soon()
                if i % 1024 == 1023:
                    await trio.lowlevel.checkpoint()
            if self.actors:
                self.all_gone = trio.Event()
                await self.all_gone.wait()
        if self.actors:
            logger.warning(
                "supervisor shutdown: grace period of %ss expired with %d actors "
                "still busy; stopping them",
                self.grace,
                len(self.actors),
            )
            for ref in list(self.actors.values()):
                ref.stop_now(
                    lambda: ActorStoppedError(
                        "the supervisor shut down (grace period expired) before "
                        "this message was handled"
                    )
                )
        self.nursery.cancel_scope.cancel()


class Supervisor:
    """Owns a set of actors and the nursery their background work runs in.

    Open one with :func:`open_supervisor`.
    """

    __slots__ = ("_crew", "_next_id")

    def __init__(self, crew: Crew) -> None:
        self._crew = crew
        self._next_id = 0

    def __len__(self) -> int:
        """How many actors are running (not yet stopped)."""
        return len(self._crew.actors)

    @property
    def failures(self) -> tuple[ActorFailure, ...]:
        """Actors that crashed past their restart policy, and ``on_stop`` hooks that
        raised, oldest first (the last 1,000 are kept)."""
        return tuple(self._crew.failures)

    def spawn(
        self,
        factory: Callable[[], Actor[M, R]],
        *,
        name: str | None = None,
        mailbox_size: int = 256,
        idle_timeout: float | None = None,
    ) -> ActorRef[M, R]:
        """Create an actor from ``factory`` (called again on every restart).

        ``name`` must be unique among running actors (one is made up if omitted);
        ``mailbox_size`` bounds queued messages; with ``idle_timeout`` the actor is
        stopped after that many seconds without a message. No task is started: an
        idle actor costs only memory.
        """
        crew = self._crew
        if crew.closing:
            raise ActorStoppedError("the supervisor is shutting down; spawn refused")
        if mailbox_size < 1:
            raise ValueError(f"mailbox_size must be >= 1, got {mailbox_size!r}")
        if idle_timeout is not None and not idle_timeout > 0:
            raise ValueError(f"idle_timeout must be > 0 seconds, got {idle_timeout!r}")
        if name is None:
            self._next_id += 1
            name = f"{getattr(factory, '__name__', 'actor')}-{self._next_id}"
        elif name in crew.actors:
            raise ValueError(f"an actor named {name!r} is already running here")
        ref = ActorRef(crew, name, factory, mailbox_size, idle_timeout)
        crew.actors[name] = ref
        return ref

    def get(self, name: str) -> ActorRef[Any, Any] | None:
        """The running actor called ``name``, or None."""
        return self._crew.actors.get(name)

    def start_soon(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run ``fn(*args)`` as a background task of the supervisor.

        It is cancelled when the supervisor has finished shutting its actors down.
        """
        if self._crew.closing:
            raise ActorStoppedError("the supervisor is shutting down; task refused")
        self._crew.start_soon(fn, *args)


@asynccontextmanager
async def open_supervisor(
    *,
    restart: RestartPolicy | None = None,
    shutdown_grace: float = 5.0,
    schedule_slice: float = DEFAULT_SCHEDULE_SLICE,
) -> AsyncIterator[Supervisor]:
    """Open a supervisor for the duration of an ``async with`` block.

    On leaving the block, whether normally or by an exception, the supervisor stops
    taking messages, lets every actor handle what it has queued and run its
    ``on_stop`` hook, for up to ``shutdown_grace`` seconds (even if the surrounding
    code was cancelled), then stops what is left: queued askers get
    :class:`ActorStoppedError` and in-flight async handlers are cancelled. No task
    outlives the block. An exception from the block propagates as it is.

    ``schedule_slice`` (seconds) is how long askers may go without yielding to the
    scheduler. An ``ask`` that runs its handler at once, in the asker's task (the
    actor was idle), is always a cancel point, but a schedule point only if no such
    ask of this supervisor yielded in the last ``schedule_slice`` seconds (the idea
    of python-trio/trio#1757): so it costs no task switch, and no task runs asks for
    longer than about that between schedule points (at most twice as long when
    several tasks ask in turn). The slice counts from when the asking task last came
    back from the scheduler, if that was later: the first ask after a wait never
    yields. ``0`` makes every ask a schedule point, as
    ``trio.testing.assert_checkpoints`` expects.
    """
    if not shutdown_grace >= 0 or math.isnan(shutdown_grace):
        raise ValueError(f"shutdown_grace must be >= 0 seconds, got {shutdown_grace!r}")
    if not 0 <= schedule_slice < math.inf:
        raise ValueError(
            f"schedule_slice must be a finite number of seconds >= 0, got {schedule_slice!r}"
        )
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        crew = Crew(nursery, restart or RestartPolicy(), shutdown_grace, schedule_slice)
        nursery.start_soon(crew.idle.run, ActorRef.reap_if_idle)
        try:
            yield Supervisor(crew)
        except BaseException as exc:
            # Raised again below, outside the nursery, so that the caller sees the
            # body's own exception rather than an ExceptionGroup wrapping it.
            body_error = exc
        finally:
            await crew.shutdown()
    if body_error is not None:
        raise body_error
