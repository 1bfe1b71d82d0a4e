"""The :class:`Actor` base class: what a user subclasses."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any, ClassVar, Generic, TypeVar

M = TypeVar("M")
R = TypeVar("R")

logger = logging.getLogger("triact.actors")


class Actor(Generic[M, R]):
    """An object that handles its messages one at a time.

    Subclass it and define :meth:`receive`, as a plain ``def`` or an ``async def``
    (a plain ``receive`` may also return a coroutine for the messages that need to
    wait for something: it is awaited as part of handling that message).
    The runtime never runs two of an actor's hooks or handlers at once, so the
    actor's own attributes need no lock.

    Optional hooks, each a plain or an async method:

    * :meth:`on_start`: runs before the first message is handled (and again after
      every restart), in the task that handles that message.
    * :meth:`on_stop`: runs once when the actor stops normally (``stop()``, idle
      timeout or supervisor shutdown) after its queued messages are handled.
    * :meth:`on_error`: runs when a handler for a ``tell``/``send`` message raised;
      there is no asker to give the exception to.

    An exception from ``on_start``, or one of the types in :attr:`fatal_exceptions`
    raised by ``receive``, is a *crash*: the supervisor replaces the instance with a
    fresh one from the factory, under its :class:`RestartPolicy`.

    A coroutine that ``receive`` returns is cancelled when a supervisor shutdown
    runs out of grace; one returned wrapped in :func:`see_through` is not.
    """

    __slots__ = ()

    #: Exception types that ``receive`` may raise to say "my state is broken":
    #: the asker still gets the exception, then the actor restarts from its factory.
    fatal_exceptions: ClassVar[tuple[type[BaseException], ...]] = ()

    def receive(self, message: M) -> R | Awaitable[R]:
        """Handle one message; the return value is the reply to ``ask``."""
        raise NotImplementedError(f"{type(self).__name__} must define receive()")

    def on_start(self) -> Awaitable[None] | None:
        """Prepare the actor; runs before its first message (and after a restart)."""
        return None

    def on_stop(self) -> Awaitable[None] | None:
        """Release what the actor holds; runs once, after its last message."""
        return None

    def on_error(self, message: M, error: Exception) -> None:
        """Called (synchronously) when handling a told message raised ``error``.

        The error is counted in :attr:`ActorRef.errors` either way; the default
        logs it. An exception raised here is logged and otherwise ignored.
        """
        logger.error("%s failed on a told message %r", type(self).__name__, message, exc_info=error)


class SeeThrough(Generic[R]):
    """A reply coroutine that a forced shutdown does not cancel: see
    :func:`see_through`. Awaiting it awaits the coroutine."""

    __slots__ = ("coroutine",)

    def __init__(self, coroutine: Coroutine[Any, Any, R]) -> None:
        self.coroutine = coroutine

    def __await__(self) -> Generator[Any, Any, R]:
        return self.coroutine.__await__()


def see_through(coroutine: Coroutine[Any, Any, R]) -> SeeThrough[R]:
    """Mark a reply coroutine, returned by a plain ``receive``, as one to see through.

    An async reply normally runs in a cancel scope that a supervisor's shutdown
    cancels once its grace period has run out. Wrapped in ``see_through``, it runs
    without that scope (which also spares a scope per message), so the shutdown
    does not cancel it: an asked message's reply finishes in its asker's task,
    which gets its outcome (the supervisor stops the actor without waiting for it),
    and a told one's in the actor's task, which the supervisor waits for. The
    asker's own cancellation still reaches it.

    Use it for work that finishes on its own and must not be abandoned halfway,
    such as a write to a store that has begun; not for work of unbounded length.
    The coroutine must be a checkpoint, as Trio expects of every async function:
    ``ask`` adds no schedule point of its own after it.
    """
    return SeeThrough(coroutine)
