"""What each tool does with the sessions API.

A tool that names a session has a ``run(env, session, args)`` whose first suspension
is its one call to the session (an ask into the session's mailbox): the server relies
on this to issue the calls for one session in arrival order (see ``_lanes``). Work that
must suspend before that (checking a directory in a thread) goes in a ``prepare``
function, which runs before the call takes its turn.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
from collections.abc import Callable
from typing import Any, Protocol

import attrs
import trio

from .._version import __version__
from ..sessions import (
    IndexEntry,
    Session,
    SessionManager,
    SessionState,
)
from . import _args as arguments
from . import _results as results
from ._protocol import SUPPORTED_VERSIONS
from ._tools import InvalidArgumentsError


@attrs.frozen
class ServerHealth:
    """What the server says of itself in health_check."""

    #: Seconds since the connection's server started.
    uptime: float
    #: Tool calls in flight.
    in_flight: int
    #: Longest message accepted, in bytes.
    max_line_bytes: int
    #: True once the server has stopped taking calls.
    closing: bool


class ToolEnv(Protocol):
    """What the tools need from the server that runs them."""

    manager: SessionManager
    default_session_id: str | None
    #: The caller's principal (an authenticated transport's); None: unauthenticated.
    principal: str | None

    def session_created(self, session: Session, bound: bool) -> None: ...
    def session_gone(self, session_id: str) -> None: ...
    def health(self) -> ServerHealth: ...


async def create(env: ToolEnv, args: arguments.CreateArgs) -> results.CreateResult:
    session = await env.manager.create_session(
        args.topic,
        args.working_directory,
        args.metadata,
        args.bind_client,
        client_id=args.client_id,
        config_path=args.config_path,
        project_id=args.project_id,
        principal=env.principal,
    )
    env.session_created(session, args.bind_client)
    state = await session.snapshot()
    return results.CreateResult(session.id, session.token, results.SessionView.of(state))


async def get(env: ToolEnv, session: Session, args: arguments.SessionArgs) -> results.GetResult:
    return results.GetResult(results.SessionView.of(await session.snapshot()))


#: The data keys session_update may not touch: those of triact's own layers
#: (``triact.work``), which only their own calls change.
RESERVED_PREFIX = "triact."


#: What an update leaves out of set or increment (read only: a dict less per update).
_NONE: dict[str, Any] = {}


def updater(args: arguments.UpdateArgs) -> Callable[[SessionState], SessionState]:
    set_, increment, delete = args.set or _NONE, args.increment or _NONE, args.delete or ()
    named = [*set_, *increment, *delete]
    if not named:
        raise InvalidArgumentsError(
            "session_update needs at least one key in set, increment or delete"
        )
    for key in named:  # (a loop, not a comprehension: a frame less on every update)
        if key.startswith(RESERVED_PREFIX):
            reserved = sorted({key for key in named if key.startswith(RESERVED_PREFIX)})
            raise InvalidArgumentsError(
                f"data keys beginning with {RESERVED_PREFIX!r} are reserved for triact's "
                f"own layers (the work layer keeps checkpoints and trust grants there), so "
                f"session_update cannot set, increment or delete {reserved}; use another name"
            )
    if len(named) > 1 and len(set(named)) != len(named):
        twice = sorted({key for key in named if named.count(key) > 1})
        raise InvalidArgumentsError(
            f"keys {twice} appear more than once across set, increment and delete; "
            "name each key once"
        )

    def update(state: SessionState) -> SessionState:
        # with_data: one copy of the data and a slot-to-slot copy of the state, at
        # under half attrs.evolve's cost, in every session_update call. The keys of
        # set, increment and delete are distinct, so their order does not matter.
        data = state.data
        changes = dict(set_)
        for key, delta in increment.items():
            old = data.get(key, 0)
            if type(old) not in (int, float):
                raise InvalidArgumentsError(
                    f"session {state.id!r}: data[{key!r}] holds {type(old).__name__} "
                    f"{old!r}, which cannot be incremented; set it to a number first"
                )
            new = old + delta
            if not math.isfinite(new):
                raise InvalidArgumentsError(
                    f"session {state.id!r}: data[{key!r}] would overflow to {new}"
                )
            changes[key] = new
        if delete:
            state = state.without_data(*delete)
        return state.with_data(changes)

    return update


async def update(
    env: ToolEnv, session: Session, args: arguments.UpdateArgs
) -> results.UpdateResult:
    state = await session.update(updater(args), expected_version=args.expected_version)
    return results.update_result(state.id, state.version, state.data)


def check_directory(path: str) -> str:
    if not os.path.isabs(path):
        raise InvalidArgumentsError(f"path must be an absolute path, got {path!r}")
    if not os.path.isdir(path):
        raise InvalidArgumentsError(f"path {path!r} does not exist or is not a directory")
    return os.path.normpath(path)


async def check_path(args: arguments.WorkingDirectoryArgs) -> arguments.WorkingDirectoryArgs:
    return attrs.evolve(args, path=await trio.to_thread.run_sync(check_directory, args.path))


async def set_directory(
    env: ToolEnv, session: Session, args: arguments.WorkingDirectoryArgs
) -> results.WorkingDirectoryResult:
    # Not Session.set_working_directory: it checks the path in a thread before its
    # ask, which would let a later call to this session overtake this one.
    path = args.path
    state = await session.update(lambda state: attrs.evolve(state, working_directory=path))
    return results.WorkingDirectoryResult(state.id, state.version, state.working_directory)


async def get_directory(
    env: ToolEnv, session: Session, args: arguments.SessionArgs
) -> results.WorkingDirectoryResult:
    state = await session.snapshot()
    return results.WorkingDirectoryResult(state.id, state.version, state.working_directory)


async def add_thread(
    env: ToolEnv, session: Session, args: arguments.AddThreadArgs
) -> results.ThreadResult:
    state = await session.add_thread(args.name, args.system_prompt)
    thread = state.thread(args.name)
    assert thread is not None
    return results.ThreadResult(state.id, state.version, thread, len(state.threads))


async def record_analysis(
    env: ToolEnv, session: Session, args: arguments.RecordAnalysisArgs
) -> results.AnalysisResult:
    state = await session.record_analysis(args.prompt, args.responses, args.response_time)
    return results.AnalysisResult(state.id, state.version, state.analyses[-1], len(state.analyses))


async def end(env: ToolEnv, session: Session, args: arguments.SessionArgs) -> results.EndResult:
    final = await session.end()
    env.session_gone(final.id)
    return results.EndResult(final.id, True, results.SessionView.of(final))


def _encode_cursor(after: str, at: int) -> str:
    raw = json.dumps({"after": after, "at": at}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor_start(cursor: str, ids: list[str]) -> int:
    """Where the page after ``cursor`` starts; the last id shown wins over the offset
    (sessions that ended meanwhile shift offsets)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
        after, at = position["after"], position["at"]
        if type(after) is not str or type(at) is not int or at < 0:
            raise ValueError(cursor)  # caught below
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidArgumentsError(
            f"cursor {cursor!r} is not a next_cursor from session_list; "
            "leave it out to start from the first page"
        ) from None
    if 0 < at <= len(ids) and ids[at - 1] == after:
        return at
    try:
        return ids.index(after) + 1
    except ValueError:
        return min(at, len(ids))  # that session is gone: best effort


