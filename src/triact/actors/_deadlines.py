"""A deadline heap that wakes a task only when something comes due."""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import trio

T = TypeVar("T")

# How many due entries are handled between two schedule points, so that a mass
# expiry never holds the event loop for long.
_BATCH = 256


class DeadlineQueue(Generic[T]):
    """A min-heap of ``(deadline, item)`` on Trio's clock, and the task that serves it.

    ``run(on_due)`` sleeps until the earliest deadline, then calls ``on_due(item, now)``
    for each entry that came due. ``on_due`` returns a new deadline to re-arm the
    item, or ``None`` to drop it. The work per wake-up is proportional to the entries
    that came due; nothing ever scans the whole queue. Callers keep entries lazy: an
    item whose deadline moved later is re-armed when its old entry pops, instead of
    being updated in place on every change.
    """

    __slots__ = ("_heap", "_seq", "_wakeup")

    def __init__(self, *, orderable: bool = False) -> None:
        """``orderable``: the items can be compared (``<``) with each other, so that
        entries due at the same time need no sequence number between deadline and
        item (an entry is then a pair: 40 bytes less for each)."""
        self._heap: list[tuple[Any, ...]] = []
        self._seq = None if orderable else itertools.count()
        self._wakeup: trio.CancelScope | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, deadline: float, item: T) -> None:
        seq = self._seq
        heapq.heappush(self._heap, (deadline, item) if seq is None else (deadline, next(seq), item))
        wakeup = self._wakeup
        if wakeup is not None and deadline < wakeup.deadline:
            wakeup.deadline = deadline

    async def run(self, on_due: Callable[[T, float], float | None]) -> None:
        """Serve the queue until cancelled."""
        heap = self._heap
        while True:
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as wakeup:
                self._wakeup = wakeup
                await trio.sleep_forever()
            self._wakeup = None
            now = trio.current_time()
            handled = 0
            while heap and heap[0][0] <= now:
                item = heapq.heappop(heap)[-1]
                again = on_due(item, now)
                if again is not None:
                    self.push(again, item)
                handled += 1
                if handled % _BATCH == 0:
                    await trio.lowlevel.checkpoint()
                    now = trio.current_time()
