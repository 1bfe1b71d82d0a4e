"""What the tools return (``structuredContent``), as attrs classes: their output schemas
are derived from these, and cattrs turns them into JSON."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs

from .._writable import writable_twin
from ..sessions import (
    AnalysisRecord,
    ManagerStats,
    RequestRecord,
    SecurityEvent,
    SessionMetrics,
    SessionState,
    SessionStats,
    Thread,
)


@attrs.frozen
class SessionView:
    """A session's state as the tools show it: everything but the token's HMAC."""

    session_id: str
    version: int = attrs.field(
        metadata={"description": "Incremented by exactly 1 by every committed change."}
    )
    created_at: float = attrs.field(metadata={"description": "Seconds since the epoch."})
    last_used: float = attrs.field(
        metadata={"description": "Seconds since the epoch of the last committed change."}
    )
    topic: str | None
    working_directory: str | None
    config_path: str | None
    project_id: str | None
    bound: bool = attrs.field(metadata={"description": "True if calls need the session's token."})
    data: Mapping[str, Any] = attrs.field(
        metadata={"description": "The session's application data (a JSON object)."}
    )
    metadata: Mapping[str, Any]
    threads: tuple[Thread, ...]
    analyses: tuple[AnalysisRecord, ...]
    metrics: SessionMetrics
    security_events: tuple[SecurityEvent, ...]
    active_requests: tuple[RequestRecord, ...]
    completed_requests: tuple[RequestRecord, ...]

    @classmethod
    def of(cls, state: SessionState) -> SessionView:
        return cls(
            session_id=state.id,
            version=state.version,
            created_at=state.created_at,
            last_used=state.last_used,
            topic=state.topic,
            working_directory=state.working_directory,
            config_path=state.config_path,
            project_id=state.project_id,
            bound=state.client_binding is not None,
            data=state.data,
            metadata=state.metadata,
            threads=state.threads,
            analyses=state.analyses,
            metrics=state.metrics,
            security_events=state.security_events,
            active_requests=state.active_requests,
            completed_requests=state.completed_requests,
        )


@attrs.frozen
class CreateResult:
    session_id: str
    token: str | None = attrs.field(
        metadata={
            "description": "Only for bind_client=true: pass it as 'token' on every call to "
            "this session. It is shown only here."
        }
    )
    session: SessionView


@attrs.frozen
class GetResult:
    session: SessionView


@attrs.frozen
class UpdateResult:
    session_id: str
    version: int
    data: Mapping[str, Any]


_new = object.__new__
_WritableUpdateResult = writable_twin(UpdateResult)


def update_result(session_id: str, version: int, data: Mapping[str, Any]) -> UpdateResult:
    """``UpdateResult(session_id, version, data)``, made without attrs' frozen
    ``__init__`` (its three ``object.__setattr__`` calls), as a writable twin
    (:func:`~triact._writable.writable_twin`)."""
    made = _new(_WritableUpdateResult)
    made.session_id = session_id
    made.version = version
    made.data = data
    made.__class__ = UpdateResult
    return made  # type: ignore[no-any-return]


@attrs.frozen
class WorkingDirectoryResult:
    session_id: str
    version: int
    working_directory: str | None


@attrs.frozen
class ThreadResult:
    session_id: str
    version: int
    thread: Thread
    thread_count: int


@attrs.frozen
class AnalysisResult:
    session_id: str
    version: int
    analysis: AnalysisRecord
    analysis_count: int


@attrs.frozen
class EndResult:
    session_id: str
    ended: bool
    session: SessionView = attrs.field(metadata={"description": "The session's final state."})


@attrs.frozen
class SessionSummary:
    session_id: str
    topic: str | None
    version: int
    last_used: float
    bound: bool


@attrs.frozen
class ListResult:
    sessions: tuple[SessionSummary, ...]
    next_cursor: str | None = attrs.field(
        metadata={"description": "Pass as 'cursor' for the next page; null on the last."}
    )
    total: int = attrs.field(
        metadata={"description": "Sessions listed (all pages) when this page was read."}
    )
    default_session_id: str | None = attrs.field(
        metadata={"description": "This connection's default session, if created."}
    )


_SERVER_WIDE = (
    "; null for an authenticated caller (HTTP with bearer tokens): server-wide figures "
    "would tell one principal of the others' activity"
)


@attrs.frozen
class StatsResult:
    manager: ManagerStats | None = attrs.field(
        metadata={"description": "Manager-wide figures" + _SERVER_WIDE + "."}
    )
    session: SessionStats | None = attrs.field(
        metadata={"description": "The named (or default) session's figures, if any."}
    )


HealthStatus = Literal["ok", "shutting_down", "store_failed"]


@attrs.frozen
class HealthResult:
    status: HealthStatus
    server: str
    version: str
    uptime: float = attrs.field(metadata={"description": "Seconds since the server started."})
    sessions: int | None = attrs.field(
        metadata={"description": "Live sessions, in all" + _SERVER_WIDE + "."}
    )
    active_actors: int | None = attrs.field(
        metadata={"description": "Sessions in memory" + _SERVER_WIDE + "."}
    )
    store: str
    in_flight: int | None = attrs.field(
        metadata={"description": "Tool calls being handled now" + _SERVER_WIDE + "."}
    )
    protocol_versions: tuple[str, ...]
    max_line_bytes: int
    store_problem: str | None = attrs.field(
        default=None,
        metadata={"description": "What is wrong with the store (status store_failed)."},
    )
