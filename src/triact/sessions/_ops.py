"""The messages a session actor handles, and the pure state transforms behind them.

Every operation that changes a session is a function ``SessionState -> SessionState``
applied inside the session's actor; the actor stamps the result with the next
version and commits it whole (I2, I3, docs/architecture.md).
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

import attrs
import trio

from ._config import SessionConfig
from ._errors import RequestNotFoundError, SessionArgumentError, SessionLimitError, quoted
from ._state import (
    AnalysisRecord,
    RequestRecord,
    SessionState,
    Thread,
    ThreadMessage,
)

Transform = Callable[[SessionState], "SessionState | Awaitable[SessionState]"]


class Change:
    """Apply ``transform`` to the current state and commit the result (with
    ``expected_version``: only on that version).

    Made only by ``Session.update``, as ``Change()`` with both fields set there: a
    class without an ``__init__`` of its own is made in C, without a frame or the
    argument checks of ``object.__new__(Change)``, on every update's path."""

    __slots__ = ("expected_version", "transform")
    transform: Transform
    expected_version: int | None


class Read:
    """Return the current state (with live metrics); changes nothing."""

    __slots__ = ()


class Validate:
    """Check that the session is ``principal``'s (else it is not found), then a
    client token against the session's binding."""

    __slots__ = ("principal", "token", "tool_name")

    def __init__(self, token: str | None, tool_name: str | None, principal: str | None) -> None:
        self.token = token
        self.tool_name = tool_name
        self.principal = principal


class Authorized:
    """``op``, after the checks of :class:`Validate`, in the same message."""

    __slots__ = ("op", "principal", "token", "tool_name")

    def __init__(
        self,
        op: Change | Read | End,
        token: str | None,
        tool_name: str | None,
        principal: str | None,
    ) -> None:
        self.op = op
        self.token = token
        self.tool_name = tool_name
        self.principal = principal


class End:
    """End the session: its final state is returned and it is removed."""

    __slots__ = ("reason",)

    def __init__(self, reason: Literal["ended", "removed"]) -> None:
        self.reason = reason


Op = Change | Read | Validate | End | Authorized
READ = Read()


def _bounded(items: tuple[Any, ...], limit: int) -> tuple[Any, ...]:
    return items if len(items) <= limit else items[len(items) - limit :]


def check_working_directory(path: str | os.PathLike[str]) -> str:
    """An absolute path to an existing directory, as str; SessionArgumentError (a
    ValueError) otherwise."""
    text = os.fspath(path)
    if not isinstance(text, str) or not os.path.isabs(text):
        raise SessionArgumentError(f"working_directory must be an absolute path, got {text!r}")
    if not os.path.isdir(text):
        raise SessionArgumentError(
            f"working_directory {text!r} does not exist or is not a directory"
        )
    return os.path.normpath(text)


def set_working_directory(path: str | os.PathLike[str]) -> Transform:
    """Checked inside the actor (in a worker thread: it touches the disk), so that the
    change keeps its place in the session's order of calls."""

    async def transform(state: SessionState) -> SessionState:
        checked = await trio.to_thread.run_sync(check_working_directory, path)
        return attrs.evolve(state, working_directory=checked)

    return transform


def add_thread(
    config: SessionConfig, now: float, name: str, system_prompt: str | None
) -> Transform:
    if not isinstance(name, str) or not name.strip():
        raise SessionArgumentError(f"thread name must be a non-empty string, got {name!r}")

    def transform(state: SessionState) -> SessionState:
        if state.thread(name) is not None:
            raise SessionArgumentError(f"session {state.id!r} already has a thread named {name!r}")
        threads = (*state.threads, Thread(name, now, system_prompt))
        return attrs.evolve(state, threads=_bounded(threads, config.max_threads))

    return transform


