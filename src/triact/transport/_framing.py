"""Newline-delimited framing with a bound on the line size."""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

import trio

from ._jsonrpc import no_long_digits

#: Default bound on one message, newline excluded.
DEFAULT_MAX_LINE_BYTES = 4 * 1024 * 1024
_CHUNK = 64 * 1024


class LineTooLong:
    """Stands for a line longer than the bound; its bytes were discarded."""

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        self.limit = limit


class LineReader:
    """Splits a byte stream into lines of at most ``max_line_bytes`` bytes.

    :meth:`receive_lines` returns every complete line a read brought (blank ones
    dropped, a trailing ``\\r`` left for the JSON parser to ignore as whitespace). A
    line over the bound is returned as one :class:`LineTooLong` as soon as it passes
    the bound; the rest of it is skipped up to its newline, so the next line is read
    normally. At end of stream a last line without a newline is returned too.

    After each read, :attr:`digits_checked` is True if no line it returned has 19
    digits in a row (found for the whole read at once: see ``parse_line``).
    """

    def __init__(self, stream: trio.abc.ReceiveStream, max_line_bytes: int) -> None:
        if max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be >= 1, got {max_line_bytes}")
        self._stream = stream
        self._max = max_line_bytes
        # The start of the current line. Appended to, never rebuilt: a line sent in
        # many small pieces costs time in proportion to its length.
        self._partial = bytearray()
        self._discarding = False
        self._eof = False
        self.digits_checked = False

    async def receive_lines(self) -> list[bytes | LineTooLong] | None:
        """The lines completed by the next read (maybe none), or None at end of stream."""
        self.digits_checked = False
        if self._eof:
            return None
        data = await self._stream.receive_some(_CHUNK)
        if not data:
            self._eof = True
            rest = bytes(self._partial)
            self._partial.clear()
            return [rest] if rest.strip() else None
        return self._split(bytes(data))  # bytes-like: maybe a bytearray

    def _split(self, data: bytes) -> list[bytes | LineTooLong]:
        lines: list[bytes | LineTooLong] = []
        start = 0
        if self._discarding:
            start = data.find(b"\n") + 1
            if not start:
                return lines
            self._discarding = False
        newline = data.find(b"\n", start)
        if newline < 0:
            self._keep(data, start, lines)
            return lines
        partial = self._partial
        # The lines that lie wholly in ``data`` are checked with it; one begun in an
        # earlier read, on its own.
        checked = no_long_digits(data)
        if partial:
            partial += memoryview(data)[start:newline]
            first = bytes(partial)
            partial.clear()
            checked = checked and no_long_digits(first)
        else:
            first = data[start:newline]
        self._add(first, lines)
        parts = data[newline + 1 :].split(b"\n")
        tail = parts.pop()
        limit = self._max
        for part in parts:  # _add, written out: every line of a burst passes here
            if len(part) > limit:
                lines.append(LineTooLong(limit))
            elif part and not part.isspace():
                lines.append(part)
        self._keep(tail, 0, lines)
        self.digits_checked = checked
        return lines

    def _add(self, line: bytes, lines: list[bytes | LineTooLong]) -> None:
        if len(line) > self._max:
            lines.append(LineTooLong(self._max))
        elif line and not line.isspace():
            lines.append(line)

    def _keep(self, data: bytes, start: int, lines: list[bytes | LineTooLong]) -> None:
        """Keep ``data[start:]``, the start of a line; past the bound, report the line
        and skip the rest of it."""
        partial = self._partial
        if len(partial) + len(data) - start > self._max:
            lines.append(LineTooLong(self._max))
            partial.clear()
            self._discarding = True
        else:
            partial += memoryview(data)[start:]


# -- pipes, read and written directly ----------------------------------------------
# trio.lowlevel.FdStream checkpoints before every read and write, then tries the
# syscall: a server that reads after handing out a batch of calls takes a scheduler
# pass for the checkpoint and a read that fails (EAGAIN) before it waits; its writer
# takes a pass for the checkpoint before every write. The two below wait for
# readiness first (one pass, no failed read), and write at once (the pass that woke
# the writer writes). Only what the server needs: one task reads, one writes.


def pipe_fd(stream: Any) -> int | None:
    """The fd of a :class:`trio.lowlevel.FdStream` (Unix) on a pipe or a socket, else
    None. A regular file or a device (``triact serve < requests.jsonl``, stdin from
    /dev/null) cannot be waited on (epoll refuses it) and never has to be: its
    FdStream, which reads and writes first, serves it."""
    fd_stream = getattr(trio.lowlevel, "FdStream", None)
    if fd_stream is not None and type(stream) is fd_stream:
        fileno: int = stream.fileno()
        mode = os.fstat(fileno).st_mode
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            return fileno
    return None


class PipeReceive(trio.abc.ReceiveStream):
    """The receiving side of a non-blocking pipe ``fd`` (an FdStream's, which keeps it)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The next bytes (at most ``max_bytes``); b"" at end of input. Always a
        checkpoint: it waits for readiness before reading."""
        size = _CHUNK if max_bytes is None else max_bytes
        while True:
            await trio.lowlevel.wait_readable(self._fd)
            try:
                return os.read(self._fd, size)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise _stream_error(exc) from exc

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def send_to_pipe(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the non-blocking pipe ``fd``, waiting for room only if
    it is full (not a checkpoint when the pipe takes it all at once)."""
    with memoryview(data) as view:
        sent = 0
        length = len(view)
        while sent < length:
            try:
                sent += os.write(fd, view[sent:])
            except BlockingIOError:
                await trio.lowlevel.wait_writable(fd)
            except OSError as exc:
                raise _stream_error(exc) from exc


def _stream_error(exc: OSError) -> Exception:
    if exc.errno == errno.EBADF:
        return trio.ClosedResourceError("the pipe was closed")
    return trio.BrokenResourceError(f"the pipe failed: {exc.strerror}")
