"""A deadline heap that wakes a task only when something comes due."""

from __future__ import annotations

import heapq
import itertools
import math
import struct
from array import array
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


# -- deadlines of string ids, out of the collector's sight ------------------------

#: A bucket's record: the deadline, then the length in bytes of the id that follows.
_RECORD = struct.Struct("<dI")
#: Deadlines this far from zero (or infinite) share a bucket at either end, so that a
#: bucket's key fits in an ``array('q')``.
_FAR = float(2**62)
_LAST_KEY = 2**62


def _bucket_key(deadline: float) -> int:
    """The bucket of ``deadline``: its whole second (bucket ``k`` holds [k, k + 1))."""
    if -_FAR < deadline < _FAR:
        return math.floor(deadline)
    if math.isnan(deadline):
        raise ValueError("a deadline must not be NaN")
    return _LAST_KEY if deadline > 0 else -_LAST_KEY


def _push_key(keys: array[int], key: int) -> None:
    """heapq's push on an ``array('q')`` (heapq's C functions take lists only)."""
    keys.append(key)
    pos = len(keys) - 1
    while pos:
        parent = (pos - 1) >> 1
        if keys[parent] <= key:
            break
        keys[pos] = keys[parent]
        pos = parent
    keys[pos] = key


def _pop_key(keys: array[int]) -> int:
    """heapq's pop on an ``array('q')``: the smallest key."""
    last = keys.pop()
    if not keys:
        return last
    top, size, pos = keys[0], len(keys), 0
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        if child + 1 < size and keys[child + 1] < keys[child]:
            child += 1
        if keys[child] >= last:
            break
        keys[pos] = keys[child]
        pos = child
    keys[pos] = last
    return top


class IdDeadlineQueue:
    """A :class:`DeadlineQueue` of string ids, ordered as one made with
    ``orderable=True`` (by deadline, then id), that the cyclic collector does not walk
    entry by entry.

    A heap is a list, and a full collection reads every item of every list it walks:
    a million ``(deadline, id)`` entries cost it tens of milliseconds even though the
    tuples themselves are not tracked. Here an entry due in a later whole second than
    the current one is a record (the deadline as 8 bytes, the id in UTF-8) appended to
    its second's ``bytearray``; the buckets are in a dict of ints and bytearrays and
    their keys in a heap in an ``array('q')``, none of which the collector tracks. A
    bucket is unpacked into a small heap of ``(deadline, id)`` pairs (the only list)
    when its second begins, so that the entries come due in exactly the same order and
    at the same times as in a heap, and the task wakes only when the earliest one comes
    due. Per entry: an append to push, and an unpack and a heap push and pop once its
    second has come, whatever the number of entries; a bucket is unpacked with a
    schedule point every few hundred records, like the entries handled.
    """

    __slots__ = ("_buckets", "_far", "_firsts", "_keys", "_near", "_near_below", "_wakeup")

    def __init__(self) -> None:
        #: The entries of the buckets already opened, and those pushed with a deadline
        #: before _near_below: a heap of pairs.
        self._near: list[tuple[float, str]] = []
        self._near_below = -math.inf
        #: Bucket key -> its records, and the earliest deadline in it.
        self._buckets: dict[int, bytearray] = {}
        self._firsts: dict[int, float] = {}
        #: The buckets' keys, a heap.
        self._keys: array[int] = array("q")
        self._far = 0  # entries in buckets
        self._wakeup: trio.CancelScope | None = None

    def __len__(self) -> int:
        return len(self._near) + self._far

    def push(self, deadline: float, item: str) -> None:
        """Have ``item`` come due at ``deadline`` (an id may be in the queue more than
        once: each entry comes due)."""
        if deadline < self._near_below:
            heapq.heappush(self._near, (deadline, item))
        else:
            key = _bucket_key(deadline)
            data = item.encode("utf-8", "surrogatepass")
            bucket = self._buckets.get(key)
            if bucket is None:
                self._buckets[key] = bytearray(_RECORD.pack(deadline, len(data)) + data)
                self._firsts[key] = deadline
                _push_key(self._keys, key)
            else:
                bucket += _RECORD.pack(deadline, len(data))
                bucket += data
                if deadline < self._firsts[key]:
                    self._firsts[key] = deadline
            self._far += 1
        wakeup = self._wakeup
        if wakeup is not None and deadline < wakeup.deadline:
            wakeup.deadline = deadline

    def _next_deadline(self) -> float:
        near, keys = self._near, self._keys
        first = near[0][0] if near else math.inf
        if keys:
            first = min(first, self._firsts[keys[0]])
        return first

    async def run(self, on_due: Callable[[str, float], float | None]) -> None:
        """Serve the queue until cancelled: as :meth:`DeadlineQueue.run`."""
        near, keys, buckets, firsts = self._near, self._keys, self._buckets, self._firsts
        record, size_of = _RECORD.unpack_from, _RECORD.size
        while True:
            with trio.CancelScope(deadline=self._next_deadline()) as wakeup:
                self._wakeup = wakeup
                await trio.sleep_forever()
            self._wakeup = None
            now = trio.current_time()
            work = 0
            while True:
                if keys and keys[0] <= now:
                    # Its second has begun: its entries join the heap (a push made
                    # while this yields goes to a new bucket of the same key, which
                    # this loop opens next).
                    key = _pop_key(keys)
                    data = buckets.pop(key)
                    del firsts[key]
                    offset, end = 0, len(data)
                    while offset < end:
                        deadline, length = record(data, offset)
                        offset += size_of
                        item = data[offset : offset + length].decode("utf-8", "surrogatepass")
                        offset += length
                        heapq.heappush(near, (deadline, item))
                        self._far -= 1
                        work += 1
                        if work % _BATCH == 0:
                            await trio.lowlevel.checkpoint()
                            now = trio.current_time()
                    continue
                # Every entry due by now is in the heap (its bucket's key is at most
                # now); what is pushed due before the next whole second joins it.
                self._near_below = math.floor(now) + 1.0
                if not near or near[0][0] > now:
                    break
                item = heapq.heappop(near)[1]
                again = on_due(item, now)
                if again is not None:
                    self.push(again, item)
                work += 1
                if work % _BATCH == 0:
                    await trio.lowlevel.checkpoint()
                    now = trio.current_time()
