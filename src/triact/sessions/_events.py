"""Lifecycle events and their subscriptions."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Literal

import attrs
import trio

EventKind = Literal["created", "updated", "expired", "ended", "removed"]


@attrs.frozen
class SessionEvent:
    """Something that happened to a session. ``version`` is the session's version
    after the event; ``at`` is the wall-clock time."""

    kind: EventKind
    session_id: str
    version: int
    at: float


class Subscription:
    """A bounded stream of :class:`SessionEvent`, from :meth:`SessionManager.subscribe`.

    Iterate it with ``async for``. Publishing never waits for a subscriber: when a
    subscriber has ``buffer`` events it has not read yet, the oldest is dropped to
    make room and :attr:`dropped` counts it. Iteration ends when the subscription
    or the manager closes.
    """

    def __init__(self, buffer: int, on_close: Callable[[Subscription], None] | None = None) -> None:
        self._events: deque[SessionEvent] = deque(maxlen=buffer)
        self._on_close = on_close
        self._wakeup: trio.Event | None = None
        self._closed = False
        #: How many events were dropped because this subscriber fell behind.
        self.dropped = 0

    def _publish(self, event: SessionEvent) -> None:
        events = self._events
        if len(events) == events.maxlen:
            self.dropped += 1
        events.append(event)
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    def close(self) -> None:
        """Stop the subscription; a waiting iteration ends once the events already
        buffered are read."""
        if self._on_close is not None:
            self._on_close(self)
            self._on_close = None
        self._closed = True
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> SessionEvent:
        await trio.lowlevel.checkpoint()
        while not self._events:
            if self._closed:
                raise StopAsyncIteration
            self._wakeup = trio.Event()
            await self._wakeup.wait()
        return self._events.popleft()


def deliver(subscriptions: Iterable[Subscription], event: SessionEvent) -> None:
    """Give ``event`` to each of ``subscriptions`` (their manager publishes through
    this, never through a subscription's own methods)."""
    for subscription in subscriptions:
        subscription._publish(event)  # noqa: SLF001 (this module's own class)