def add_thread_message(
    config: SessionConfig, now: float, name: str, role: str, content: str
) -> Transform:
    def transform(state: SessionState) -> SessionState:
        thread = state.thread(name)
        if thread is None:
            raise SessionArgumentError(f"session {state.id!r} has no thread named {name!r}")
        messages = (*thread.messages, ThreadMessage(role, content, now))
        updated = attrs.evolve(thread, messages=_bounded(messages, config.max_thread_messages))
        threads = tuple(updated if t is thread else t for t in state.threads)
        return attrs.evolve(state, threads=threads)

    return transform


def record_analysis(
    config: SessionConfig,
    now: float,
    prompt: str,
    responses: Mapping[str, str] | Sequence[str],
    response_time: float | None,
) -> Transform:
    if isinstance(responses, Mapping):
        by_name = {str(k): str(v) for k, v in responses.items()}
    elif isinstance(responses, Sequence) and not isinstance(responses, str):
        by_name = {f"response_{i}": str(r) for i, r in enumerate(responses, 1)}
    else:
        raise TypeError(
            f"responses must be a mapping or a list of strings, got {type(responses).__name__}"
        )
    if response_time is not None:
        if not isinstance(response_time, (int, float)) or isinstance(response_time, bool):
            raise TypeError(
                "response_time must be a number of seconds or None, "
                f"got {type(response_time).__name__}"
            )
        if not 0 <= response_time <= sys.float_info.max:  # (an int past it: no float)
            raise SessionArgumentError(
                f"response_time must be >= 0 seconds and finite, got {response_time!r}"
            )
    record = AnalysisRecord(str(prompt), by_name, now, response_time)

    def transform(state: SessionState) -> SessionState:
        analyses = _bounded((*state.analyses, record), config.max_analyses)
        return attrs.evolve(state, analyses=analyses)

    return transform


def begin_request(
    config: SessionConfig, now: float, conversation_id: str, tool_name: str | None
) -> Transform:
    if not isinstance(conversation_id, str):
        raise TypeError(f"conversation_id must be a string, got {type(conversation_id).__name__}")
    if tool_name is not None and not isinstance(tool_name, str):
        raise TypeError(f"tool_name must be a string or None, got {type(tool_name).__name__}")
    if not conversation_id or ":" in conversation_id:
        raise SessionArgumentError(
            f"conversation_id must be non-empty and contain no ':', got {quoted(conversation_id)}"
        )

    def transform(state: SessionState) -> SessionState:
        most = config.max_active_requests
        if len(state.active_requests) >= most:
            # (Unbounded, requests begun and never finished grew the state until every
            # change failed past max_state_bytes.)
            raise SessionLimitError(
                f"session {state.id!r} tracks its limit of {most} active requests "
                "(max_active_requests); complete or fail one first, nothing was begun"
            )
        counter = state.request_counter + 1
        request_id = (
            f"{state.id}:{conversation_id}:{counter}:{int(now * 1000)}:{secrets.token_hex(4)}"
        )
        record = RequestRecord(request_id, conversation_id, now, tool_name=tool_name)
        return attrs.evolve(
            state,
            request_counter=counter,
            active_requests=(*state.active_requests, record),
        )

    return transform


def finish_request(
    config: SessionConfig, now: float, request_id: str, error: str | None
) -> Transform:
    if not isinstance(request_id, str):
        raise TypeError(f"request_id must be a string, got {type(request_id).__name__}")

    def transform(state: SessionState) -> SessionState:
        for record in state.active_requests:
            if record.id == request_id:
                break
        else:
            raise RequestNotFoundError(
                f"session {state.id!r} has no active request {quoted(request_id)}"
            )
        done = attrs.evolve(
            record,
            status="failed" if error is not None else "completed",
            finished_at=now,
            error=error,
        )
        return attrs.evolve(
            state,
            active_requests=tuple(r for r in state.active_requests if r is not record),
            completed_requests=_bounded(
                (*state.completed_requests, done), config.max_completed_requests
            ),
        )

    return transform