async def listable_sessions(env: ToolEnv, args: arguments.ListArgs) -> list[IndexEntry]:
    """The sessions session_list shows this caller: only those it may use, so that the
    others' ids, and their number, stay unknown to it: the sessions of the caller's
    principal (over stdio, and over HTTP without tokens, those of none), unbound or
    bound to a token the caller presents."""
    return await env.manager.usable_index(args.tokens or (), principal=env.principal)


async def list_sessions(env: ToolEnv, args: arguments.ListArgs) -> results.ListResult:
    """A page of :func:`listable_sessions`, from the index of their committed states
    (with a shared store, the store's pages: no state is loaded): listing is no call
    to the sessions, so it keeps none of them alive."""
    entries = await listable_sessions(env, args)
    ids = [entry.id for entry in entries]
    start = _cursor_start(args.cursor, ids) if args.cursor is not None else 0
    page = entries[start : start + args.limit]
    summaries = tuple(
        results.SessionSummary(
            entry.id, entry.topic, entry.version, entry.last_used, bool(entry.token_hmac)
        )
        for entry in page
    )
    end = start + len(page)
    next_cursor = _encode_cursor(page[-1].id, end) if page and end < len(ids) else None
    return results.ListResult(summaries, next_cursor, len(ids), env.default_session_id)


async def stats(
    env: ToolEnv, session: Session | None, args: arguments.SessionArgs
) -> results.StatsResult:
    """The session's figures, and the manager's for an unauthenticated caller only:
    those count every principal's sessions and calls, which one principal may not see
    (not even how many, or how busy)."""
    session_stats = await session.stats() if session is not None else None
    manager_stats = await env.manager.stats() if env.principal is None else None
    return results.StatsResult(manager_stats, session_stats)


async def health(env: ToolEnv, args: arguments.NoArgs) -> results.HealthResult:
    """Whether the server is up; its counts of sessions and calls (every principal's)
    for an unauthenticated caller only, as in :func:`stats`."""
    manager = env.manager
    manager_stats = await manager.stats()
    server = env.health()
    shown = env.principal is None
    store_problem = await manager.store.check()
    status: results.HealthStatus = "shutting_down" if server.closing else "ok"
    if store_problem is not None:
        status = "store_failed"
    return results.HealthResult(
        status,
        "triact",
        __version__,
        server.uptime,
        manager_stats.sessions if shown else None,
        manager_stats.active_actors if shown else None,
        manager_stats.store,
        server.in_flight if shown else None,
        SUPPORTED_VERSIONS,
        server.max_line_bytes,
        store_problem,
    )
