"""Figures a manager and its sessions report: counts, error rates, latency percentiles."""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs


def _percentile(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


@attrs.frozen
class LatencySummary:
    """Latency percentiles in seconds over recent calls (Trio clock)."""

    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    max: float = 0.0

    @classmethod
    def of(cls, samples: Sequence[float]) -> LatencySummary:
        ordered = sorted(samples)
        if not ordered:
            return cls()
        return cls(
            _percentile(ordered, 0.50),
            _percentile(ordered, 0.95),
            _percentile(ordered, 0.99),
            ordered[-1],
        )


@attrs.frozen
class SessionStats:
    """One session's figures, from :meth:`Session.stats`."""

    session_id: str
    version: int
    operations: int
    errors: int
    error_rate: float
    latency: LatencySummary
    threads: int
    analyses: int
    active_requests: int
    completed_requests: int
    failed_requests: int
    queued: int = 0  #: calls waiting in the session's mailbox when stats() was called


@attrs.frozen
class ManagerStats:
    """Manager-wide figures, from :meth:`SessionManager.stats`."""

    sessions: int  #: live sessions (in memory or passivated)
    active_actors: int  #: sessions whose actor is in memory
    created: int
    expired: int
    ended: int
    removed: int
    passivated: int
    activations: int
    operations: int
    errors: int
    error_rate: float
    busy_rejections: int
    security_failures: int
    latency: LatencySummary
    store: str
