"""Newline-delimited framing with a bound on the line size."""

from __future__ import annotations

import trio

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

    async def receive_lines(self) -> list[bytes | LineTooLong] | None:
        """The lines completed by the next read (maybe none), or None at end of stream."""
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
        if partial:
            partial += memoryview(data)[start:newline]
            first = bytes(partial)
            partial.clear()
        else:
            first = data[start:newline]
        self._add(first, lines)
        parts = data[newline + 1 :].split(b"\n")
        tail = parts.pop()
        for part in parts:
            self._add(part, lines)
        self._keep(tail, 0, lines)
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
