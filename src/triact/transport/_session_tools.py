"""The session tools: their definitions (names, descriptions, schemas). What they do
is in ``_handlers``; their arguments in ``_args``, their results in ``_results``."""

from __future__ import annotations

from . import _args as args
from . import _handlers as handlers
from . import _results as results
from ._tools import ERROR_CODES, Tool, ToolSet

_EXPIRY = "Sessions expire after a period without calls (2 hours unless configured)."

#: The session tools, in their tools/list order. They act on sessions only (nothing
#: outside the session store): an embedder offering these offers nothing more.
SESSION_TOOLS = ToolSet(
    (
        Tool(
            "session_create",
            "Create a session",
            "Create a new session and return its session_id (and, with bind_client, its "
            "token). Pass the session_id to the other session_* tools. " + _EXPIRY,
            args.CreateArgs,
            results.CreateResult,
            "none",
            handlers.create,
        ),
        Tool(
            "session_get",
            "Read a session",
            "Return a session's whole state: topic, data, threads, analyses, metrics.",
            args.SessionArgs,
            results.GetResult,
            "required",
            handlers.get,
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
            args.UpdateArgs,
            results.UpdateResult,
            "required",
            handlers.update,
            destructive=True,
        ),
        Tool(
            "session_set_working_directory",
            "Set the working directory",
            "Set the session's working directory (an absolute path to an existing directory).",
            args.WorkingDirectoryArgs,
            results.WorkingDirectoryResult,
            "required",
            handlers.set_directory,
            prepare=handlers.check_path,
            idempotent=True,
        ),
        Tool(
            "session_get_working_directory",
            "Get the working directory",
            "Return the session's working directory (null if none is set).",
            args.SessionArgs,
            results.WorkingDirectoryResult,
            "required",
            handlers.get_directory,
            read_only=True,
            idempotent=True,
        ),
        Tool(
            "session_add_thread",
            "Add a thread",
            "Add a named thread (a perspective with its own system prompt and history) to "
            "the session. Names are unique within a session.",
            args.AddThreadArgs,
            results.ThreadResult,
            "required",
            handlers.add_thread,
        ),
        Tool(
            "session_record_analysis",
            "Record an analysis",
            "Record an analysis in the session: the prompt, the responses (by perspective "
            "or as a list) and how long it took. The oldest analyses are dropped past the "
            "configured bound.",
            args.RecordAnalysisArgs,
            results.AnalysisResult,
            "required",
            handlers.record_analysis,
        ),
        Tool(
            "session_end",
            "End a session",
            "End the session: it is removed and its final state returned. Later calls "
            "naming it fail with code 'not_found'.",
            args.SessionArgs,
            results.EndResult,
            "required",
            handlers.end,
            destructive=True,
        ),
        Tool(
            "session_list",
            "List sessions",
            "List the live sessions, oldest first, a page at a time (pass next_cursor as "
            "cursor for the next page).",
            args.ListArgs,
            results.ListResult,
            "none",
            handlers.list_sessions,
            read_only=True,
        ),
        Tool(
            "session_stats",
            "Session statistics",
            "Manager-wide figures (sessions, operations, error rate, latency percentiles; "
            "null for an authenticated caller) and, for a named session (or this "
            "connection's default one, if it exists), that session's figures.",
            args.SessionArgs,
            results.StatsResult,
            "optional",
            handlers.stats,
            read_only=True,
        ),
        Tool(
            "health_check",
            "Health check",
            "Report whether the server is up, with its version, uptime, session count, "
            "store and supported protocol versions.",
            args.NoArgs,
            results.HealthResult,
            "none",
            handlers.health,
            read_only=True,
            idempotent=True,
        ),
    ),
    ERROR_CODES,
)
