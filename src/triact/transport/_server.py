"""The MCP server for one byte-stream connection (stdio): reading lines, handing each
message to the protocol core (``_core``), writing answers, and shutting down."""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import attrs
import trio

from ..sessions import SessionManager
from ._core import McpCore
from ._framing import (
    DEFAULT_MAX_LINE_BYTES,
    LineReader,
    LineTooLong,
    PipeReceive,
    pipe_fd,
    send_to_pipe,
)
from ._jsonrpc import (
    INVALID_REQUEST,
    Invalid,
    JsonRpcError,
    Notification,
    Request,
    Response,
    error_line,
    parse_line,
)
from ._prompts import PromptSet
from ._session_tools import SESSION_TOOLS
from ._tools import ToolSet

logger = logging.getLogger("triact.transport")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _count(_: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise ValueError(f"ServerOptions.{attribute.name} must be an int >= 1, got {value!r}")


def _seconds(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (_is_number(value) and value >= 0 and not math.isnan(value)):
        raise ValueError(
            f"ServerOptions.{attribute.name} must be a number of seconds >= 0, got {value!r}"
        )


def _positive(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (_is_number(value) and 0 < value < math.inf):
        raise ValueError(f"ServerOptions.{attribute.name} must be > 0 and finite, got {value!r}")


def _flag(_: Any, attribute: attrs.Attribute[Any], value: bool) -> None:
    if not isinstance(value, bool):
        raise TypeError(
            f"ServerOptions.{attribute.name} must be True or False, got {type(value).__name__}"
        )


@attrs.frozen(kw_only=True)
class ServerOptions:
    """How an :class:`McpServer` serves its connection. Each field is checked when it
    is made: ValueError (TypeError for ``default_session``) naming the field."""

    #: Longest message accepted, newline excluded; longer lines are refused.
    max_line_bytes: int = attrs.field(default=DEFAULT_MAX_LINE_BYTES, validator=_count)
    #: Seconds that calls in flight get to finish after input ends or stop() is called.
    shutdown_grace: float = attrs.field(default=5.0, validator=_seconds)
    #: Tool calls handled at once; beyond, calls are answered with code 'busy'.
    max_in_flight: int = attrs.field(default=10_000, validator=_count)
    #: Let handshake-era calls leave out session_id to use a per-connection session.
    default_session: bool = attrs.field(default=True, validator=_flag)
    #: Output waiting to be written (bytes) past which the server stops reading input
    #: until the client has read enough of it: a client that never reads cannot make
    #: the server hold more than this, plus the answers to one read of input.
    max_output_bytes: int = attrs.field(default=16 * 1024 * 1024, validator=_count)
    #: Seconds a call that asked for progress (a progressToken) runs before its first
    #: notifications/progress, and between the next ones; a quicker call gets none.
    progress_interval: float = attrs.field(default=1.0, validator=_positive)


class McpServer:
    """Serves MCP (both protocol eras) over one connection: the tools of ``tools`` (by
    default :data:`SESSION_TOOLS`), on the sessions of ``manager``, for ``principal``:
    the sessions it creates are its own, and it reaches no other principal's (None, as
    over stdio: an unauthenticated client, who reaches only sessions without one); and
    the prompts of ``prompts`` if given (then it advertises the ``prompts`` capability).

    Guarantees: every request gets exactly one response, except calls cancelled by the
    client before they completed (which get none, and whose changes did not happen);
    only JSON-RPC messages are written; calls for different sessions run concurrently,
    calls for one session reach it in the order they arrived.
    """

    def __init__(
        self,
        manager: SessionManager,
        *,
        tools: ToolSet = SESSION_TOOLS,
        options: ServerOptions | None = None,
        principal: str | None = None,
        prompts: PromptSet | None = None,
    ) -> None:
        self.manager = manager
        self.tools = tools
        #: Who this connection's calls are made as (None: an unauthenticated client).
        self.principal = principal
        self.prompts = prompts
        self.options = options = options or ServerOptions()
        self._out: list[bytes] = []  # lines for the writer, in order
        self._out_bytes = 0  # emitted, not yet written
        self._out_drained: trio.Event | None = None  # set when back under the bound
        self._out_ready: trio.Event | None = None  # set to wake the writer
        self._out_closed = False
        self._out_fd: int | None = None  # the output's pipe, written directly (_flush)
        #: The protocol core, and the one client it serves here.
        self.core = core_for(manager, tools, options, prompts)
        self.peer = self.core.peer(principal=principal)
        #: The tool calls in flight (keyed by request id).
        self.calls = self.core.calls
        self._read_scope = trio.CancelScope()
        self._served = False

    # -- running -------------------------------------------------------------------

    async def serve(self, receive: trio.abc.ReceiveStream, send: trio.abc.SendStream) -> None:
        """Serve until ``receive`` ends or :meth:`stop` is called; then let the calls in
        flight finish within ``shutdown_grace`` seconds (cancelling the rest), write
        what is left to ``send`` and return. Neither stream is closed."""
        if self._served:
            raise RuntimeError("an McpServer serves one connection; make a new one")
        self._served = True
        writer_done = trio.Event()
        self._out_fd = pipe_fd(send)
        self.calls.on_idle = self._flush
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_loop, send, writer_done)
            try:
                async with trio.open_nursery() as calls:
                    self.calls.nursery = calls
                    with self._read_scope:
                        await self._read_loop(receive)
                    await self.core.drain(self.options.shutdown_grace)
                    calls.cancel_scope.cancel()
            finally:
                self.calls.close()
                self._close_output()
                with trio.move_on_after(self.options.shutdown_grace):
                    await writer_done.wait()
                nursery.cancel_scope.cancel()

    def stop(self) -> None:
        """Stop reading; calls in flight get the grace period to finish."""
        self._read_scope.cancel()

    @property
    def output_backlog(self) -> int:
        """Bytes emitted and not yet written."""
        return self._out_bytes

    async def _read_loop(self, receive: trio.abc.ReceiveStream) -> None:
        fd = pipe_fd(receive)
        if fd is not None:
            receive = PipeReceive(fd)
        reader = LineReader(receive, self.options.max_line_bytes)
        while True:
            await self._output_room()
            try:
                lines = await reader.receive_lines()
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                logger.info("input closed: %r", exc)
                return
            if lines is None:
                logger.info("end of input")
                return
            bound = self.options.max_output_bytes
            checked = reader.digits_checked
            for line in lines:
                if self._out_bytes > bound:
                    await self._output_room()
                self._handle_line(line, checked)
            self._flush()  # the answers given at once (errors, lists, refusals)

    async def _output_room(self) -> None:
        """Wait while more than ``max_output_bytes`` wait to be written (backpressure:
        input is read no faster than the client reads the answers)."""
        if self._out_bytes <= self.options.max_output_bytes:
            return
        self._wake_writer()  # what waits is the writer's to write
        logger.info(
            "%d bytes of output wait for the client to read them: reading no input until it does",
            self._out_bytes,
        )
        while self._out_bytes > self.options.max_output_bytes and not self._out_closed:
            self._out_drained = trio.Event()
            await self._out_drained.wait()
        logger.info("the client reads its output again: reading input")

    async def _write_loop(self, send: trio.abc.SendStream, done: trio.Event) -> None:
        """Write what was emitted, every line written so far in one write, until the
        output is closed and nothing is left."""
        fd = self._out_fd
        try:
            while True:
                if not self._out:
                    if self._out_closed:
                        return
                    self._out_ready = trio.Event()
                    await self._out_ready.wait()
                    continue
                batch, self._out = self._out, []
                data = b"".join(batch)
                del batch
                if fd is not None:
                    await send_to_pipe(fd, data)
                else:
                    await send.send_all(data)
                self._written(len(data))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            logger.warning("output closed (%r): the client is gone; stopping", exc)
            self.stop()
        finally:
            self._close_output()
            done.set()

    def _written(self, size: int) -> None:
        """``size`` bytes of the output were written."""
        self._out_bytes -= size
        drained = self._out_drained
        if drained is not None and self._out_bytes <= self.options.max_output_bytes:
            self._out_drained = None
            drained.set()

    def answer(self, line: bytes) -> None:
        """Queue ``line`` for output, to be written by :meth:`_flush`: the reading task
        and the call workers, which answer, flush when they are done with a burst."""
        if self._out_closed:
            logger.debug("dropped output after shutdown: %.200r", line)
            return
        self._out.append(line)
        self._out_bytes += len(line)

    def _emit(self, line: bytes) -> None:
        """Queue ``line`` for output and have the writer write it."""
        self.answer(line)
        self._wake_writer()

    def _flush(self) -> None:
        """Write the output queued so far, now, if the writer is idle (it has nothing
        in hand: the order is kept) and the output is a pipe: the pass that made a
        burst's answers writes them in one write, without a pass of the writer's task.
        What the pipe does not take at once, and any other case, is left to the
        writer, woken. Never raises (the writer meets a broken pipe's error)."""
        out = self._out
        if not out:
            return
        fd = self._out_fd
        if fd is None or self._out_ready is None:  # not a pipe, or the writer is at work
            self._wake_writer()
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        try:
            written = os.write(fd, data)
        except BlockingIOError:
            written = 0
        except OSError:
            self._wake_writer()
            return
        if written == len(data):
            out.clear()
        else:
            self._out = [data[written:]]
            self._wake_writer()
        self._written(written)

    def _close_output(self) -> None:
        """Nothing more will be written; the writer writes what is left and returns."""
        self._out_closed = True
        self._wake_writer()
        drained = self._out_drained
        if drained is not None:  # a reader waiting for room: there will be none
            self._out_drained = None
            drained.set()

    def _wake_writer(self) -> None:
        ready = self._out_ready
        if ready is not None:
            self._out_ready = None
            ready.set()

    # The sink of every request (``_calls.Sink``): all goes to the output, in order;
    # a cancelled call's request gets nothing. Answers (above) wait for a flush;
    # notifications, sent by other tasks too (progress), wake the writer.
    notify = _emit

    def dropped(self) -> None:
        pass

    def connection_gone(self) -> None:
        pass  # (a stdio connection is its own session: it does not end under a call)

    # -- messages ------------------------------------------------------------------

    def _handle_line(self, line: bytes | LineTooLong, digits_checked: bool = False) -> None:
        if type(line) is LineTooLong:
            self._emit(
                error_line(
                    None,
                    JsonRpcError(
                        INVALID_REQUEST,
                        f"Invalid Request: message longer than {line.limit} bytes; it was "
                        "discarded (see --max-line-bytes)",
                    ),
                )
            )
            return
        assert type(line) is bytes
        message = parse_line(line, digits_checked)
        kind = type(message)
        if kind is Request:
            request_id = message.id  # type: ignore[union-attr]
            try:
                self.core.request(self.peer, request_id, message, self)  # type: ignore[arg-type]
            except JsonRpcError as exc:
                self._emit(error_line(request_id, exc))
        elif kind is Notification:
            self.core.notification(self.peer, message)  # type: ignore[arg-type]
        elif kind is Invalid:
            assert isinstance(message, Invalid)
            logger.info("invalid message: %s", message.error.message)
            self._emit(error_line(message.id, message.error))
        else:
            assert isinstance(message, Response)
            # (%.200r: the id is the client's, of any size, and this is logged by default)
            logger.warning(
                "ignored a response to request %.200r: this server sends none", message.id
            )


def core_for(
    manager: SessionManager,
    tools: ToolSet,
    options: ServerOptions,
    prompts: PromptSet | None = None,
) -> McpCore:
    """The protocol core serving ``tools`` (and ``prompts``) as ``options`` say."""
    return McpCore(
        manager,
        tools,
        max_in_flight=options.max_in_flight,
        default_session=options.default_session,
        max_line_bytes=options.max_line_bytes,
        progress_interval=options.progress_interval,
        prompts=prompts,
    )
