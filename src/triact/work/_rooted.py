"""``session_create`` and ``session_set_working_directory`` as the work tools offer
them: a working directory is checked against ``WorkConfig.allowed_roots`` when it is
set, not only when a work call uses it, and a path outside the roots is refused
without a word on whether it exists. Otherwise they are the session tools."""

from __future__ import annotations

from typing import Any

import attrs
import trio

from ..transport import SESSION_TOOLS, Tool, ToolEnv, ToolError
from ._errors import WorkDirectoryError
from ._git import check_directory
from ._work import WorkSessions

_WHERE = (
    " It must be inside the server's allowed roots (triact serve --allowed-root), if it "
    "has any; a path outside them is refused (invalid_arguments), existing or not."
)


def _session_tool(name: str) -> Tool:
    tool = SESSION_TOOLS.get(name)
    assert tool is not None, name
    return tool


async def _check(work: WorkSessions, path: str, field: str) -> None:
    try:
        await trio.to_thread.run_sync(check_directory, path, work.config, field)
    except WorkDirectoryError as exc:
        raise ToolError(exc.code, str(exc)) from None


def rooted_tools(work: WorkSessions) -> tuple[Tool, ...]:
    """The two session tools that set a working directory, checking it against
    ``work``'s allowed roots before the session tool's own checks."""
    create, set_directory = (
        _session_tool("session_create"),
        _session_tool("session_set_working_directory"),
    )
    create_run, set_prepare = create.run, set_directory.prepare

    async def run_create(env: ToolEnv, args: Any) -> Any:
        # session_create names no session: its run may suspend before creating one.
        if args.working_directory is not None:
            await _check(work, args.working_directory, "working_directory")
        return await create_run(env, args)

    async def prepare_set(args: Any) -> Any:
        await _check(work, args.path, "path")
        return args if set_prepare is None else await set_prepare(args)

    return (
        attrs.evolve(create, run=run_create, description=create.description + _WHERE),
        attrs.evolve(
            set_directory, prepare=prepare_set, description=set_directory.description + _WHERE
        ),
    )
