"""The stdio transport: MCP on this process's stdin and stdout."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import trio

from ..sessions import SessionManager
from ._prompts import PromptSet
from ._server import McpServer, ServerOptions
from ._session_tools import SESSION_TOOLS
from ._tools import ToolSet

logger = logging.getLogger("triact.transport")


async def serve_stdio(
    manager: SessionManager,
    tools: ToolSet = SESSION_TOOLS,
    options: ServerOptions | None = None,
    *,
    handle_signals: bool = True,
    prompts: PromptSet | None = None,
) -> None:
    """Serve the tools of ``tools`` over MCP on stdin/stdout (newline-delimited
    JSON-RPC) until stdin ends.

    With ``handle_signals``, the first SIGTERM or SIGINT stops reading and lets the
    calls in flight finish within the grace period, like end of input; a second one
    cancels them at once. Returns normally in every case; nothing but JSON-RPC is
    written to stdout: while it serves, fd 1 and ``sys.stdout`` are stderr, so that
    a stray ``print`` in code it runs goes to the log, not into the protocol. Unix
    only (the streams are :class:`trio.lowlevel.FdStream`).
    """
    server = McpServer(manager, tools=tools, options=options, prompts=prompts)
    # Duplicates, so that closing the streams leaves fds 0 and 1 to the interpreter.
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    with _stdout_kept_for_protocol() as protocol_fd:
        stdout = trio.lowlevel.FdStream(protocol_fd)
        async with stdin, stdout, trio.open_nursery() as nursery:
            if handle_signals:
                await nursery.start(_stop_on_signals, server, nursery.cancel_scope)
            await server.serve(stdin, stdout)
            nursery.cancel_scope.cancel()


@contextmanager
def _stdout_kept_for_protocol() -> Iterator[int]:
    """A new fd on the real stdout, for protocol lines only; meanwhile fd 1 and
    ``sys.stdout`` are stderr, so that a stray ``print`` (or a child process that
    inherits fd 1) cannot write into the protocol. Both are restored on exit."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    saved_fd = os.dup(1)
    saved_stdout = sys.stdout
    try:
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        yield protocol_fd
    finally:
        sys.stdout = saved_stdout
        try:
            sys.stderr.flush()
        finally:
            os.dup2(saved_fd, 1)
            os.close(saved_fd)


async def _stop_on_signals(
    server: McpServer,
    abort: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            logger.info("%s: finishing the calls in flight, then exiting", signal.strsignal(signum))
            server.stop()
            break
        async for signum in signals:
            logger.warning("%s again: cancelling the calls in flight", signal.strsignal(signum))
            abort.cancel()
            return
