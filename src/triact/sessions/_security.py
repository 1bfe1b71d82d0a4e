"""Client binding: token HMACs, and the throttle of callers that present wrong tokens.

A bound session stores ``HMAC-SHA256(key, token)``, never the token. A call with the
right token always passes, whatever others have tried before it. A caller that
presents wrong (or no) tokens is throttled instead: after ``security_max_failures``
refusals within ``security_window`` seconds, every further wrong token is refused with
:class:`SessionThrottledError` and a retry hint until the window has passed.

A refusal changes nothing in the committed state: it does not move the version (an
owner's ``expected_version`` stays right) and it is not activity for the idle TTL.
Its :class:`SecurityEvent` is kept by the session's :class:`SessionGuard`, beside the
committed state: reads show it (``security_events``), and the session's next committed
change stores it. Events not yet stored survive passivation (the guard lives on the
manager's record of the session), not a restart of the process.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections import deque
from collections.abc import Callable

import attrs

from ._config import SessionConfig
from ._errors import SessionSecurityError, SessionThrottledError
from ._state import ClientBinding, SecurityEvent, SessionState

logger = logging.getLogger("triact.sessions")

#: The kinds of the security events this module records. ``locked`` is read from states
#: that an older triact stored (it locked sessions); it is never written now.
INVALID, MISSING, THROTTLED, LEGACY_LOCKED = "invalid_token", "missing_token", "throttled", "locked"


def token_digest(key: bytes, token: str) -> str:
    """The hex HMAC-SHA256 of ``token`` under ``key``: what a binding stores.

    A token that is not a str raises TypeError (without quoting it). One that is not
    valid Unicode (a lone surrogate) is digested as it is, so it is one more wrong
    token: tokens are ASCII.
    """
    if not isinstance(token, str):
        raise TypeError(f"a session token is a str (or None), got {type(token).__name__}")
    return hmac.new(key, token.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def opens(digests: frozenset[str], binding: ClientBinding | None) -> bool:
    """Whether a caller holding the tokens of ``digests`` (their :func:`token_digest`)
    may use a session with ``binding``: no binding, or one of them is its token."""
    # A set lookup, not a constant-time comparison: what is compared is the HMAC of
    # the caller's token under a key it does not know, so the time taken tells it
    # nothing it could use, and listing stays one lookup per session.
    return binding is None or binding.token_hmac in digests


class SessionGuard:
    """One session's token checks, failure throttle and security events not yet
    committed. Used only from the session's actor (one call at a time); it lives as
    long as the manager's record of the session, across passivation."""

    __slots__ = (
        "_config",
        "_digest",
        "_failures",
        "_pending",
        "_primed",
        "_throttled_until",
        "pending",
    )

    def __init__(self, digest: Callable[[str], str], config: SessionConfig) -> None:
        self._digest = digest  # token -> its HMAC under the manager's key (token_digest)
        self._config = config
        # Trio times of refusals in the window; made at the first refusal (most
        # sessions never see one, and an empty deque costs 624 bytes).
        self._failures: deque[float] | None = None
        self._throttled_until = 0.0  # Trio time
        self._pending: list[SecurityEvent] | None = None  # made when one is recorded
        #: Whether some security events are not committed yet (a plain attribute: every
        #: change reads it, and calls :meth:`with_events` and :meth:`committed` only if
        #: it is true).
        self.pending = False
        self._primed = False

    def empty(self, now: float) -> bool:
        """Whether this guard holds nothing that a fresh one (primed from the committed
        state) would not have: no events to commit, no refusal in its window, no
        throttle running at Trio time ``now``."""
        return not self._pending and not self._failures and self._throttled_until <= now

    def passes(self, token: str | None, state: SessionState) -> bool:
        """Whether ``token`` may use ``state``: no binding, or the token's HMAC matches
        (compared in constant time). Records nothing; never affected by the throttle."""
        binding = state.client_binding
        if binding is None:
            return True
        if token is None:
            return False
        return hmac.compare_digest(self._digest(token), binding.token_hmac)

    def refuse(
        self, token: str | None, state: SessionState, tool_name: str | None, now: float, wall: float
    ) -> SessionSecurityError:
        """Record the refusal of ``token`` (which did not pass) at Trio time ``now``
        and wall-clock time ``wall``, and return the error to raise."""
        self._prime(state, now, wall)
        config = self._config
        if now < self._throttled_until:
            retry = self._throttled_until - now
            message = (
                f"session {state.id!r} refused {_what(token)}; too many invalid tokens: "
                f"retry in {retry:.0f} s (the session's own token is still accepted)"
            )
            self._record(SecurityEvent(THROTTLED, wall, tool_name, message))
            return SessionThrottledError(message, retry_after=retry)
        failures = self._failures
        if failures is None:
            failures = self._failures = deque()
        while failures and failures[0] <= now - config.security_window:
            failures.popleft()
        failures.append(now)
        message = f"session {state.id!r} refused {_what(token)}"
        if len(failures) >= config.security_max_failures:
            self._throttled_until = now + config.security_window
            failures.clear()
            message += (
                f"; after {config.security_max_failures} failures, further invalid tokens "
                f"are refused for {config.security_window:.0f} s"
            )
            logger.warning("%s", message)
        self._record(SecurityEvent(MISSING if token is None else INVALID, wall, tool_name, message))
        return SessionSecurityError(message)

    def throttled_for(self, now: float) -> float:
        """Seconds until failing callers are let through to the token check again
        (0.0 if they are now)."""
        return max(0.0, self._throttled_until - now)

    # -- events beside the committed state -------------------------------------------

    def with_events(self, state: SessionState) -> SessionState:
        """``state`` with the events not yet committed (the newest kept, as bounded by
        ``max_security_events``): what reads show and what the next change builds on."""
        if not self._pending:
            return state
        events = (*state.security_events, *self._pending)
        return attrs.evolve(state, security_events=events[-self._config.max_security_events :])

    def committed(self) -> None:
        """The events were stored with a committed change (built on
        :meth:`with_events`)."""
        self._pending = None
        self.pending = False

    def _record(self, event: SecurityEvent) -> None:
        pending = self._pending
        if pending is None:
            pending = self._pending = []
        pending.append(event)
        self.pending = True
        if len(pending) > self._config.max_security_events:
            del pending[0]

    def _prime(self, state: SessionState, now: float, wall: float) -> None:
        """Rebuild the throttle from the events the state stores, once, so that a
        restart does not lift it. Event times are wall-clock, mapped onto Trio's clock."""
        if self._primed:
            return
        self._primed = True
        window = self._config.security_window
        for event in state.security_events:
            age = wall - event.at
            if age >= window or event.kind == THROTTLED:
                continue
            at = now - age
            if event.kind == LEGACY_LOCKED:
                self._throttled_until, self._failures = at + window, deque()
                continue
            if self._failures is None:
                self._failures = deque()
            self._failures.append(at)
            if len(self._failures) >= self._config.security_max_failures:
                self._throttled_until, self._failures = at + window, deque()


def _what(token: str | None) -> str:
    return "no token" if token is None else "an invalid token"
