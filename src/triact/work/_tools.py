"""The work-session tools (session_start, session_checkpoint, session_status, a
session_end with its handoff, trust_*, reflection_*, conversation_*): their handlers and definitions
(their arguments and results are in ``_tool_args``). :func:`work_tools` gives them for
one :class:`WorkSessions`, which each handler takes as its first argument.

As the server requires (see :class:`triact.transport.Tool`), a tool that names a
session makes its one session call first.
"""

from __future__ import annotations

from functools import partial

import attrs

from ..sessions import Session
from ..transport import SessionArgs, SessionView, Tool, ToolEnv, ToolSet
from ._errors import (
    GitError,
    GitTimeoutError,
    NotAGitRepositoryError,
    WorkArgumentError,
    WorkDataError,
    WorkDirectoryError,
    WorkError,
    WorkLimitError,
    WorkStoreError,
)
from ._handoff import render_handoff
from ._records import Handoff, StoredExcerpt, StoredReflection
from ._reports import TrustState
from ._rooted import rooted_tools
from ._tool_args import (
    CheckpointArgs,
    CheckpointResult,
    ConversationSaveArgs,
    EndArgs,
    EndResult,
    ReflectionSearchArgs,
    ReflectionStoreArgs,
    SearchResult,
    StartArgs,
    StartResult,
    StatusResult,
    TrustGrantArgs,
    TrustRevokeArgs,
)
from ._work import WorkSessions

# -- handlers --------------------------------------------------------------------------


def _markdown(handoff: Handoff | None) -> str | None:
    return None if handoff is None else render_handoff(handoff)


async def start(work: WorkSessions, env: ToolEnv, args: StartArgs) -> StartResult:
    started = await work.start(
        args.working_directory,
        project=args.project,
        token=args.token,
        bind_client=args.bind_client,
        client_id=args.client_id,
        principal=env.principal,
    )
    session = started.session
    if started.created:
        env.session_created(session, args.bind_client)
    report = started.report
    return StartResult(
        session.id, session.token, started.created, report, _markdown(report.previous_handoff)
    )


async def status(
    work: WorkSessions, env: ToolEnv, session: Session, args: SessionArgs
) -> StatusResult:
    report = await work.status(session)
    return StatusResult(session.id, report, _markdown(report.previous_handoff))


async def checkpoint(
    work: WorkSessions, env: ToolEnv, session: Session, args: CheckpointArgs
) -> CheckpointResult:
    point = await work.checkpoint(session, args.note, commit=args.commit)
    return CheckpointResult(session.id, point)


async def end(work: WorkSessions, env: ToolEnv, session: Session, args: EndArgs) -> EndResult:
    ended = await work.end(session, write_handoff=args.write_handoff)
    final = ended.final
    env.session_gone(final.id)
    return EndResult(
        final.id,
        True,
        SessionView.of(final),
        ended.handoff,
        render_handoff(ended.handoff),
        ended.stored,
        ended.file_error,
        ended.store_error,
    )


async def trust_grant(
    work: WorkSessions, env: ToolEnv, session: Session, args: TrustGrantArgs
) -> TrustState:
    return await work.grant(session, args.operation, expires_in=args.expires_in)


async def trust_revoke(
    work: WorkSessions, env: ToolEnv, session: Session, args: TrustRevokeArgs
) -> TrustState:
    return await work.revoke(session, args.operation)


async def trust_list(
    work: WorkSessions, env: ToolEnv, session: Session, args: SessionArgs
) -> TrustState:
    return await work.trusted(session)


async def reflection_store(
    work: WorkSessions, env: ToolEnv, args: ReflectionStoreArgs
) -> StoredReflection:
    return await work.store_reflection(
        args.content, tags=args.tags or (), project=args.project, principal=env.principal
    )


async def reflection_search(
    work: WorkSessions, env: ToolEnv, args: ReflectionSearchArgs
) -> SearchResult:
    found = await work.search_reflections(
        args.query,
        project=args.project,
        tags=args.tags or (),
        limit=args.limit,
        principal=env.principal,
    )
    return SearchResult.of(found)


async def conversation_save(
    work: WorkSessions, env: ToolEnv, args: ConversationSaveArgs
) -> StoredExcerpt:
    return await work.save_conversation(
        args.content, tags=args.tags or (), project=args.project, principal=env.principal
    )


async def conversation_search(
    work: WorkSessions, env: ToolEnv, args: ReflectionSearchArgs
) -> SearchResult:
    found = await work.search_conversations(
        args.query,
        project=args.project,
        tags=args.tags or (),
        limit=args.limit,
        principal=env.principal,
    )
    return SearchResult.of(found)


# -- definitions -----------------------------------------------------------------------

_SESSION_ERRORS = "Errors: not_found, unauthorized, busy."

#: The error codes of the work layer's errors (some are the session tools' too).
WORK_ERROR_CODES = tuple(
    dict.fromkeys(
        kind.code
        for kind in (
            WorkDirectoryError,
            WorkArgumentError,
            WorkLimitError,
            NotAGitRepositoryError,
            GitError,
            GitTimeoutError,
            WorkDataError,
            WorkStoreError,
            WorkError,
        )
    )
)

