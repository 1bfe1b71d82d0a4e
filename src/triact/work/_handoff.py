"""Handoffs: the summary of a session that ended, as a value and as Markdown, and
how it is kept."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import unicodedata

import attrs
import trio

from ..sessions import SessionState, SessionStoreError
from ._backend import WorkStore
from ._config import WorkConfig
from ._errors import WorkDataError, WorkDirectoryError, WorkError
from ._git import report, resolve
from ._records import (
    FailedRequest,
    GitState,
    Handoff,
    RequestSummary,
    ThreadSummary,
    work_record,
)
from ._reports import Ended

logger = logging.getLogger("triact.work")

_RECENT = 5  # analyses and failed requests named in a handoff
_PROMPT_CHARS = 200
#: Unicode categories of the characters that can break a line: control characters
#: (\n, \r, \v, \f, \x1c-\x1f, \x85, ...) and the line and paragraph separators.
_BREAKING = frozenset({"Cc", "Zl", "Zp"})


def _short(text: str, limit: int = _PROMPT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def build_handoff(final: SessionState, ended_at: float, git: GitState | None) -> Handoff:
    """The handoff of a session whose final state is ``final``. A malformed work record
    (WorkDataError) is left out rather than losing the rest."""
    try:
        checkpoints = work_record(final).checkpoints
    except WorkDataError:
        checkpoints = ()
    failed = [r for r in final.completed_requests if r.status == "failed"]
    return Handoff(
        session_id=final.id,
        working_directory=final.working_directory,
        project=final.project_id,
        topic=final.topic,
        started_at=final.created_at,
        ended_at=ended_at,
        operations=final.metrics.operations,
        errors=final.metrics.errors,
        security_events=len(final.security_events),
        checkpoints=checkpoints,
        threads=tuple(ThreadSummary(t.name, len(t.messages)) for t in final.threads),
        analyses=len(final.analyses),
        recent_prompts=tuple(_short(a.prompt) for a in final.analyses[-_RECENT:]),
        requests=RequestSummary(
            active=len(final.active_requests),
            completed=len(final.completed_requests) - len(failed),
            failed=len(failed),
        ),
        failed_requests=tuple(
            FailedRequest(r.id, r.tool_name, None if r.error is None else _short(r.error))
            for r in failed[-_RECENT:]
        ),
        git=git,
    )


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def _line(text: str) -> str:
    """``text`` kept on its line: line breaks and other control characters shown
    escaped (``\\n``, ``\\x1b``), so that no note, name or file name of a session
    can begin a line (a heading, a list item) of the handoff."""
    return "".join(
        ch if unicodedata.category(ch) not in _BREAKING else ch.encode("unicode_escape").decode()
        for ch in text
    )


def _code(text: str) -> str:
    return "`" + _line(text).replace("`", "'") + "`"


def render_handoff(handoff: Handoff) -> str:
    """The handoff as Markdown (what ``write_handoff`` writes)."""
    h = handoff
    lines = [
        f"# Handoff: {_line(h.project or h.topic or h.working_directory or h.session_id)}",
        "",
        f"- Session: {_code(h.session_id)}",
        f"- Directory: {_code(h.working_directory) if h.working_directory else 'none'}",
        f"- Project: {_line(h.project or 'none')}",
        f"- Started: {_when(h.started_at)}; ended: {_when(h.ended_at)} "
        f"({max(0.0, h.ended_at - h.started_at) / 60:.1f} min)",
        f"- Calls: {h.operations}, of which failed: {h.errors}; "
        f"security events: {h.security_events}",
        "",
        f"## Checkpoints ({len(h.checkpoints)})",
        "",
    ]
    for c in h.checkpoints:
        where = f" on {_line(c.branch)}" if c.branch else ""
        commit = f", committed {_code(c.commit[:12])}" if c.commit else ""
        head = f" at {_code(c.head[:12])}" if c.head and not c.commit else ""
        lines.append(
            f"{c.number}. {_when(c.at)}{where}{head}{commit}: {_line(c.note or '(no note)')} "
            f"({c.dirty_count} uncommitted path(s))"
        )
    if not h.checkpoints:
        lines.append("None.")
    lines += ["", "## Threads", ""]
    lines += [f"- {_line(t.name)}: {t.messages} message(s)" for t in h.threads] or ["None."]
    lines += ["", f"## Analyses ({h.analyses})", ""]
    lines += [f"- {_line(prompt)}" for prompt in h.recent_prompts] or ["None."]
    r = h.requests
    lines += [
        "",
        "## Requests",
        "",
        f"{r.completed} completed, {r.failed} failed, {r.active} still open.",
    ]
    for f in h.failed_requests:
        lines.append(
            f"- {_code(f.id)} ({_line(f.tool_name or 'no tool')}): {_line(f.error or 'no message')}"
        )
    lines += ["", "## Git at the end", ""]
    g = h.git
    if g is None or not g.repository:
        lines.append(_line(g.error) if g is not None and g.error else "Not a git repository.")
    else:
        lines.append(
            f"Branch {_line(g.branch or '(detached)')} at "
            f"{_code(g.head) if g.head else 'no commit'}; "
            f"{g.dirty_count} uncommitted path(s)" + (":" if g.dirty else ".")
        )
        lines += [f"- {_code(path)}" for path in g.dirty]
        if g.dirty_count > len(g.dirty):
            lines.append(f"- ... and {g.dirty_count - len(g.dirty)} more")
    return "\n".join(lines) + "\n"


def write_file(directory: str, name: str, text: str) -> str:
    """Write ``text`` to ``directory/name`` atomically (a temporary file in the same
    directory, then renamed over it: a symlink there is replaced, never followed).
    Returns the path. Touches the disk: run it in a thread."""
    path = os.path.join(directory, name)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return path


async def hand_off(
    final: SessionState, now: float, config: WorkConfig, store: WorkStore, write_file_too: bool
) -> Ended:
    """Build the handoff of a session that has ended, keep it in ``store`` for its
    directory and, with ``write_file_too``, write it there as Markdown. Failures are
    reported in the result, not raised: the session has ended all the same."""
    directory = final.working_directory
    if directory is None:
        handoff = build_handoff(final, now, None)
        nowhere = f"session {final.id!r} has no working directory to write it to"
        return Ended(final, handoff, False, nowhere if write_file_too else None)
    resolved, problem = await resolve(directory, config)
    handoff = build_handoff(final, now, await report(resolved, problem, config))
    file_error = None
    if write_file_too:
        try:
            if resolved is None:
                raise WorkDirectoryError(problem)
            markdown = render_handoff(handoff)
            path = await trio.to_thread.run_sync(
                write_file, resolved, config.handoff_file, markdown
            )
            handoff = attrs.evolve(handoff, file=path)
        except WorkDirectoryError as exc:
            file_error = f"the handoff file was not written: {exc}"
        except OSError as exc:  # its text would name the resolved path
            file_error = f"the handoff file was not written: {exc.strerror or type(exc).__name__}"
            logger.warning("session %r: writing its handoff file: %s", final.id, exc)
    try:
        await store.finish(resolved or directory, final.id, handoff, principal=final.principal)
    except (SessionStoreError, WorkError) as exc:
        logger.warning("session %r: its handoff was not stored: %s", final.id, exc)
        return Ended(final, handoff, False, file_error, f"not stored: {exc}")
    return Ended(final, handoff, True, file_error)
