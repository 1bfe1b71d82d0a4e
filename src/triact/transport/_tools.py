"""The session tools: their definitions (names, descriptions, schemas), their results
and their errors. What they do is in ``_handlers``."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import attrs

from ..sessions import (
    SessionBusyError,
    SessionClosedError,
    SessionConcurrencyError,
    SessionError,
    SessionLimitError,
    SessionNotFoundError,
    SessionRateLimitError,
    SessionSecurityError,
    SessionStoreError,
    SessionThrottledError,
)
from . import _args as a
from . import _handlers as h
from . import _results as r
from ._jsonrpc import RequestId, encode_json
from ._protocol import STATELESS_MEMBERS
from ._schema import object_schema

SessionUse = Literal["none", "required", "optional"]


@attrs.frozen
class Tool:
    """One tool: its definition, and the functions that carry it out (``_handlers``)."""

    name: str
    title: str
    description: str
    arguments: type[Any]
    result: type[Any]
    #: "required": acts on a session (the default one if session_id is left out);
    #: "optional": uses the named (or existing default) session if there is one.
    session: SessionUse
    run: Callable[..., Awaitable[Any]]
    prepare: Callable[[Any], Awaitable[Any]] | None = None
    read_only: bool = False
    destructive: bool = False
    idempotent: bool = False

    def definition(self, *, stateless: bool) -> dict[str, Any]:
        """The tools/list entry; under the stateless revision session_id is required
        (no connection-scoped default session there)."""
        input_schema = object_schema(self.arguments, closed=True, all_required=False)
        if stateless and self.session == "required":
            properties = input_schema["properties"]
            properties["session_id"] = {**properties["session_id"], "type": "string"}
            input_schema["required"] = ["session_id", *input_schema.get("required", ())]
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "inputSchema": input_schema,
            "outputSchema": object_schema(self.result, closed=False, all_required=True),
            "annotations": {
                "title": self.title,
                "readOnlyHint": self.read_only,
                "destructiveHint": self.destructive,
                "idempotentHint": self.idempotent,
                "openWorldHint": False,
            },
        }


# -- errors ----------------------------------------------------------------------------

#: Stable machine-readable codes of tool execution errors, by exception (first match).
_ERROR_CODES: tuple[tuple[type[Exception], str], ...] = (
    (SessionNotFoundError, "not_found"),
    (SessionSecurityError, "unauthorized"),
    (SessionConcurrencyError, "conflict"),
    (SessionRateLimitError, "rate_limited"),
    (SessionBusyError, "busy"),
    (SessionLimitError, "limit_exceeded"),
    (SessionClosedError, "closed"),
    (SessionStoreError, "store_error"),
    (SessionError, "session_error"),
    (ValueError, "invalid_arguments"),
    (TypeError, "invalid_arguments"),
)
_SESSION_ERROR_CODES = tuple(dict.fromkeys(code for _, code in _ERROR_CODES))


class ToolError(Exception):
    """A tool execution error with its stable code, reported as an ``isError`` result."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def payload(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.details}}


def domain_error(exc: Exception) -> ToolError | None:
    """The tool error that reports ``exc``, or None if it is not a domain error (a bug)."""
    code = next((code for kind, code in _ERROR_CODES if isinstance(exc, kind)), None)
    if code is None:
        return None
    details: dict[str, Any] = {}
    if isinstance(exc, SessionConcurrencyError):
        details = {"expected_version": exc.expected, "actual_version": exc.actual}
    elif isinstance(exc, SessionRateLimitError | SessionThrottledError):
        details = {"retry_after": exc.retry_after}
    return ToolError(code, str(exc), **details)


class ToolResult:
    """A CallToolResult before encoding: its structured content, and whether it reports
    an error; its text rendering is made when it is encoded (:meth:`line`)."""

    __slots__ = ("error", "structured")

    def __init__(self, structured: dict[str, Any], *, error: bool = False) -> None:
        self.structured = structured
        self.error = error

    @property
    def code(self) -> str | None:
        """The error's stable code; None for a success."""
        return self.structured["error"]["code"] if self.error else None

    def text(self) -> str:
        """The text block: ``"<code>: <message>"`` for an error, else the structured
        content as compact JSON."""
        if self.error:
            failure = self.structured["error"]
            return f"{failure['code']}: {failure['message']}"
        return json.dumps(self.structured, ensure_ascii=False, separators=(",", ":"))

    def line(self, request_id: RequestId, *, stateless: bool) -> bytes:
        """The response carrying this result, shaped for the request's era: encoded as
        a whole message would be, but with the structured content encoded once and
        reused for the text block when they are the same JSON.

        Raises ValueError or TypeError if the content holds a value JSON cannot carry.
        """
        structured = encode_json(self.structured)
        if self.error or "\\u" in structured:  # the text differs: readable characters
            text = encode_json(self.text())
        else:
            text = encode_json(structured)
        id_json = str(request_id) if type(request_id) is int else encode_json(request_id)
        return (
            f'{{"jsonrpc":"2.0","id":{id_json},"result":{{"content":'
            f'[{{"type":"text","text":{text}}}],"structuredContent":{structured},'
            f'"isError":{"true" if self.error else "false"}'
            f"{STATELESS_MEMBERS if stateless else ''}}}}}\n"
        ).encode()