# Each run takes the WorkSessions first: work_tools binds it.
_TOOLS: tuple[Tool, ...] = (
    Tool(
        "session_start",
        "Start or resume a work session",
        "Start work in a directory: resumes that directory's live session, or creates one. "
        "Reports the project's state (git repository?, branch, HEAD, uncommitted files), the "
        "session's checkpoints and trusted operations, and the handoff the previous session "
        "in this directory left (the caller's own: with bearer tokens, each principal has its "
        "own sessions and handoffs per directory). Use the returned session_id with the other "
        "tools. "
        "Errors: invalid_arguments (directory missing, relative or not allowed), "
        "unauthorized (the directory's live session is bound: pass its token).",
        StartArgs,
        StartResult,
        "none",
        start,
    ),
    Tool(
        "session_checkpoint",
        "Record a checkpoint",
        "Record a checkpoint in the session: the time, a note, and git's HEAD, branch and "
        "uncommitted files. With commit: true, first commit every change in the working "
        "directory as a checkpoint commit. Errors: not_a_git_repository (commit: true "
        "outside a git repository), git_failed, git_timeout, invalid_arguments; nothing is "
        "recorded then. If the commit was made and recording the checkpoint then fails "
        "(limit_exceeded, store_error, ...), the commit stays: the error says so and has "
        "its hash in commit. " + _SESSION_ERRORS,
        CheckpointArgs,
        CheckpointResult,
        "required",
        checkpoint,
    ),
    Tool(
        "session_end",
        "End a session",
        "End the session: it is removed and its final state returned, with a handoff "
        "(checkpoints, threads, analyses, requests, errors, git state) kept for the next "
        "session_start in its directory; with write_handoff: true also written as Markdown "
        "in the directory. Later calls naming it fail with code 'not_found'.",
        EndArgs,
        EndResult,
        "required",
        end,
        destructive=True,
    ),
    Tool(
        "session_status",
        "Work session status",
        "The same report as session_start (project and git state, checkpoints, trusted "
        "operations, previous handoff), changing nothing. " + _SESSION_ERRORS,
        SessionArgs,
        StatusResult,
        "required",
        status,
        read_only=True,
    ),
    Tool(
        "trust_grant",
        "Trust an operation",
        "Record, for this session (its client binding, when bound), that the user said an "
        "operation needs no further confirmation, until revoked or for expires_in seconds. "
        "A grant is a note the client keeps about itself, not an authorization: triact "
        "does not know the user, cannot check that they approved anything, and permits "
        "or refuses nothing because of a grant (any caller holding the session may "
        "grant). Granting again replaces the expiry. Returns the operations trusted now. "
        + _SESSION_ERRORS,
        TrustGrantArgs,
        TrustState,
        "required",
        trust_grant,
    ),
    Tool(
        "trust_revoke",
        "Revoke a trusted operation",
        "Stop trusting an operation; 'changed' says whether it was trusted. Returns the "
        "operations trusted now. " + _SESSION_ERRORS,
        TrustRevokeArgs,
        TrustState,
        "required",
        trust_revoke,
        destructive=True,
        idempotent=True,
    ),
    Tool(
        "trust_list",
        "List trusted operations",
        "The operations this session (its client binding, when bound) trusts now, with "
        "when each was granted and when it expires: notes the client recorded with "
        "trust_grant, not authorizations from the user. " + _SESSION_ERRORS,
        SessionArgs,
        TrustState,
        "required",
        trust_list,
        read_only=True,
        idempotent=True,
    ),
    Tool(
        "reflection_store",
        "Store a reflection",
        "Keep a reflection (a lesson, a decision, an observation) to search later, with "
        "tags and a project, as the caller's (with bearer tokens, only its principal finds "
        "it). Each project keeps its newest 1000 (configurable); the oldest "
        "are dropped. With search by meaning on, its embedding is made before it returns "
        "('embedded'). Errors: invalid_arguments (too long, too many tags).",
        ReflectionStoreArgs,
        StoredReflection,
        "none",
        reflection_store,
    ),
    Tool(
        "reflection_search",
        "Search reflections",
        "Find the caller's stored reflections (with bearer tokens, its principal's), best "
        "match first (newest first among equal matches), "
        "optionally of one project and with given tags. 'method' says what ranked them: "
        "'hybrid' (words and meaning, so a reflection that says it in other words is "
        "found too; recent ones rank a little higher), or words alone: 'fts5-bm25' "
        "(SQLite store), 'redis-bm25' (Redis store) or 'text-match' (memory store).",
        ReflectionSearchArgs,
        SearchResult,
        "none",
        reflection_search,
        read_only=True,
        idempotent=True,
    ),
    Tool(
        "conversation_save",
        "Save a conversation excerpt",
        "Keep an excerpt of this conversation (what was asked and answered, what was "
        "decided and why) to search later, with tags and a project, as the caller's (with "
        "bearer tokens, only its principal finds it). Each project keeps its "
        "newest 1000 (configurable); the oldest are dropped. Errors: invalid_arguments "
        "(too long, too many tags).",
        ConversationSaveArgs,
        StoredExcerpt,
        "none",
        conversation_save,
    ),
    Tool(
        "conversation_search",
        "Search conversation excerpts",
        "Find the caller's saved conversation excerpts (with bearer tokens, its "
        "principal's), ranked as reflection_search ranks reflections "
        "('method' says how: 'hybrid', 'fts5-bm25', 'redis-bm25' or 'text-match').",
        ReflectionSearchArgs,
        SearchResult,
        "none",
        conversation_search,
        read_only=True,
        idempotent=True,
    ),
)


def work_tools(work: WorkSessions) -> ToolSet:
    """The work tools acting through ``work``: combine them with the session tools,
    ``SESSION_TOOLS | work_tools(work)``, to serve both. Three replace session tools
    in their place: session_end, which also leaves a handoff, and session_create and
    session_set_working_directory, which check a working directory against the allowed
    roots when it is set."""
    tools = (attrs.evolve(tool, run=partial(tool.run, work)) for tool in _TOOLS)
    return ToolSet((*rooted_tools(work), *tools), WORK_ERROR_CODES)
