"""The stdio transport: MCP on this process's stdin and stdout."""

from __future__ import annotations

import logging
import os
import signal
import sys

import trio

from ..sessions import SessionManager
from ._server import McpServer, ServerOptions

logger = logging.getLogger("triact.transport")


async def serve_stdio(
    manager: SessionManager,
    options: ServerOptions | None = None,
    *,
    handle_signals: bool = True,
) -> None:
    """Serve MCP on stdin/stdout (newline-delimited JSON-RPC) until stdin ends.

    With ``handle_signals``, the first SIGTERM or SIGINT stops reading and lets the
    calls in flight finish within the grace period, like end of input; a second one
    cancels them at once. Returns normally in every case; nothing but JSON-RPC is
    written to stdout. Unix only (the streams are :class:`trio.lowlevel.FdStream`).
    """
    server = McpServer(manager, options)
    # Duplicates, so that closing the streams leaves fds 0 and 1 to the interpreter.
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    stdout = trio.lowlevel.FdStream(os.dup(sys.stdout.fileno()))
    async with stdin, stdout, trio.open_nursery() as nursery:
        if handle_signals:
            await nursery.start(_stop_on_signals, server, nursery.cancel_scope)
        await server.serve(stdin, stdout)
        nursery.cancel_scope.cancel()


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
