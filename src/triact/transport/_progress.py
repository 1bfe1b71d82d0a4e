"""Progress notifications for the tool calls that run long."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import trio

from ._jsonrpc import notification_line

#: Seconds a call's answer waits after a progress report of the same call, so that the
#: two reach the client in different reads (see :class:`ProgressReports`).
ANSWER_GAP = 0.1


class _Watched:
    __slots__ = ("count", "due", "emit", "last", "name", "started", "token")

    def __init__(
        self, token: Any, name: str, started: float, due: float, emit: Callable[[bytes], None]
    ) -> None:
        self.token = token
        self.emit = emit
        self.name = name
        self.started = started
        self.due = due
        self.count = 0
        self.last: float | None = None


class ProgressReports:
    """Reports the progress of the calls that asked for it (with a ``progressToken``)
    while they run long: a first ``notifications/progress`` ``interval`` seconds after
    a call started, then one every ``interval`` seconds (``progress`` 1, 2, 3, ...; no
    ``total``), until it is done. A call done sooner gets no report at all, and no
    report is ever sent after :meth:`stop`.

    The official TypeScript SDKs handle a notification a step later than the response
    read with it, and by then they have forgotten the call's token ("unknown token").
    So an answer should not follow a report of its call closely: :meth:`stop` says
    until when to hold it (:data:`ANSWER_GAP` after the last report).
    """

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._watched: dict[Hashable, _Watched] = {}
        self._wake: trio.Event | None = None
        self._running = False

    def watch(
        self,
        key: Hashable,
        token: Any,
        name: str,
        nursery: trio.Nursery,
        emit: Callable[[bytes], None],
    ) -> None:
        """Report on the call ``key`` (tool ``name``) through ``emit`` from now until
        :meth:`stop`."""
        now = trio.current_time()
        self._watched[key] = _Watched(token, name, now, now + self._interval, emit)
        if not self._running:
            self._running = True
            nursery.start_soon(self._run)
        elif self._wake is not None:
            self._wake.set()

    def stop(self, key: Hashable) -> float | None:
        """No more reports on ``key``; the time before which its answer should not be
        sent, or None if it may go at once."""
        watched = self._watched.pop(key, None)
        if watched is None or watched.last is None:
            return None
        return watched.last + ANSWER_GAP

    async def _run(self) -> None:
        while True:
            if not self._watched:
                self._wake = trio.Event()
                await self._wake.wait()
                self._wake = None
                continue
            now = trio.current_time()
            # A call watched later is due no sooner than those watched before it.
            due = min(watched.due for watched in self._watched.values())
            if due > now:
                await trio.sleep_until(due)
                continue
            for watched in self._watched.values():
                if watched.due <= now:
                    self._report(watched, now)

    def _report(self, watched: _Watched, now: float) -> None:
        watched.count += 1
        watched.last = now
        watched.due += self._interval
        if watched.due <= now:  # the loop fell behind: skip to the next interval
            watched.due = now + self._interval
        params = {
            "progressToken": watched.token,
            "progress": watched.count,
            "message": f"{watched.name} running for {now - watched.started:.3g} s",
        }
        watched.emit(notification_line("notifications/progress", params))
