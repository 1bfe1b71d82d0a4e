"""The work lifecycle as MCP prompts (start, checkpoint, end with a handoff, recall):
templates that a client shows as commands, each telling the model which work tools to
call and what to do with their results. :func:`work_prompts` gives them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Literal

from ..transport import Prompt, PromptArgument, PromptSet

Role = Literal["user", "assistant"]


def _quoted(value: str) -> str:
    # Arguments are the user's text, placed as JSON-like strings so that a value with
    # quotes or newlines cannot pass for the instructions around it.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _start(arguments: Mapping[str, str]) -> Iterator[tuple[Role, str]]:
    directory = _quoted(arguments["working_directory"])
    project = arguments.get("project")
    call = f"working_directory {directory}"
    if project:
        call += f" and project {_quoted(project)}"
    task = arguments.get("task")
    lines = [
        f"Start a work session: call the session_start tool with {call}.",
        "Keep its session_id (and token, if one is returned) for the other session tools.",
        "Read its report: the git state (branch, HEAD, uncommitted files), the last "
        "checkpoint, the trusted operations, and handoff_markdown, the handoff the "
        "previous session in this directory left. Tell me in a few lines where the work "
        "stands and what the previous session said to do next.",
    ]
    if task:
        lines.append(
            f"The task now is {_quoted(task)}: call reflection_search with a short "
            "query about it, and say which earlier lessons or decisions apply."
        )
    yield "user", "\n".join(lines)


def _checkpoint(arguments: Mapping[str, str]) -> Iterator[tuple[Role, str]]:
    session = _quoted(arguments["session_id"])
    note = arguments.get("note")
    lines = [
        f"Record a checkpoint of work session {session}: call session_checkpoint with "
        "session_id "
        + session
        + (
            f" and note {_quoted(note)}."
            if note
            else " and a one-line note saying what was done since the last checkpoint "
            "and what is next."
        ),
        "If a lesson was learned or a decision made since the last checkpoint, keep it "
        "with reflection_store (one reflection each, short, with tags), so that a later "
        "session can find it.",
        "Then report the checkpoint's number, HEAD and uncommitted files.",
    ]
    yield "user", "\n".join(lines)


def _end(arguments: Mapping[str, str]) -> Iterator[tuple[Role, str]]:
    session = _quoted(arguments["session_id"])
    write = arguments.get("write_handoff", "").strip().lower() in ("1", "true", "yes")
    lines = [
        f"End work session {session} and leave a handoff for whoever starts next.",
        "1. Keep what the next session should know and git does not say: each lesson or "
        "decision of this session with reflection_store (short, tagged), and the "
        "exchanges worth finding again (what was asked, what was decided and why) with "
        "conversation_save.",
        "2. Call session_end with session_id "
        + session
        + (" and write_handoff true." if write else "."),
        "3. Show me handoff_markdown from its result and say in two lines what the next "
        "session should do first.",
    ]
    yield "user", "\n".join(lines)


def _recall(arguments: Mapping[str, str]) -> Iterator[tuple[Role, str]]:
    query = _quoted(arguments["query"])
    project = arguments.get("project")
    scope = f" with project {_quoted(project)}" if project else ""
    lines = [
        f"Recall what was learned about {query}: call reflection_search and "
        f"conversation_search with query {query}{scope}.",
        "Both say in 'method' how they ranked: 'hybrid' matched meaning as well as "
        "words; otherwise only words matched, so if nothing fits try again with other "
        "words.",
        "Summarize what applies now, citing each reflection or excerpt by its id, newest "
        "first where they disagree.",
    ]
    yield "user", "\n".join(lines)


_SESSION_ID = PromptArgument("session_id", "The work session's id (from session_start).", True)

_PROMPTS = (
    Prompt(
        "start",
        "Start work",
        "Start or resume the work session of a directory, read its handoff and git state, "
        "and recall what applies to the task.",
        (
            PromptArgument("working_directory", "An absolute path: the project's directory.", True),
            PromptArgument("project", "A project name to record in the session."),
            PromptArgument("task", "What you are about to work on."),
        ),
        _start,
    ),
    Prompt(
        "checkpoint",
        "Checkpoint",
        "Record a checkpoint of the work session (git state and a note) and keep the "
        "lessons learned since the last one.",
        (_SESSION_ID, PromptArgument("note", "What was done or is about to be tried.")),
        _checkpoint,
    ),
    Prompt(
        "end",
        "End work with a handoff",
        "Keep this session's lessons and key exchanges, end the work session, and show "
        "the handoff left for the next one.",
        (
            _SESSION_ID,
            PromptArgument(
                "write_handoff", "'true' to also write the handoff as Markdown in the directory."
            ),
        ),
        _end,
    ),
    Prompt(
        "recall",
        "Recall",
        "Search the reflections and conversation excerpts kept by earlier sessions, by "
        "meaning where the server can, and summarize what applies.",
        (
            PromptArgument("query", "What to recall, in your own words.", True),
            PromptArgument("project", "Only this project's (omit: every project's)."),
        ),
        _recall,
    ),
)


def work_prompts() -> PromptSet:
    """The work lifecycle's prompts (start, checkpoint, end, recall), to serve beside
    :func:`work_tools`: ``McpServer(manager, tools=..., prompts=work_prompts())``."""
    return PromptSet(_PROMPTS)
