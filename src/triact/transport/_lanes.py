"""Arrival order per session, for calls that run as concurrent tasks.

Trio does not run tasks in the order they were started or woken (each scheduling
batch is reversed at random, on purpose), so "hand each call to a task, in arrival
order" does not make the calls reach a session's mailbox in arrival order. A call
therefore joins its session's lane when it arrives, in the reading task, and may issue
its session call only at the head of the lane; issuing leaves the lane and lets the
next call go. The session's actor then handles the calls in mailbox order (invariant
I1, docs/architecture.md).

Issuing must be followed at once, without a checkpoint, by the session call that
puts the message into the mailbox: the next call is woken, but cannot run before the
issuing task suspends, and by then its message is queued. The sessions layer queues a
call without a schedule point even when the session's actor must first be brought back
into memory (the actor loads its state inside that call), so this holds always.
"""

from __future__ import annotations

from collections import deque

import trio

# A turn's states: in its lane's queue; its session call issued; done with.
_WAITING = 0
_ISSUED = 1
_FINISHED = 2
#: Empty lanes kept for reuse, at most.
_SPARE_LANES = 64


class Turn:
    """One call's place in its session's lane: what :meth:`Lanes.join` sets (a call's
    own object may be its turn, as the tool calls' are: an object less per call)."""

    __slots__ = ("lane", "ready", "state")

    #: The key of its lane.
    lane: str
    #: Set when the turn reaches the head of its lane (made only if it waits).
    ready: trio.Event | None
    state: int


class _Lane:
    __slots__ = ("running", "waiting")

    def __init__(self) -> None:
        self.waiting: deque[Turn] = deque()
        self.running = 0  # issued and not finished


class Lanes:
    """The lanes of the sessions that have calls waiting or running.

    ``limit`` bounds the calls waiting in one lane: a call that would make it longer is
    refused, as a full mailbox refuses a message (waiting calls hold no mailbox slot).
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._lanes: dict[str, _Lane] = {}
        #: Empty lanes kept for the next sessions to have calls (most calls find their
        #: session without a lane, and leave it without one): a lane is not made anew.
        self._spare: list[_Lane] = []

    def __len__(self) -> int:
        return len(self._lanes)

    def __contains__(self, key: str) -> bool:
        """True while ``key``'s lane has calls waiting or running."""
        return key in self._lanes

    def join(self, key: str, turn: Turn) -> bool:
        """Put ``turn`` (not in a lane) at the back of ``key``'s lane; False if too many
        are waiting there (then it is not in a lane)."""
        lane = self._lanes.get(key)
        if lane is None:
            spare = self._spare
            lane = self._lanes[key] = spare.pop() if spare else _Lane()
        elif len(lane.waiting) >= self._limit:
            return False
        turn.lane = key
        turn.ready = None
        turn.state = _WAITING
        lane.waiting.append(turn)
        return True

    async def wait(self, turn: Turn) -> None:
        """Return when ``turn`` is at the head of its lane."""
        lane = self._lanes[turn.lane]
        if lane.waiting[0] is not turn:
            turn.ready = trio.Event()
            await turn.ready.wait()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()

    def issue_at_head(self, turn: Turn) -> bool:
        """:meth:`issue` ``turn`` if it is at the head of its lane (True), without
        waiting; False if it must :meth:`wait` first. Not a checkpoint (the session
        call that follows is)."""
        lane = self._lanes[turn.lane]
        waiting = lane.waiting
        if waiting[0] is not turn:
            return False
        waiting.popleft()
        lane.running += 1
        turn.state = _ISSUED
        if waiting and waiting[0].ready is not None:
            waiting[0].ready.set()
        return True

    def issue(self, turn: Turn) -> None:
        """Leave the head of the lane, waking the next turn. The caller must put its
        message into the mailbox before its next checkpoint."""
        lane = self._lanes[turn.lane]
        assert lane.waiting[0] is turn, "issue() before wait() returned"
        lane.waiting.popleft()
        lane.running += 1
        turn.state = _ISSUED
        self._wake_head(lane)

    def alone(self, turn: Turn) -> bool:
        """Whether ``turn``, issued, is the only call of its lane: none issued beside it,
        none waiting behind it."""
        lane = self._lanes[turn.lane]
        return lane.running == 1 and not lane.waiting

    def finish(self, turn: Turn) -> None:
        """The call is over (answered, failed or cancelled); safe to repeat."""
        if turn.state == _FINISHED:
            return
        lane = self._lanes[turn.lane]
        if turn.state == _ISSUED:
            lane.running -= 1
        else:
            head = lane.waiting[0] is turn
            lane.waiting.remove(turn)
            if head:
                self._wake_head(lane)
        turn.state = _FINISHED
        if not lane.waiting and not lane.running:
            del self._lanes[turn.lane]
            if len(self._spare) < _SPARE_LANES:
                self._spare.append(lane)

    @staticmethod
    def _wake_head(lane: _Lane) -> None:
        if lane.waiting and lane.waiting[0].ready is not None:
            lane.waiting[0].ready.set()