def success(value: Any) -> ToolResult:
    return ToolResult(a.converter.unstructure(value))


def failure(error: ToolError) -> ToolResult:
    return ToolResult(error.payload(), error=True)


_EXPIRY = "Sessions expire after a period without calls (2 hours unless configured)."

_SESSION_TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool(
            "session_create",
            "Create a session",
            "Create a new session and return its session_id (and, with bind_client, its "
            "token). Pass the session_id to the other session_* tools. " + _EXPIRY,
            a.CreateArgs,
            r.CreateResult,
            "none",
            h.create,
        ),
        Tool(
            "session_get",
            "Read a session",
            "Return a session's whole state: topic, data, threads, analyses, metrics.",
            a.SessionArgs,
            r.GetResult,
            "required",
            h.get,
            read_only=True,
            idempotent=True,
        ),
        Tool(
            "session_update",
            "Update session data",
            "Change the session's data object atomically: set keys to JSON values, "
            "increment numeric keys, delete keys. All or nothing; the version goes up by "
            "1. With expected_version the update applies only at that version (else "
            "error code 'conflict': read the session again and retry).",
            a.UpdateArgs,
            r.UpdateResult,
            "required",
            h.update,
            destructive=True,
        ),
        Tool(
            "session_set_working_directory",
            "Set the working directory",
            "Set the session's working directory (an absolute path to an existing directory).",
            a.WorkingDirectoryArgs,
            r.WorkingDirectoryResult,
            "required",
            h.set_directory,
            prepare=h.check_path,
            idempotent=True,
        ),
        Tool(
            "session_get_working_directory",
            "Get the working directory",
            "Return the session's working directory (null if none is set).",
            a.SessionArgs,
            r.WorkingDirectoryResult,
            "required",
            h.get_directory,
            read_only=True,
            idempotent=True,
        ),
        Tool(
            "session_add_thread",
            "Add a thread",
            "Add a named thread (a perspective with its own system prompt and history) to "
            "the session. Names are unique within a session.",
            a.AddThreadArgs,
            r.ThreadResult,
            "required",
            h.add_thread,
        ),
        Tool(
            "session_record_analysis",
            "Record an analysis",
            "Record an analysis in the session: the prompt, the responses (by perspective "
            "or as a list) and how long it took. The oldest analyses are dropped past the "
            "configured bound.",
            a.RecordAnalysisArgs,
            r.AnalysisResult,
            "required",
            h.record_analysis,
        ),
        # session_end: the work layer's (with its handoff), in this place; see below.
        Tool(
            "session_list",
            "List sessions",
            "List the live sessions, oldest first, a page at a time (pass next_cursor as "
            "cursor for the next page).",
            a.ListArgs,
            r.ListResult,
            "none",
            h.list_sessions,
            read_only=True,
        ),
        Tool(
            "session_stats",
            "Session statistics",
            "Manager-wide figures (sessions, operations, error rate, latency percentiles) "
            "and, for a named session (or this connection's default one, if it exists), "
            "that session's figures.",
            a.SessionArgs,
            r.StatsResult,
            "optional",
            h.stats,
            read_only=True,
        ),
        Tool(
            "health_check",
            "Health check",
            "Report whether the server is up, with its version, uptime, session count, "
            "store and supported protocol versions.",
            a.NoArgs,
            r.HealthResult,
            "none",
            h.health,
            read_only=True,
            idempotent=True,
        ),
    )
}


def tool_definitions(*, stateless: bool) -> list[dict[str, Any]]:
    """The tools/list entries, in a fixed order."""
    return [tool.definition(stateless=stateless) for tool in TOOLS.values()]


# The work-session tools (triact.work) are built on Tool in _work_tools, so they are
# imported last.
from ._work_tools import WORK_ERROR_CODES, WORK_TOOLS  # noqa: E402


def _in_order() -> dict[str, Tool]:
    work = {tool.name: tool for tool in WORK_TOOLS}
    tools: dict[str, Tool] = {}
    for name, tool in _SESSION_TOOLS.items():
        if name == "session_list":  # session_end (the work layer's) goes before it
            tools["session_end"] = work.pop("session_end")
        tools[name] = tool
    return tools | work


#: Every tool by name, in the order tools/list gives them.
TOOLS = _in_order()
#: Every error code a tool result can carry (docs/mcp.md describes each).
ERROR_CODES = tuple(dict.fromkeys((*_SESSION_ERROR_CODES, *WORK_ERROR_CODES)))
