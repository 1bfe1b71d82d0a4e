"""The seam between a session manager and what it runs: its sessions' actors and
handles reach the manager only through a :class:`SessionHost`, by name.

The host holds the manager's bound methods and settings, read once at start, so
that a call through it costs what a call of the manager's method did (one slot
read, no bound method made per call). The manager's counters are a :class:`Tally`,
written by named methods.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs

from ..actors import ActorRef
from ._config import SessionConfig
from ._errors import SessionError
from ._events import EventKind, Subscription
from ._leases import Entry, GoneReason, Leases
from ._ops import Op
from ._state import SessionState
from ._store import SessionStore

if TYPE_CHECKING:
    from ._actor import SessionActor


class Tally:
    """A manager's counters of its sessions' calls: each call is counted once, with
    its latency (the last ``kept`` latencies are kept for the percentiles), by
    ``SessionActor._account`` (written there field by field: every call pays it)."""

    __slots__ = ("busy_rejections", "errors", "latencies", "operations", "security_failures")

    def __init__(self, kept: int) -> None:
        self.operations = 0
        self.errors = 0
        self.busy_rejections = 0
        self.security_failures = 0
        self.latencies: deque[float] = deque(maxlen=kept)

    def busy_rejected(self) -> None:
        """Count a call refused unhandled: its mailbox was full, or over its rate limit."""
        self.busy_rejections += 1

    def security_failed(self) -> None:
        """Count a call refused for its token."""
        self.security_failures += 1


@attrs.frozen(slots=True, kw_only=True)
class SessionHost:
    """What a session's actor and handle may do with their manager; nothing else of
    the manager is theirs to touch."""

    config: SessionConfig
    store: SessionStore
    #: With a shared store: its leases, deadlines and sweeps (None otherwise).
    leases: Leases | None
    tally: Tally
    #: Trio's clock (``trio.current_time``) and the wall clock of the states.
    now: Callable[[], float]
    wall_clock: Callable[[], float]
    #: True once the manager has begun to close.
    closing: Callable[[], bool]
    token_digest: Callable[[str], str]
    #: Publish an event of a committed state to the manager's subscribers.
    publish: Callable[[EventKind, SessionState], None]
    #: The manager's subscriptions (the list itself, read to skip ``publish`` when
    #: it is empty).
    subscriptions: list[Subscription]
    #: Forget a session: it ended, expired, was removed or failed (``final``: its
    #: last state, if known).
    session_gone: Callable[[Entry, GoneReason, SessionState | None], None]
    #: A session's actor stopped: passivated, expired, ended or shut down.
    actor_stopped: Callable[[Entry, SessionActor], None]
    #: A call that its actor did not stamp ended: idleness counts from now.
    stamp: Callable[[Entry], None]
    #: A session's actor failed past its restart policy.
    session_failed: Callable[[Entry, BaseException], None]
    #: This process's record of a shared store's session (made if needed).
    adopt: Callable[[str], Entry]
    #: The session's running actor, spawned if needed.
    activate: Callable[[Entry], Awaitable[ActorRef[Op, Any]]]
    #: Why a session takes no call: it is gone, or the manager is closing.
    refusal: Callable[[Entry], SessionError]
