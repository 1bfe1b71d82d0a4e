"""SessionConfig: every knob of a session manager, validated at construction."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any

import attrs

from ..actors import DEFAULT_SCHEDULE_SLICE
from ._limits import DEFAULT_MAX_STATE_BYTES
from ._store import SessionStore


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    # (<= the largest float rather than math.isfinite, which raises OverflowError for
    # an int past it: a time no clock could add.)
    if not (_is_number(value) and 0 < value <= sys.float_info.max):
        raise ValueError(f"SessionConfig.{attribute.name} must be > 0, got {value!r}")


def _at_least_one(_: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise ValueError(f"SessionConfig.{attribute.name} must be an int >= 1, got {value!r}")


def _a_size(_: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if value > sys.maxsize:  # it sizes a buffer (a deque's maxlen)
        raise ValueError(
            f"SessionConfig.{attribute.name} must be at most {sys.maxsize}, got {value!r}"
        )


def _non_negative(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (_is_number(value) and (0 <= value <= sys.float_info.max or value == math.inf)):
        raise ValueError(f"SessionConfig.{attribute.name} must be >= 0, got {value!r}")


def _finite(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not -sys.float_info.max <= value <= sys.float_info.max:
        raise ValueError(f"SessionConfig.{attribute.name} must be finite, got {value!r}")


def _key(_: Any, attribute: attrs.Attribute[Any], value: bytes | None) -> None:
    if value is not None and not isinstance(value, (bytes, bytearray)):
        # The value is not quoted: it is a secret, whatever its type.
        raise TypeError(
            f"SessionConfig.{attribute.name} must be bytes or None, got {type(value).__name__}"
        )


def _instance_of(kind: type) -> Callable[[Any, attrs.Attribute[Any], object], None]:
    def check(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None and not isinstance(value, kind):
            raise TypeError(
                f"SessionConfig.{attribute.name} must be a {kind.__name__} or None, "
                f"got {type(value).__name__}"
            )

    return check


def _callable(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if not callable(value):
        raise TypeError(
            f"SessionConfig.{attribute.name} must be a function returning seconds, "
            f"got {type(value).__name__}"
        )


_optional = attrs.validators.optional


@attrs.frozen
class RateLimit:
    """A token bucket: ``rate`` calls per second on average, bursts up to ``burst``."""

    rate: float = attrs.field(validator=_positive)
    burst: int = attrs.field(default=10, validator=_at_least_one)


@attrs.frozen(kw_only=True)
class SessionConfig:
    """How a :class:`SessionManager` behaves. All times are seconds on Trio's clock."""

    #: Seconds without an accepted message before a session expires.
    idle_ttl: float = attrs.field(default=7200.0, validator=_positive)
    #: Optional absolute lifetime of a session.
    max_lifetime: float | None = attrs.field(default=None, validator=_optional(_positive))
    #: Optional: seconds idle before a session's actor leaves memory (state stays in
    #: the store; the next call brings it back transparently).
    passivate_after: float | None = attrs.field(default=None, validator=_optional(_positive))
    #: Sessions that may exist at once (in memory or passivated).
    max_sessions: int = attrs.field(default=10_000, validator=_at_least_one)
    #: With the memory store and no ``passivate_after`` nor ``rate_limit``: at most
    #: this many sessions, those used last, keep their actor between calls; the others
    #: are kept compact, and their next call builds an actor again. Above the number
    #: of sessions in use at once, or each of their calls pays for that; every kept
    #: actor is walked by the garbage collector's young collections.
    actors_kept: int = attrs.field(default=1024, validator=_at_least_one)
    #: Calls that may queue per session before SessionBusyError.
    mailbox_size: int = attrs.field(default=256, validator=_at_least_one)
    #: Where states live; None means a new MemoryStore.
    store: SessionStore | None = attrs.field(default=None, validator=_instance_of(SessionStore))
    #: Key for the HMAC of client tokens; None generates one per manager (tokens
    #: then do not survive a restart: set it when the store is durable).
    secret_key: bytes | None = attrs.field(default=None, repr=False, validator=_key)
    #: Bounds of the histories kept in each state (oldest dropped first).
    max_threads: int = attrs.field(default=100, validator=_at_least_one)
    max_thread_messages: int = attrs.field(default=1000, validator=_at_least_one)
    max_analyses: int = attrs.field(default=100, validator=_at_least_one)
    max_security_events: int = attrs.field(default=100, validator=_at_least_one)
    max_completed_requests: int = attrs.field(default=100, validator=_at_least_one)
    #: Requests a session may track as active at once (begun, not completed or
    #: failed): begin_request past it raises SessionLimitError and begins nothing.
    max_active_requests: int = attrs.field(default=1000, validator=_at_least_one)
    #: Failed token checks within ``security_window`` seconds that lock a session
    #: until the window has passed.
    security_max_failures: int = attrs.field(default=5, validator=_at_least_one)
    security_window: float = attrs.field(default=300.0, validator=_positive)
    #: Longest a state may be, as JSON (UTF-8 bytes); a change past it is refused with
    #: SessionLimitError and nothing is committed.
    max_state_bytes: int = attrs.field(default=DEFAULT_MAX_STATE_BYTES, validator=_at_least_one)
    #: Optional per-session rate limit.
    rate_limit: RateLimit | None = attrs.field(default=None, validator=_instance_of(RateLimit))
    #: Optional cap of live sessions per client id (``create_session(client_id=)``).
    max_sessions_per_client: int | None = attrs.field(
        default=None, validator=_optional(_at_least_one)
    )
    #: Optional cap of live sessions per principal (``create_session(principal=)``:
    #: an authenticated caller, such as a bearer token's over HTTP). Sessions without
    #: a principal are not counted.
    max_sessions_per_principal: int | None = attrs.field(
        default=None, validator=_optional(_at_least_one)
    )
    #: Events a subscriber may fall behind by before the oldest are dropped.
    event_buffer: int = attrs.field(default=1000, validator=[_at_least_one, _a_size])
    #: Seconds that in-flight calls get to finish when the manager closes.
    shutdown_grace: float = attrs.field(default=5.0, validator=_non_negative)
    #: Most queued changes one durable write may commit together (group commit).
    group_commit_max: int = attrs.field(default=256, validator=_at_least_one)
    #: Seconds a task may make calls to idle sessions without yielding to the
    #: scheduler (see :func:`triact.actors.open_supervisor`); 0: every call yields.
    schedule_slice: float = attrs.field(
        default=DEFAULT_SCHEDULE_SLICE, validator=[_non_negative, _finite]
    )
    #: With a shared store (:class:`SharedSessionStore`): seconds of a session's
    #: activation lease. Its owner renews it every third of that while the session
    #: is in its memory; another process takes a session over only once its lease
    #: ran out (or at once for an exclusive operation). Leases never decide what
    #: commits, only who caches and who runs exclusive operations.
    lease: float = attrs.field(default=5.0, validator=[_positive, _finite])
    #: The wall clock for timestamps stored in states (I8, docs/architecture.md): inject a fake one
    #: in tests. Timing itself always uses Trio's clock.
    wall_clock: Callable[[], float] = attrs.field(default=time.time, validator=_callable)
